"""A Basel-style 3D morphable model: frozen arrays, BFM file readers/writers, a built-in model.

Main entry points: :class:`MorphableModel`, :func:`load_model` (``None`` = built-in model,
``.h5`` = BFM2017/2019, ``.mat`` = BFM2009), :func:`vertex_normals` (numpy or torch). The torch
view of a model is ``morphable_model.torch_model.MorphableModelModule(model)`` (the only module
that imports torch at import time; it is not imported here). See docs/model.md and docs/DESIGN.md.
"""

from .geometry import face_normals, vertex_normals
from .io_bfm import ModelFileError, load_bfm2009, load_bfm2017, save_bfm2017
from .load import load_model
from .model import MorphableModel, ModelSample

__all__ = [
    "MorphableModel",
    "ModelSample",
    "ModelFileError",
    "load_model",
    "load_bfm2017",
    "load_bfm2009",
    "save_bfm2017",
    "vertex_normals",
    "face_normals",
]
