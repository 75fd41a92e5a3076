"""``load_model``: the one entry point that turns a path (or nothing) into a :class:`MorphableModel`.

It dispatches to the file readers of :mod:`morphable_model.io_bfm` and to the built-in model of
:mod:`morphable_model.builtin`; neither of those imports this module, so there is no cycle.
"""

from __future__ import annotations

import os

from .builtin import builtin_model
from .io_bfm import HDF5_MAGIC, ModelFileError, existing_file, load_bfm2009, load_bfm2017, read_landmark_indices
from .model import MorphableModel

__all__ = ["load_model"]


def load_model(path: str | os.PathLike | None = None, landmarks=None) -> MorphableModel:
    """Load a morphable model.

    ``None`` -> the built-in model (:func:`morphable_model.builtin.builtin_model`);
    ``.h5``/``.hdf5`` (or any HDF5 file) -> :func:`load_bfm2017`; ``.mat`` -> :func:`load_bfm2009`.
    ``landmarks`` (a ``(68,)`` vertex-index array, or a ``.npy`` / ``.txt`` file of them)
    overrides the file's landmarks. Problems with a file raise :class:`ModelFileError`.
    """
    if path is None:
        model = builtin_model()
        if landmarks is not None:
            model = model.replace(landmarks=read_landmark_indices(landmarks, model.n_vertices))
        return model
    p = existing_file(path)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return load_bfm2017(p, landmarks=landmarks)
    if suffix == ".mat":
        return load_bfm2009(p, landmarks=landmarks)
    with open(p, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return load_bfm2017(p, landmarks=landmarks)
    raise ModelFileError(
        f"{p}: unknown model format (expected a .h5/.hdf5 BFM2017/2019 file or a .mat BFM2009 file)"
    )
