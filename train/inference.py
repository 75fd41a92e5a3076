"""Inference: a trained CoarseNet from its checkpoint, and the reconstruction of a batch of images.

``load_coarse(path)`` (a run's ``.pt`` or exported ``.safetensors``) rebuilds the :class:`train.coarse_net.IterativeCoarseNet` a checkpoint
describes (its ``task_state``) and loads its weights; ``reconstruct(net, image, intrinsics)``
runs it and returns the physical parameters after each iteration, the final mesh in model and
camera space and its rendered depth (:class:`Reconstruction`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path
from typing import Any

import torch

from morphable_model import load_model
from synth import camera

from . import depth_render
from .checkpoint import CheckpointError, load_inference_checkpoint
from .coarse_net import IterativeCoarseNet, refuse_oracle_input
from .params import CoarseParams, decode_params

__all__ = ["Reconstruction", "reconstruct", "load_coarse", "load_coarse_checkpoint", "load_checkpoint_and_model", "SHIPPED_CHECKPOINT",
           "shipped_checkpoint"]

SHIPPED_CHECKPOINT = "weights/coarse.safetensors"
"""The default CoarseNet weights, package data of ``train`` (``train/weights/coarse.safetensors``):
what ``train-cli evaluate`` (and later ``reconstruct``) load when no ``--checkpoint`` is given."""


def shipped_checkpoint(package_dir: str | os.PathLike | None = None) -> Path:
    """Path of the shipped CoarseNet checkpoint, :data:`SHIPPED_CHECKPOINT` under ``package_dir``
    (default: the installed ``train`` package); ``CheckpointError`` in one line when there is none."""
    root = Path(str(importlib.resources.files("train"))) if package_dir is None else Path(package_dir)
    path = root / SHIPPED_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no --checkpoint given and this installation has no shipped checkpoint ({path} does "
                              "not exist); pass --checkpoint CKPT (a run's .pt or an exported .safetensors)")
    return path


@dataclasses.dataclass
class Reconstruction:
    """Output of :func:`reconstruct` for a batch of B images (all torch, on the model's device)."""

    params: list[CoarseParams]
    """physical parameters after each iteration (``len == iters``)."""
    vertices: torch.Tensor
    """(B, N, 3) model-space vertices (mm) of the final estimate."""
    vertices_cam: torch.Tensor
    """(B, N, 3) camera-frame vertices of the final estimate."""
    depth: torch.Tensor
    """(B, H, W) rendered depth (mm along the optical axis, 0 off the face), in the input's view
    or the ``depth_view`` asked for."""
    mask: torch.Tensor
    """(B, H, W) bool, where the face covers the image."""


@torch.no_grad()
def reconstruct(model: IterativeCoarseNet, image: torch.Tensor, intrinsics: torch.Tensor,
                iters: int | None = None,
                depth_view: tuple[torch.Tensor, tuple[int, int]] | None = None,
                fit_points: torch.Tensor | None = None) -> Reconstruction:
    """Images ``(B, 3, H, W)`` in [0, 1] (at the network's input size, background included) with
    their intrinsics ``(B, 3, 3)`` (at that size) -> parameters per iteration, vertices and a
    depth map.

    ``depth_view = (intrinsics (B, 3, 3), (H', W'))`` renders the depth map in that view instead
    of the input's (e.g. the same crop at another size: one rasterization, at the size needed).
    ``fit_points`` ``(B, 68, 2)``, input pixels: landmarks the first iteration's fit uses instead of
    the landmark head's (rows of NaN: the head's; :meth:`IterativeCoarseNet.forward`)."""
    was_training = model.training
    model.eval()
    try:
        ests = model(image, intrinsics, iters=iters, fit_points=fit_points)
    finally:
        model.train(was_training)
    size = tuple(image.shape[-2:])
    params = [decode_params(e, model.layout, model.stats, intrinsics.float(), size, model.render.projection) for e in ests]
    last = params[-1]
    verts = model.render.vertices(last.alpha_id, last.alpha_exp)
    cam = camera.to_camera(verts, camera.rotation_matrix(last.pose), last.translation)  # (B, N, 3)
    k_view, size_view = (intrinsics, size) if depth_view is None else depth_view
    frags = depth_render.rasterize(cam, model.render.triangles, k_view.float(), size_view,
                                   projection=model.render.projection)
    return Reconstruction(params=params, vertices=verts, vertices_cam=cam, depth=frags.depth, mask=frags.mask)


def load_checkpoint_and_model(path: str | os.PathLike, model=None, model_path: str | None = None
                              ) -> tuple[dict[str, Any], Any]:
    """A CoarseNet checkpoint (a run's ``.pt``, safe loader, or exported ``.safetensors``:
    :func:`train.checkpoint.load_inference_checkpoint`) and the morphable model it was trained
    with: ``model`` when given, else ``morphable_model.load_model(model_path or the checkpoint's
    config['model'])``. ``CheckpointError`` naming the file when the model's fingerprint is not
    the checkpoint's, or when the network was trained with an oracle input (the ground-truth mask
    multiplied into the image, :func:`train.coarse_net.refuse_oracle_input`)."""
    ck = load_inference_checkpoint(path, task="coarse")
    refuse_oracle_input(ck.get("task_state") or {}, f"checkpoint {path}")  # before loading a model for nothing
    if model is None:
        model = load_model(model_path if model_path is not None else ck["config"].get("model"))
    if not model.matches(ck["model_fingerprint"], ck.get("model_sketch"), f"checkpoint {path}"):
        raise CheckpointError(f"checkpoint {path} was trained with morphable model {ck['model_fingerprint'][:12]}..., "
                              f"the model given is {model.fingerprint[:12]}...")
    return ck, model


def load_coarse(path: str | os.PathLike, model=None, device: str | torch.device = "cpu", *,
                model_path: str | None = None, flip_test: bool = True) -> IterativeCoarseNet:
    """An :class:`IterativeCoarseNet` loaded from a training checkpoint (``.pt``, safe loader) or
    exported weights (``.safetensors``), in eval mode, ready for :func:`reconstruct`. ``model``
    defaults to ``morphable_model.load_model(model_path or config['model'])``; its fingerprint must
    match the checkpoint's. ``flip_test``: the landmark head also reads the mirrored crop
    (:meth:`IterativeCoarseNet.mirrored_points`; networks trained with ``--landmark-init``)."""
    return load_coarse_checkpoint(path, model, device, model_path=model_path, flip_test=flip_test)[0]


def load_coarse_checkpoint(path: str | os.PathLike, model=None, device: str | torch.device = "cpu", *,
                           model_path: str | None = None, flip_test: bool = True
                           ) -> tuple[IterativeCoarseNet, dict[str, Any], Any]:
    """:func:`load_coarse` that also returns the checkpoint dict (its ``config``, ``step``) and the
    morphable model: ``(network, checkpoint, model)``."""
    ck, model = load_checkpoint_and_model(path, model, model_path)
    net = IterativeCoarseNet.from_hyperparameters(model, ck["task_state"], f"checkpoint {path}")
    net.load_state_dict(ck["model"])
    net.flip_test = flip_test
    return net.to(device).eval(), ck, model
