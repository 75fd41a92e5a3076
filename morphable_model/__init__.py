"""A Basel-style 3D morphable model: frozen arrays, BFM file readers/writers, a built-in model.

Main entry points: :class:`MorphableModel`, :func:`load_model` (``None`` = built-in model,
``.h5`` = BFM2017/2019, ``.mat`` = BFM2009), :func:`vertex_normals`. See docs/DESIGN.md.
"""

from .geometry import face_normals, vertex_normals
from .io_bfm import ModelFileError, load_bfm2009, load_bfm2017, load_model, save_bfm2017
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
