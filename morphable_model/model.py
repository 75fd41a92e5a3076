"""The morphable model: one frozen object holding the linear shape / expression / albedo bases.

Conventions (docs/DESIGN.md):

* geometry in millimetres, albedo in [0, 1];
* vertex arrays are ``(N, 3)``, flattened bases are ``(3N, K)`` with row order
  ``x0, y0, z0, x1, ...`` (BFM layout), so ``basis.reshape(N, 3, K)`` gives per-vertex xyz;
* coefficients are in units of the prior standard deviation (prior N(0, I)):
  ``shape = mean + id_basis @ (id_std * alpha_id) + exp_basis @ (exp_std * alpha_exp)``,
  ``albedo = albedo_mean + albedo_basis @ (albedo_std * beta)``;
* giving fewer than K coefficients uses only the first components (a truncated model).

The bases are expected (not required) to have orthonormal columns, as in the BFM files; then
``std`` is the standard deviation of the model along each component.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging

import numpy as np

from .geometry import check_vertices, vertex_face_incidence, vertex_normals
from .landmarks import N_LANDMARKS

__all__ = ["MorphableModel", "ModelSample", "N_LANDMARKS", "SKETCH_RTOL", "model_matches", "fingerprint_of"]

log = logging.getLogger(__name__)

SKETCH_VERSION = "sketch2"
# tolerance of :meth:`MorphableModel.matches`, relative to each column's L1 norm: a float32
# column whose every entry moved by one ulp (<= 2^-23 relative) moves its numbers by < 1.2e-7 of it
SKETCH_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class ModelSample:
    """Coefficients drawn from the model prior, in standard-deviation units.

    ``alpha_id (n, Kid)``, ``alpha_exp (n, Kexp)``, ``beta (n, Kalb)``, all float32.
    """

    alpha_id: np.ndarray
    alpha_exp: np.ndarray
    beta: np.ndarray

    def __len__(self) -> int:
        return int(self.alpha_id.shape[0])

    def __getitem__(self, i: int) -> "ModelSample":
        """The i-th sample as 1-D coefficient vectors."""
        return ModelSample(self.alpha_id[i], self.alpha_exp[i], self.beta[i])


# the float32 arrays of a model; torch_model.MorphableModelModule registers these (+ pncc_colors) as buffers
_FLOAT_FIELDS = (
    "mean_shape",
    "id_basis",
    "id_std",
    "exp_basis",
    "exp_std",
    "albedo_mean",
    "albedo_basis",
    "albedo_std",
)
# the order in which arrays enter the fingerprint; never reorder (it would change every hash)
_FINGERPRINT_FIELDS = _FLOAT_FIELDS + ("triangles", "landmarks", "face_region")
# optional fields added later: they enter the fingerprint only when present, so the fingerprints
# of models without them (BFM files, older shards and checkpoints) stay what they were
_OPTIONAL_FINGERPRINT_FIELDS = ("regions",)


@dataclasses.dataclass(frozen=True, eq=False)
class MorphableModel:
    """A linear 3D morphable model (identity + expression shape, albedo), frozen.

    All arrays are copied and made read-only on construction: float arrays become float32,
    ``triangles`` int32, ``landmarks`` int64, ``face_region`` bool. Shapes are validated and a
    mismatch raises ``ValueError`` naming the field, the expected and the actual shape.
    Equality is identity; compare models with :attr:`fingerprint`.
    """

    mean_shape: np.ndarray
    """(N, 3) mean face in mm (for BFM2017 files: shape mean + expression mean)."""
    id_basis: np.ndarray
    """(3N, Kid) identity basis, rows x0, y0, z0, x1, ..."""
    id_std: np.ndarray
    """(Kid,) identity standard deviations (mm per unit-norm column)."""
    exp_basis: np.ndarray
    """(3N, Kexp) expression basis; Kexp may be 0 (model without expressions)."""
    exp_std: np.ndarray
    """(Kexp,) expression standard deviations."""
    albedo_mean: np.ndarray
    """(N, 3) mean albedo, linear RGB in [0, 1]."""
    albedo_basis: np.ndarray
    """(3N, Kalb) albedo basis, rows r0, g0, b0, r1, ..."""
    albedo_std: np.ndarray
    """(Kalb,) albedo standard deviations."""
    triangles: np.ndarray
    """(T, 3) 0-based vertex indices, counter-clockwise seen from outside."""
    landmarks: np.ndarray | None = None
    """(68,) vertex indices of the iBUG 300-W landmarks in iBUG order, or None."""
    unit: str = "mm"
    """length unit of the geometry; always "mm" after loading (loaders convert)."""
    source: str = ""
    """where the model came from (file path, "builtin", ...), informative only."""
    face_region: np.ndarray | None = None
    """(N,) bool, True for vertices of the inner face (for tests/metrics), or None."""
    regions: np.ndarray | None = None
    """(N,) uint8 region label of every vertex (an index into ``region_names``), or None (BFM files
    have none). The built-in model labels face, eyes, mouth interior, ears, scalp, neck, head skin."""
    region_names: tuple[str, ...] = ()
    """names of the region labels (``regions`` values index into it); empty when ``regions`` is None."""

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        for name in _FLOAT_FIELDS:
            set_(name, _frozen(getattr(self, name), np.float32, name))
        set_("triangles", _frozen(self.triangles, np.int32, "triangles"))
        if self.landmarks is not None:
            set_("landmarks", _frozen(self.landmarks, np.int64, "landmarks"))
        if self.face_region is not None:
            set_("face_region", _frozen(self.face_region, np.bool_, "face_region"))
        if self.regions is not None:
            set_("regions", _frozen(self.regions, np.uint8, "regions"))
        set_("region_names", tuple(str(x) for x in self.region_names))
        if self.unit != "mm":
            raise ValueError(f"unit must be 'mm' (loaders convert to mm), got {self.unit!r}")
        self._validate()

    def _validate(self) -> None:
        n = _expect_shape(self.mean_shape, "mean_shape", (None, 3))[0]
        if n < 3:
            raise ValueError(f"mean_shape must have at least 3 vertices, got {n}")
        for basis, std, label in (
            ("id_basis", "id_std", "Kid"),
            ("exp_basis", "exp_std", "Kexp"),
            ("albedo_basis", "albedo_std", "Kalb"),
        ):
            k = _expect_shape(getattr(self, basis), basis, (3 * n, None), f"(3N={3 * n}, {label})")[1]
            _expect_shape(getattr(self, std), std, (k,), f"({label}={k},)")
            s = getattr(self, std)
            if not np.all(np.isfinite(s)) or np.any(s < 0):
                raise ValueError(f"{std} must be finite and >= 0, got min {s.min() if s.size else None}")
        _expect_shape(self.albedo_mean, "albedo_mean", (n, 3))
        for name in ("mean_shape", "albedo_mean"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be finite")
        _expect_shape(self.triangles, "triangles", (None, 3))
        if self.triangles.shape[0] == 0:
            raise ValueError("triangles must be (T, 3) with T >= 1, got (0, 3)")
        lo, hi = int(self.triangles.min()), int(self.triangles.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"triangles indices must be in [0, {n}), got [{lo}, {hi}]")
        if self.landmarks is not None:
            _expect_shape(self.landmarks, "landmarks", (N_LANDMARKS,))
            lo, hi = int(self.landmarks.min()), int(self.landmarks.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"landmarks indices must be in [0, {n}), got [{lo}, {hi}]")
        if self.face_region is not None:
            _expect_shape(self.face_region, "face_region", (n,))
        if self.regions is not None:
            _expect_shape(self.regions, "regions", (n,))
            top = int(self.regions.max()) if n else -1
            if top >= len(self.region_names):
                raise ValueError(f"regions must index region_names ({len(self.region_names)} names), got label {top}")
        elif self.region_names:
            raise ValueError(f"region_names given without regions: {self.region_names}")
        if len(set(self.region_names)) != len(self.region_names):
            raise ValueError(f"region_names must be distinct, got {self.region_names}")

    def region_mask(self, *names: str) -> np.ndarray:
        """``(N,)`` bool: vertices whose region is one of ``names`` (see :attr:`region_names`)."""
        if self.regions is None:
            raise ValueError(f"model {self.source!r} has no region labels (regions is None)")
        unknown = [x for x in names if x not in self.region_names]
        if unknown:
            raise ValueError(f"unknown region {unknown[0]!r}; the model has {', '.join(self.region_names)}")
        return np.isin(self.regions, [self.region_names.index(x) for x in names])

    # ------------------------------------------------------------------ counts
    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_basis.shape[1])

    @property
    def n_exp(self) -> int:
        return int(self.exp_basis.shape[1])

    @property
    def n_albedo(self) -> int:
        return int(self.albedo_basis.shape[1])

    # ------------------------------------------------------------------ evaluation
    def shape(self, alpha_id: np.ndarray, alpha_exp: np.ndarray | None = None) -> np.ndarray:
        """Vertices for coefficients in std units.

        ``alpha_id`` is ``(k_id,)`` or ``(B, k_id)`` with ``k_id <= n_id``; ``alpha_exp`` likewise
        (``None`` = neutral expression). 1-D in gives ``(N, 3)``, 2-D gives ``(B, N, 3)``, float32.
        """
        a_id, batched = _coefficients(alpha_id, self.n_id, "alpha_id")
        out = self._combine(self.mean_shape, self.id_basis, self.id_std, a_id)  # (B, 3N)
        if alpha_exp is not None:
            a_exp, batched_exp = _coefficients(alpha_exp, self.n_exp, "alpha_exp")
            if batched_exp != batched or a_exp.shape[0] != a_id.shape[0]:
                raise ValueError(
                    "alpha_exp must match alpha_id's batch shape "
                    f"{tuple(np.shape(alpha_id)[:-1])}, got {tuple(np.shape(alpha_exp)[:-1])}"
                )
            k = a_exp.shape[1]
            # (B, k) * (k,) -> (B, k); (B, k) @ (k, 3N) -> (B, 3N)
            out += (a_exp * self.exp_std[:k]) @ self.exp_basis[:, :k].T
        out = out.reshape(out.shape[0], self.n_vertices, 3)  # (B, 3N) -> (B, N, 3), rows x0,y0,z0,...
        return out if batched else out[0]

    def albedo(self, beta: np.ndarray, clip: bool = True) -> np.ndarray:
        """Per-vertex albedo for coefficients ``beta`` ``(k,)`` or ``(B, k)``, ``k <= n_albedo``.

        Returns ``(N, 3)`` or ``(B, N, 3)`` float32 linear RGB. The linear model can leave the
        physical range [0, 1] for large coefficients; with ``clip=True`` (default) values are
        clipped to [0, 1]. ``clip=False`` returns the raw linear combination (for tests, fitting).
        """
        b, batched = _coefficients(beta, self.n_albedo, "beta")
        out = self._combine(self.albedo_mean, self.albedo_basis, self.albedo_std, b)  # (B, 3N)
        out = out.reshape(out.shape[0], self.n_vertices, 3)  # (B, 3N) -> (B, N, 3), rows r0,g0,b0,...
        if clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out if batched else out[0]

    @staticmethod
    def _combine(mean: np.ndarray, basis: np.ndarray, std: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """``mean + basis[:, :k] @ (std[:k] * coef)`` for a batch of coefficients ``(B, k)`` -> ``(B, 3N)``."""
        k = coef.shape[1]
        # (B, k) * (k,) -> (B, k); (B, k) @ (k, 3N) -> (B, 3N); (N, 3) -> (3N,) broadcast over B
        return (coef * std[:k]) @ basis[:, :k].T + mean.reshape(-1)

    def sample(
        self,
        rng: np.random.Generator,
        n: int,
        scale: float = 1.0,
        truncation: float | None = None,
    ) -> ModelSample:
        """Draw ``n`` coefficient sets from the prior N(0, scale^2 I).

        Draws alpha_id, then alpha_exp, then beta from ``rng`` (in that order). ``truncation``
        clips each coefficient to ``[-truncation, truncation]`` (in std units, after scaling).
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if int(n) != n or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if not (np.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
        if truncation is not None and not truncation > 0:
            raise ValueError(f"truncation must be > 0 or None, got {truncation!r}")
        n = int(n)
        out = []
        for k in (self.n_id, self.n_exp, self.n_albedo):
            c = scale * rng.standard_normal((n, k))  # (n, K)
            if truncation is not None:
                np.clip(c, -truncation, truncation, out=c)
            out.append(c.astype(np.float32))
        return ModelSample(*out)

    def landmark_points(self, vertices: np.ndarray) -> np.ndarray:
        """Landmark positions ``(..., 68, 3)`` picked from vertices ``(..., N, 3)``."""
        if self.landmarks is None:
            raise ValueError(f"model {self.source!r} has no landmarks (landmarks is None)")
        v = check_vertices(vertices)
        if v.shape[-2] != self.n_vertices:
            raise ValueError(f"vertices must be (..., {self.n_vertices}, 3), got {tuple(v.shape)}")
        return v[..., self.landmarks, :]  # (..., N, 3)[..., (68,), :] -> (..., 68, 3)

    def vertex_normals(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """Unit vertex normals ``(..., N, 3)`` of ``vertices`` (default: the mean shape)."""
        v = self.mean_shape if vertices is None else check_vertices(vertices)
        if v.shape[-2] != self.n_vertices:
            raise ValueError(f"vertices must be (..., {self.n_vertices}, 3), got {tuple(v.shape)}")
        return vertex_normals(v, self.triangles, incidence=self.incidence)

    @functools.cached_property
    def incidence(self):
        """Sparse ``(N, T)`` vertex-triangle incidence matrix (cached), see
        :func:`morphable_model.geometry.vertex_face_incidence`."""
        return vertex_face_incidence(self.triangles, self.n_vertices)

    # ------------------------------------------------------------------ derived data
    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 hex digest of all arrays (name, dtype, shape and bytes, fixed order).

        ``unit`` and ``source`` are not included: the same arrays loaded from another path
        have the same fingerprint.
        """
        h = hashlib.sha256()
        for name in _FINGERPRINT_FIELDS + _OPTIONAL_FINGERPRINT_FIELDS:
            a = getattr(self, name)
            if a is None and name in _OPTIONAL_FINGERPRINT_FIELDS:
                continue
            h.update(name.encode())
            if a is None:
                h.update(b"None")
                continue
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        if self.regions is not None:
            h.update(repr(self.region_names).encode())
        return h.hexdigest()

    @functools.cached_property
    def sketch(self) -> str:
        """A summary of the model that survives floating-point round-off, for :meth:`matches`.

        ``"sketch2:<sha256 of the shapes and of every integer and bool array>:<numbers>"``, the
        numbers being, per column of each float array in fingerprint order (the last axis: x, y,
        z of a mean, each component of a basis, each entry of a std vector), two weighted sums
        ``sum(w x)`` and the L1 norm ``sum |x|`` in float64; the weights ``w`` in [-0.5, 0.5)
        come from the element's flat index through the splitmix64 hash (integer arithmetic: the
        same weights on every machine), so a sign flip, a swap or a smooth change of a column moves
        its sums by about its RMS times the square root of its length, far beyond round-off.

        Why: the built-in model is computed (trigonometry, QR) rather than read from a file, and
        numpy's vectorised float64 functions and BLAS kernels are chosen per CPU (AVX-512 or not):
        the same code builds float32 arrays that differ by an ulp here and there on another
        processor, so the exact :attr:`fingerprint` differs while the model is the same.
        """
        h = hashlib.sha256()
        numbers: list[float] = []
        for name in _FINGERPRINT_FIELDS + _OPTIONAL_FINGERPRINT_FIELDS:
            a = getattr(self, name)
            h.update(f"{name}{None if a is None else (a.dtype.str, a.shape)}".encode())
            if a is None:
                continue
            if name in _FLOAT_FIELDS:
                numbers.extend(_sketch_numbers(np.asarray(a).reshape(-1, a.shape[-1]) if a.ndim > 1
                                               else np.asarray(a).reshape(1, -1)))
            else:
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(self.region_names).encode())
        return f"{SKETCH_VERSION}:{h.hexdigest()}:" + ",".join(f"{v:.12g}" for v in numbers)

    def matches(self, fingerprint: str | None, sketch: str | None = None, what: str = "") -> bool:
        """Whether this is the model recorded as ``fingerprint`` (its exact :attr:`fingerprint`)
        or, failing that, as ``sketch`` (an earlier :attr:`sketch` of it, e.g. on another CPU):
        the same shapes, integer and bool arrays bit for bit, and float arrays whose sketch
        numbers agree within :data:`SKETCH_RTOL` of each column's L1 norm: the same model up to
        round-off. ``what`` (e.g. the file) names the record in the log line of a tolerant match."""
        if fingerprint is not None and str(fingerprint) == self.fingerprint:
            return True
        if not sketch:
            return False
        key = (None if fingerprint is None else str(fingerprint), str(sketch))
        if key not in self._tolerant_matches:  # decided (and logged) once per record, not once per shard
            self._tolerant_matches[key] = self._sketch_matches(str(sketch), fingerprint, what)
        return self._tolerant_matches[key]

    @functools.cached_property
    def _tolerant_matches(self) -> dict:
        return {}

    def _sketch_matches(self, sketch: str, fingerprint, what: str) -> bool:
        mine, theirs = self.sketch.split(":"), str(sketch).split(":")
        if len(theirs) != 3 or theirs[0] != SKETCH_VERSION or theirs[1] != mine[1]:
            return False
        try:
            a = np.array([float(v) for v in mine[2].split(",") if v])
            b = np.array([float(v) for v in theirs[2].split(",") if v])
        except ValueError:
            return False
        if a.shape != b.shape:
            return False
        l1 = np.repeat(np.maximum(a[2::3], b[2::3]), 3)  # each column's L1 norm beside its three numbers
        ok = bool(np.all(np.abs(a - b) <= SKETCH_RTOL * l1))
        if ok:
            log.info("morphable model %s... is the one of %s(fingerprint %s...) up to floating-point round-off: "
                     "matched by its sketch (the model was built on another CPU?)", self.fingerprint[:12],
                     f"{what} " if what else "", str(fingerprint)[:12])
        return ok

    @functools.cached_property
    def pncc_colors(self) -> np.ndarray:
        """``(N, 3)`` float32: the mean shape normalised to [0, 1] per axis (read-only)."""
        lo = self.mean_shape.min(axis=0)  # (3,)
        span = self.mean_shape.max(axis=0) - lo  # (3,)
        span = np.where(span > 0, span, 1.0)
        c = ((self.mean_shape - lo) / span).astype(np.float32)  # (N, 3)
        c.setflags(write=False)
        return c

    def replace(self, **changes) -> "MorphableModel":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def truncated(self, n_id: int | None = None, n_exp: int | None = None, n_albedo: int | None = None) -> "MorphableModel":
        """A copy keeping only the first components of each basis (None = keep all)."""
        def cut(basis: str, std: str, k: int | None, label: str) -> dict:
            full = getattr(self, std).shape[0]
            if k is None:
                return {}
            if not 0 <= k <= full:
                raise ValueError(f"{label} must be in [0, {full}], got {k}")
            return {basis: getattr(self, basis)[:, :k], std: getattr(self, std)[:k]}

        return self.replace(
            **cut("id_basis", "id_std", n_id, "n_id"),
            **cut("exp_basis", "exp_std", n_exp, "n_exp"),
            **cut("albedo_basis", "albedo_std", n_albedo, "n_albedo"),
        )

    def __setstate__(self, state: dict) -> None:
        """Unpickling (e.g. in a worker process) keeps the arrays read-only."""
        for value in state.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"MorphableModel(source={self.source!r}, n_vertices={self.n_vertices}, "
            f"n_triangles={self.n_triangles}, n_id={self.n_id}, n_exp={self.n_exp}, "
            f"n_albedo={self.n_albedo}, landmarks={'yes' if self.landmarks is not None else 'no'}, "
            f"fingerprint={self.fingerprint[:12]})"
        )


def fingerprint_of(expected: "MorphableModel | str") -> str:
    """The exact fingerprint of ``expected``: a model's :attr:`MorphableModel.fingerprint`, or the string."""
    return expected.fingerprint if isinstance(expected, MorphableModel) else str(expected)


def model_matches(expected: "MorphableModel | str", fingerprint, sketch=None, what: str = "") -> bool:
    """Whether a file's recorded ``fingerprint`` (and optional ``sketch``) describe ``expected``:
    a model (:meth:`MorphableModel.matches`: exact, or the same model up to round-off) or a
    fingerprint string (exact only). Bytes (HDF5 attributes) are decoded."""
    fingerprint, sketch = (v.decode() if isinstance(v, bytes) else v for v in (fingerprint, sketch))
    if isinstance(expected, MorphableModel):
        return expected.matches(fingerprint, sketch, what)
    return fingerprint is not None and str(fingerprint) == str(expected)


def _splitmix64(i: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of uint64 ``i`` (wrapping integer arithmetic, the same on every
    machine) as floats in [-0.5, 0.5) (the top 53 bits)."""
    with np.errstate(over="ignore"):
        z = i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53 - 0.5


def _sketch_numbers(x: np.ndarray, rows: int = 1 << 14) -> list[float]:
    """Per column of ``x (R, C)``: ``[sum(w1 x), sum(w2 x), sum |x|]`` (float64 sums over row
    blocks), the weights :func:`_splitmix64` of the flat index ``i`` and of ``i + 2^40``."""
    r, c = x.shape
    out = np.zeros((c, 3))
    for start in range(0, r, rows):
        part = x[start:start + rows].astype(np.float64)  # (r', C)
        idx = np.arange(start * c, (start + part.shape[0]) * c, dtype=np.uint64).reshape(part.shape)
        out[:, 0] += (_splitmix64(idx) * part).sum(0)
        out[:, 1] += (_splitmix64(idx + np.uint64(1 << 40)) * part).sum(0)
        out[:, 2] += np.abs(part).sum(0)
    return out.ravel().tolist()


def _frozen(value, dtype, name: str) -> np.ndarray:
    """A read-only, C-contiguous copy of ``value`` as ``dtype``."""
    a = np.asarray(value)
    if dtype in (np.int32, np.int64):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = np.array(a, dtype=dtype, order="C", copy=True)
    a.setflags(write=False)
    return a


def _expect_shape(a: np.ndarray, name: str, expected: tuple, text: str | None = None) -> tuple:
    """Check ``a.shape`` against ``expected`` (None = any size); return the shape."""
    ok = a.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, a.shape))
    if not ok:
        if text is None:
            text = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name} must be {text}, got {tuple(a.shape)}")
    return a.shape


def _coefficients(coef, k_max: int, name: str) -> tuple[np.ndarray, bool]:
    """Coefficients as a float32 ``(B, k)`` array plus whether the input was batched."""
    c = np.asarray(coef, dtype=np.float32)
    if c.ndim not in (1, 2):
        raise ValueError(f"{name} must be (k,) or (B, k) with k <= {k_max}, got {tuple(c.shape)}")
    if c.shape[-1] > k_max:
        raise ValueError(f"{name} must have at most {k_max} coefficients, got {tuple(c.shape)}")
    batched = c.ndim == 2
    return (c if batched else c[None]), batched
