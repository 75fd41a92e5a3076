"""detailface training stage: CoarseNet (iterative parameter regression), its pure-torch
differentiable rasterizer (:mod:`train.depth_render`), data, losses, trainer and CLI.

Kept import-free on purpose: ``import train`` must stay cheap; import the submodules you need.
"""
