"""morphable_model.load.load_model: dispatch on the path (suffix, then the HDF5 magic bytes)."""

from __future__ import annotations

import numpy as np
import pytest

from morphable_model import ModelFileError, load, load_model


def test_load_model_dispatch(tiny_model, tmp_model_h5, tmp_path, monkeypatch):
    odd = tmp_path / "model.bin"
    odd.write_bytes(tmp_model_h5.read_bytes())
    assert load_model(odd).fingerprint == tiny_model.fingerprint  # HDF5 sniffed from the magic bytes
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(ModelFileError, match="unknown model format"):
        load_model(tmp_path / "model.obj")
    # None -> morphable_model.builtin.builtin_model()
    monkeypatch.setattr(load, "builtin_model", lambda cache_dir=None: tiny_model)
    assert load_model() is tiny_model
    assert load_model(landmarks=np.arange(68)).landmarks.tolist() == list(range(68))


def test_missing_file_and_landmark_override(tiny_model, tmp_model_h5, tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "absent.h5")
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)
    lm = np.arange(68)[::-1].copy()
    assert load_model(tmp_model_h5, landmarks=lm).landmarks.tolist() == lm.tolist()
