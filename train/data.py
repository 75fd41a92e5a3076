"""Training data: :class:`ShardDataset` over a directory of synth HDF5 shards, samplers, loaders.

* Random access over all samples of ``DIR/shard-*.h5`` (sorted). Each shard is opened once at
  construction to read its length and attributes (then closed); during training every process
  (DataLoader worker, DDP rank) opens its own reader lazily on first use (h5py handles must not
  cross a fork).
* The shards' ``model_fingerprint`` attribute must equal the fingerprint of the morphable model in
  use (given as the model, shards written on another CPU also pass by their ``model_sketch``:
  :meth:`morphable_model.MorphableModel.matches`); a mismatch, an unreadable/corrupt file, or a
  sample that fails to decode raises :class:`ShardError` naming the file (and the sample).
* Samples come out as tensors at the requested input ``size`` (images resized with
  antialiasing, intrinsics and landmarks scaled to match; images stay uint8 until
  :func:`image_to_float` on the device); optional augmentations are colour jitter (drawn in the
  worker, applied on the device), crop jitter (an integer pixel shift of the image and mask with the intrinsics'
  principal point and the landmarks shifted alike, so the geometry stays exact) and photo-like
  degradations (:class:`train.augment.PhotoAugment`: white balance, blur, sensor noise, gamma,
  contrast, JPEG; applied in the worker to the uint8 sRGB image at the input size).
* Augmentation randomness is a pure function of ``(seed, epoch, index)`` (shift and colour jitter
  from ``default_rng([seed, 12, epoch, index])``, the photo degradations from
  ``default_rng([seed, 13, epoch, index])``), and batches are a pure
  function of ``(seed, step)`` (:class:`StepBatchSampler`), so a resumed run sees exactly the
  batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from morphable_model.model import MorphableModel, fingerprint_of, model_matches

from .augment import PhotoAugment

__all__ = [
    "ShardError",
    "Augment",
    "ShardDataset",
    "StepBatchSampler",
    "rank_indices",
    "make_train_loader",
    "make_eval_loader",
    "PARAM_KEYS",
    "SAMPLE_KEYS",
    "image_to_float",
    "PhotoDataset",
    "DETAIL_KEYS",
    "DetailShardDataset",
    "EpochIndexed",
]

log = logging.getLogger(__name__)

PARAM_KEYS = ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation")
# the decoded keys a sample is read with (ShardReader.read(i, keys=...) reads only what they need)
SAMPLE_KEYS = ("image", "mask", "landmarks", "landmarks_visible", "intrinsics") + PARAM_KEYS + ("index",)


class ShardError(ValueError):
    """A shard is missing, corrupt, or was made for another morphable model."""


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentations (0 = off); the fields are the job config's of the same names
    (:meth:`from_config`), whose defaults they take."""

    color_jitter: float
    """per-channel gain, brightness and contrast each drawn from U(1 - c, 1 + c)."""
    crop_jitter: float
    """shift the image by up to this fraction of its size in x and y (principal point follows)."""
    photo: PhotoAugment | None
    """photo-like degradations of the image (None = off)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"--color-jitter must be in [0, 1), got {self.color_jitter}")
        if not 0.0 <= self.crop_jitter <= 0.25:
            raise ValueError(f"--crop-jitter must be in [0, 0.25], got {self.crop_jitter}")

    @property
    def active(self) -> bool:
        return self.color_jitter > 0 or self.crop_jitter > 0 or self.photo is not None

    @classmethod
    def from_config(cls, config: Any) -> "Augment":
        """The augmentations of a job config (fields ``color_jitter``, ``crop_jitter``, and
        ``photo_aug`` / ``photo_*`` for :meth:`train.augment.PhotoAugment.from_config`)."""
        return cls(color_jitter=config.color_jitter, crop_jitter=config.crop_jitter,
                   photo=PhotoAugment.from_config(config))


def _close(reader) -> None:
    close = getattr(reader, "close", None)
    if callable(close):
        close()


class ShardDataset(torch.utils.data.Dataset):
    """All samples of the shards in ``root`` (see the module docstring).

    Samples are read with ``synth.shards.ShardReader.read(i, keys=SAMPLE_KEYS)``: two chunk reads
    (the image and the mask; in layout-2 shards the quantised depth, whose ``q > 0`` is the mask) per sample, the small
    per-sample arrays from the reader's in-memory columns; the maps CoarseNet does not use are not read.

    Items are ``ds[i]`` (never augmented) or ``ds[(i, epoch)]`` (augmented when configured, the
    epoch and index seeding the draws) and return a dict of tensors: ``image (3, S, S)`` uint8,
    ``color (5,)`` the colour jitter to apply with :func:`image_to_float` (ones = none),
    ``mask (S, S)`` bool, ``landmarks (68, 2)`` pixels, ``landmarks_visible (68,)`` bool, ``intrinsics (3, 3)`` (at size S),
    ``alpha_id``, ``alpha_exp``, ``beta``, ``sh (9, 3)``, ``pose (3,)``, ``translation (3,)``
    float32, ``index`` int64 (global sample index).
    """

    sample_keys = SAMPLE_KEYS
    """the decoded keys each sample is read with."""

    def __init__(self, root: str | os.PathLike, fingerprint: "MorphableModel | str | None" = None,
                 size: int | None = None, augment: Augment | None = None, seed: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ShardError(f"shard directory {self.root} does not exist")
        self.paths = sorted(str(p) for p in self.root.glob("shard-*.h5"))
        if not self.paths:
            raise ShardError(f"shard directory {self.root} holds no shard-*.h5 files")
        self.augment = augment or Augment(color_jitter=0.0, crop_jitter=0.0, photo=None)  # None: no augmentation
        self.seed = int(seed)
        lengths, self.attrs = [], []
        for path in self.paths:
            reader = self._open(path)
            try:
                n, attrs = len(reader), dict(reader.attrs)
            except Exception as e:
                raise ShardError(f"shard {path} is unreadable: {type(e).__name__}: {e}") from e
            finally:
                _close(reader)
            got = attrs.get("model_fingerprint")
            sketch = attrs.get("model_sketch")
            if fingerprint is not None and not model_matches(fingerprint, got, sketch, f"shard {path}"):
                got = got.decode() if isinstance(got, bytes) else got
                raise ShardError(
                    f"shard {path} was made with morphable model {str(got)[:12]}..., the model in use is "
                    f"{fingerprint_of(fingerprint)[:12]}... (pass the generator's model with --model)"
                )
            lengths.append(int(n))
            self.attrs.append(attrs)
        self.native_size = self._common_attr("size", int)
        self.projection = self._common_attr("projection", str)
        self.size = int(size) if size else self.native_size
        # a string, not the model: DataLoader workers pickle the dataset
        self.fingerprint = None if fingerprint is None else fingerprint_of(fingerprint)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._readers: dict[int, Any] = {}
        self._pid = os.getpid()

    def _open(self, path: str):
        from synth.shards import ShardReader

        try:
            return ShardReader(path)
        except Exception as e:
            raise ShardError(f"shard {path} is unreadable: {type(e).__name__}: {e}") from e

    def _common_attr(self, name: str, cast: type):
        values = {cast(a[name].decode() if isinstance(a.get(name), bytes) else a[name]) for a in self.attrs if name in a}
        if len(values) != 1:
            raise ShardError(f"shards in {self.root} must share one '{name}' attribute, got {sorted(map(str, values)) or 'none'}")
        return values.pop()

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Global position ``i`` -> (shard number, position in that shard)."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range [0, {len(self)})")
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return k, int(i - self.offsets[k])

    def shard_ranges(self) -> list[range]:
        """Global positions held by each shard."""
        return [range(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _reader(self, k: int):
        if os.getpid() != self._pid:  # forked into a worker: never reuse the parent's handles
            self._readers, self._pid = {}, os.getpid()
        if k not in self._readers:
            self._readers[k] = self._open(self.paths[k])
        return self._readers[k]

    def read_raw(self, i: int) -> dict[str, np.ndarray]:
        """The decoded sample at global position ``i`` (the keys of :attr:`sample_keys`)."""
        k, j = self.locate(i)
        try:
            return self._reader(k).read(j, keys=self.sample_keys)
        except ShardError:
            raise
        except Exception as e:
            raise ShardError(f"shard {self.paths[k]}: sample {j} cannot be read: {type(e).__name__}: {e}") from e

    def read_many(self, positions: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """:meth:`read_raw` of each global position, read together across shards
        (:func:`synth.shards.read_samples`: one model evaluation per ``GEOMETRY_BATCH`` samples when layout-3 maps
        are read). A failure is reported as :meth:`read_raw` reports it, naming the sample."""
        from synth.shards import read_samples

        requests = []
        for i in positions:
            k, j = self.locate(int(i))
            requests.append((self._reader(k), j))
        try:
            return read_samples(requests, self.sample_keys)
        except Exception as e:  # read one by one: the error names the sample that fails
            log.warning("%s: a batch of %d samples failed to read together (%s: %s); reading them one by one",
                        self.root, len(requests), type(e).__name__, e)
            return [self.read_raw(int(i)) for i in positions]

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        return self._item(item, self.read_raw(int(item[0] if isinstance(item, tuple) else item)))

    def __getitems__(self, items: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        """The items of a batch (what ``DataLoader`` asks for): as ``[ds[x] for x in items]``, the
        samples read together (:meth:`read_many`)."""
        raws = self.read_many([int(x[0] if isinstance(x, tuple) else x) for x in items])
        return [self._item(x, raw) for x, raw in zip(items, raws)]

    def _item(self, item, raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if isinstance(item, tuple):  # training: (index, epoch) seeds the augmentation
            i, epoch = int(item[0]), int(item[1])
            return self.convert(raw, np.random.default_rng([self.seed, 12, epoch, i]),
                                np.random.default_rng([self.seed, 13, epoch, i]))
        return self.convert(raw, None)  # plain index: never augmented

    def convert(self, raw: dict[str, np.ndarray], rng: np.random.Generator | None = None,
                photo_rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Decoded sample -> training tensors at ``self.size`` (augmented when configured: shift and
        colour jitter from ``rng``, photo degradations from ``photo_rng``).

        The image stays uint8 (4x less to move between processes) and the colour jitter is only
        *drawn* here (``color``); :func:`image_to_float` applies it to the batch on the device.
        """
        image = torch.from_numpy(np.ascontiguousarray(raw["image"])).permute(2, 0, 1)  # (3, S0, S0) uint8
        mask = torch.from_numpy(np.asarray(raw["mask"], bool).copy())  # (S0, S0)
        k = np.array(raw["intrinsics"], np.float64)
        lm = np.array(raw["landmarks"], np.float64)  # (68, 2)
        aug = self.augment
        if rng is not None and aug.crop_jitter > 0:
            m = int(round(aug.crop_jitter * image.shape[-1]))
            dx, dy = (int(v) for v in rng.integers(-m, m + 1, 2))
            image, mask = _shift(image, dx, dy), _shift(mask[None], dx, dy)[0]
            k[0, 2] += dx
            k[1, 2] += dy
            lm += (dx, dy)
        s0 = image.shape[-1]
        if self.size != s0:
            image = F.interpolate(image[None].float(), size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)[0].round_().clamp_(0, 255).to(torch.uint8)
            mask = F.interpolate(mask[None, None].float(), size=(self.size, self.size), mode="bilinear",
                                 align_corners=False, antialias=True)[0, 0] >= 0.5
            scale = self.size / s0  # pixel centres j + 0.5 scale exactly with the continuous coordinates
            k[:2] *= scale
            lm *= scale
        if photo_rng is not None and aug.photo is not None:  # on the uint8 sRGB image at the input size
            degraded = aug.photo(image.permute(1, 2, 0).numpy(), photo_rng)  # (S, S, 3) uint8
            image = torch.from_numpy(np.ascontiguousarray(degraded)).permute(2, 0, 1)
        color = np.ones(5)  # per-channel gain (3), contrast, brightness: identity
        if rng is not None and aug.color_jitter > 0:
            c = aug.color_jitter
            color[:3] = rng.uniform(1 - c, 1 + c, 3)
            color[4], color[3] = rng.uniform(1 - c, 1 + c, 2)  # brightness, contrast (draw order kept)
        out = {
            "image": image.contiguous(),
            "color": torch.from_numpy(color.astype(np.float32)),
            "mask": mask,
            "landmarks": torch.from_numpy(lm.astype(np.float32)),
            "landmarks_visible": torch.from_numpy(np.asarray(raw["landmarks_visible"], bool).copy()),
            "intrinsics": torch.from_numpy(k.astype(np.float32)),
            "index": torch.tensor(int(raw.get("index", -1)), dtype=torch.int64),
        }
        for key in PARAM_KEYS:
            out[key] = torch.from_numpy(np.array(raw[key], np.float32))
        return out

    def param_arrays(self, max_samples: int = 2000) -> dict[str, np.ndarray]:
        """``pose``, ``translation``, ``intrinsics`` (at ``self.size``), ``sh`` of up to
        ``max_samples`` evenly spaced samples (for the normalisation statistics)."""
        n = len(self)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(np.int64))
        rows = {"pose": [], "translation": [], "intrinsics": [], "sh": []}
        for i in idx:
            raw = self.read_raw(int(i))
            for key in rows:
                rows[key].append(np.asarray(raw[key], np.float64))
        out = {key: np.stack(v) for key, v in rows.items()}
        out["intrinsics"][:, :2] *= self.size / self.native_size
        return out

    def close(self) -> None:
        for r in self._readers.values():
            _close(r)
        self._readers = {}

    def __getstate__(self) -> dict[str, Any]:  # spawn-started workers get no open handles
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state


def image_to_float(image: torch.Tensor, color: torch.Tensor | None = None) -> torch.Tensor:
    """Batch images ``(B, 3, H, W)`` uint8 (or float in [0, 1]) -> float in [0, 1], with the colour
    jitter ``color (B, 5)`` = (gain r, g, b, contrast, brightness) applied as
    ``clip(((x * gain - m) * contrast + m) * brightness, 0, 1)``, ``m`` the image mean."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    x = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    if color is None:
        return x
    if color.shape != (image.shape[0], 5):
        raise ValueError(f"color must be ({image.shape[0]}, 5), got {tuple(color.shape)}")
    c = color.to(x.device, x.dtype)[:, :, None, None]  # (B, 5, 1, 1)
    m = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (((x * c[:, :3] - m) * c[:, 3:4] + m) * c[:, 4:5]).clamp_(0.0, 1.0)


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Shift ``(C, H, W)`` content by ``dx`` columns right and ``dy`` rows down, zero-filled."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


# ---------------------------------------------------------------------------- sampling
def rank_indices(dataset: ShardDataset, rank: int, world: int) -> np.ndarray:
    """Global positions rank ``rank`` of ``world`` trains on: whole shards round-robin when there
    are at least ``world`` shards (each rank reads only its own files), else a contiguous
    ``1/world`` slice of the samples."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    ranges = dataset.shard_ranges()
    if len(ranges) >= world:
        idx = np.concatenate([np.arange(r.start, r.stop) for r in ranges[rank::world]])
    else:
        idx = np.array_split(np.arange(len(dataset)), world)[rank]
    if idx.size == 0:
        raise ValueError(f"rank {rank} of {world} gets no samples from {dataset.root} ({len(dataset)} samples)")
    return idx.astype(np.int64)


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches ``[(index, epoch), ...]`` for steps ``start_step .. total_steps - 1``.

    The sample stream is the concatenation of per-epoch permutations of ``indices``
    (``default_rng([seed, 21, epoch])``); step ``s`` takes stream positions ``[s B, (s + 1) B)``.
    So the batches depend only on ``(seed, indices, batch_size, step)``: resuming at step s
    continues the same stream.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, total_steps: int, start_step: int = 0):
        self.indices = np.asarray(indices, np.int64)
        if self.indices.size == 0:
            raise ValueError("indices must not be empty")
        if batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.total_steps, self.start_step = int(total_steps), int(start_step)
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 21, epoch]).permutation(self.indices.size))
        return self._perm[1]

    def batch(self, step: int) -> list[tuple[int, int]]:
        n, out = self.indices.size, []
        for p in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch = p // n
            out.append((int(self.indices[self._permutation(epoch)[p % n]]), int(epoch)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def _loader_kwargs(workers: int, pin: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False)
    return kw


def make_train_loader(dataset: ShardDataset, indices: Sequence[int], batch_size: int, seed: int, total_steps: int,
                      start_step: int = 0, workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader yielding the batches of steps ``start_step .. total_steps - 1``."""
    sampler = StepBatchSampler(indices, batch_size, seed, total_steps, start_step)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **_loader_kwargs(workers, pin_memory))


def make_eval_loader(dataset: ShardDataset, batch_size: int, max_samples: int | None = None, workers: int = 0,
                     pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Sequential, unaugmented batches over the first ``max_samples`` samples (all when None)."""
    n = len(dataset) if not max_samples else min(len(dataset), int(max_samples))
    subset = torch.utils.data.Subset(dataset, range(n))
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, **_loader_kwargs(workers, pin_memory))


class PhotoDataset(torch.utils.data.Dataset):
    """Face crops of real photos (:mod:`train.photos`) as a torch Dataset (FineNet training, evaluation).

    Item ``i``: ``image (3, S, S) uint8`` (convert with :func:`image_to_float`), ``intrinsics (3, 3)
    float32`` at S (assumed field of view, :func:`train.photos.photo_intrinsics`), ``landmarks
    (68, 2) float32`` the detector's points in crop pixels (NaN when the detector gave none),
    ``landmarks_valid`` (bool), ``index`` (int64) and ``path`` (str, the photo file). The
    :class:`train.photos.PhotoFace` of item ``i`` is ``faces[i]`` (its crop maps predictions back
    to photo pixels).
    """

    def __init__(self, faces: Sequence[Any]):
        from train.photos import faces_to_arrays

        self.faces = list(faces)
        if not self.faces:
            raise ValueError("PhotoDataset needs at least one face (no photo gave a usable face)")
        self._arrays = faces_to_arrays(self.faces)
        self.size = int(self.faces[0].size)
        self.run = None  # the train.photos.PhotoRun that made it, when built by from_photos

    @classmethod
    def from_photos(cls, inputs, config=None, detector=None, recursive: bool = False) -> "PhotoDataset":
        """Run :func:`train.photos.prepare_photos` on files / folders and wrap the faces (``.run``
        keeps the used/skipped summary)."""
        from train.photos import prepare_photos

        run = prepare_photos(inputs, config, detector=detector, recursive=recursive)
        if not run.faces:
            raise ValueError(f"no usable face in the photos: {run.summary()}")
        ds = cls(run.faces)
        ds.run = run
        return ds

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} faces")
        a = self._arrays
        return {
            "image": torch.from_numpy(np.ascontiguousarray(a["image"][i].transpose(2, 0, 1))),  # (S, S, 3) -> (3, S, S)
            "intrinsics": torch.from_numpy(a["intrinsics"][i].copy()),
            "landmarks": torch.from_numpy(a["landmarks"][i].copy()),
            "landmarks_valid": torch.tensor(bool(a["landmarks_valid"][i])),
            "index": torch.tensor(i % len(self), dtype=torch.int64),
            "path": str(self.faces[i].path),
        }


DETAIL_KEYS = ("depth", "depth_coarse", "albedo")
"""The fine-stage ground truth :class:`DetailShardDataset` reads besides :data:`SAMPLE_KEYS`."""


class DetailShardDataset(ShardDataset):
    """A :class:`ShardDataset` whose items also hold the fine-stage ground truth: ``depth (S, S)``
    (the detailed surface, mm, 0 off the face), ``depth_coarse (S, S)`` (the model-only surface
    along the same pixel rays) and ``albedo (S, S, 3)`` (linear), all float32.

    Depth maps are not resampled: the shards must be rendered at the requested ``size`` (a
    :class:`ShardError` says so otherwise), and items are never augmented (a shift or a colour
    change would break the image / depth correspondence the fine-stage losses rely on).
    """

    sample_keys = SAMPLE_KEYS + DETAIL_KEYS

    def __init__(self, root: str | os.PathLike, fingerprint: "MorphableModel | str | None" = None,
                 size: int | None = None):
        super().__init__(root, fingerprint=fingerprint, size=size)
        if self.size != self.native_size:
            raise ShardError(f"shards in {self.root} are rendered at {self.native_size} px, the fine stage needs them "
                             f"at its --size {self.size} (depth maps are not resampled): render them at that size")
        for path in self.paths:
            reader = self._open(path)
            try:
                if not getattr(reader, "detail", False):
                    raise ShardError(f"shard {path} has no fine detail (depth_coarse): render it with --detail")
            finally:
                _close(reader)

    def convert(self, raw: dict[str, np.ndarray], rng: np.random.Generator | None = None,
                photo_rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        out = super().convert(raw, None, None)  # never augmented (class docstring)
        for key in DETAIL_KEYS:
            out[key] = torch.from_numpy(np.array(raw[key], np.float32))
        return out


class EpochIndexed(torch.utils.data.Dataset):
    """A dataset indexed by plain positions seen through the ``(index, epoch)`` items of
    :class:`StepBatchSampler` (e.g. :class:`PhotoDataset`: nothing random per epoch), with the
    keys that do not batch (strings) dropped."""

    def __init__(self, dataset: torch.utils.data.Dataset, drop: Sequence[str] = ("path",)):
        self.dataset, self.drop = dataset, tuple(drop)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item) -> dict[str, Any]:
        i = item[0] if isinstance(item, tuple) else item
        return {k: v for k, v in self.dataset[int(i)].items() if k not in self.drop}
