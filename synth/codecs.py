"""Sample codecs of the shard layout: how each map is quantised, encoded and decoded.

* normals: octahedral map to int8 ``(x, y) / 127`` (:func:`octahedral_encode`);
* depth / coarse depth: uint16 ``q`` with a per-sample offset and step, ``q = 0`` off the face
  (:func:`encode_depth`); with detail on, the detailed depth is stored as int16 steps of
  :data:`DETAIL_STEP_MM` relative to the decoded coarse depth;
* image: uint8 sRGB-encoded, like a photo (the renderer's output as it is);
* albedo: linear RGB stored sRGB-encoded, uint8 ``round(255 srgb(x))`` (8 bits spent evenly in
  perceived lightness, so dark skin keeps its precision), decoded back to linear float32;
* PNCC: uint8 ``round(255 x)``;
* ``image``, ``depth`` / ``depth_coarse``, ``normals``, ``pncc``: additionally 2-D difference coded
  (:func:`delta2d_encode`, wrapping integer arithmetic) so smooth maps compress well;
* ``specular``: ``(strength, shininess)`` float32 of the sample's Blinn-Phong term.

Layout 6 (:data:`LAYOUT_VERSION`, written) is layout 4 without the triangle-id image: the reader
**recomputes the ids** from the stored parameters and the model (the renderer's compiled
rasterizer, :meth:`synth.render.FaceRenderer.surface_maps`), and the shard keeps only what that
cannot be trusted to reproduce exactly on another machine: ``tri_fix``, the ids (``id + 1``, uint32,
0 elsewhere) of the face pixels :func:`synth.kernels.rasterize_stable` marks unstable (an id that
could change if the projected corners moved by :data:`synth.kernels.UNSTABLE_EPS_PX` pixels —
model arrays and float rounding an ulp apart move them ~1e-5 px — or the writer drew the ids on an
OpenGL platform whose edge rule differs: every pixel where the two differ), and ``tri_crc``, the
CRC-32 of the writer's ids (:func:`ids_crc`). :func:`restore_ids` puts the mask, the stored ids and
the recomputed ones together and checks the CRC: the ids, and so the maps, come back bit for bit
or the read fails with a message saying why. ~23 kB less per sample at 224 px (the ids were a
quarter of the shard); ~1 kB of ``tri_fix`` remains. Layout 7 (:data:`JPEG_LAYOUT`) is layout 6
with the image as JPEG.

Layout 5 (written only on request before layout 6: ``synth-cli render --image-codec jpeg``) is
layout 4 with the one lossy code of the project: the image as JPEG bytes (:func:`jpeg_encode`:
Pillow / libjpeg, 4:4:4, no chroma subsampling, quality :data:`DEFAULT_JPEG_QUALITY` unless asked
otherwise), decoded with :func:`jpeg_decode`. Every other key decodes bit for bit as in layout 4;
the image comes back within the error of its quality (docs/shards.md gives the measured RMSE and
peak error). The shard stores the bytes of all its samples back to back (``image``, 1-D uint8, checksummed
chunks) and each sample's ``[start, stop)`` in ``image_span``.

Layout 4 (:data:`LAYOUT_VERSION`, written) is layout 3 with two tighter lossless codes, ~10 %
smaller at 224 px: the image in a reversible colour transform (:func:`rct_encode`: G, R - G, B - G
modulo 256) before the 2-D difference, and the triangle ids as the zigzag-coded difference to the
left neighbour along each row (:func:`row_delta_encode`, uint32). Every decoded key is bit for bit
what layout 3 gives. Layout 3 stores the image, the mask and the **triangle-id image**
``tri_id`` (2-D difference coded ``tri_id + 1`` in int32) instead of the maps: ``depth``,
``depth_coarse``, ``normals``, ``pncc`` and ``albedo`` (:data:`SURFACE_KEYS`) are recomputed on read
from the ids, the stored parameters and the morphable model (the shard's ``model_fingerprint``) by
:meth:`synth.render.FaceRenderer.surface_maps` — the renderer's own per-pixel computation, so they
come back at full float32 precision, bit-identical to what the renderer computed, and cost a model
evaluation per sample (:func:`decode_sample` takes the recomputation as ``surface``).

:data:`READABLE_LAYOUTS` are read. Layout 2 stored the quantised maps (below). Layout 1 (before
the sRGB change) stored the image as *linear* RGB uint8 and the albedo as linear ``round(255 x)``, and
had no specular term: decoding a layout-1 sample returns its image **encoded to sRGB on read**
(:func:`synth.color.linear_to_srgb_u8` of ``q / 255``), its albedo as linear float32 and
``specular = (0, 0)`` (those renders had none), so every reader sees the keys and meanings of
layout 2.

:func:`encode_sample` turns a rendered sample into the stored arrays and :func:`decode_sample` back
into the decoded keys of docs/DESIGN.md; ``decode_sample(raw, keys)`` decodes only some keys and
:func:`stored_for` says which stored datasets those need (the shard reader's fast path).
The dataset table is in :mod:`synth.shards` and docs/shards.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .color import linear_to_srgb_u8, srgb_u8_to_linear

__all__ = [
    "LAYOUT_VERSION",
    "READABLE_LAYOUTS",
    "DEPTH_STEP_MM",
    "DETAIL_STEP_MM",
    "DELTA2D",
    "DECODED_KEYS",
    "PARAMETER_KEYS",
    "octahedral_encode",
    "octahedral_decode",
    "delta2d_encode",
    "delta2d_decode",
    "rct_encode",
    "rct_decode",
    "row_delta_encode",
    "row_delta_decode",
    "jpeg_encode",
    "jpeg_decode",
    "JPEG_LAYOUT",
    "is_jpeg",
    "ids_recomputed",
    "ids_crc",
    "restore_ids",
    "StoredIds",
    "IdsMismatchError",
    "DEFAULT_JPEG_QUALITY",
    "encode_depth",
    "decode_depth",
    "encode_sample",
    "decode_sample",
    "stored_for",
    "SURFACE_KEYS",
    "GEOMETRY_KEYS",
]

LAYOUT_VERSION = 6
"""The shard layout written (6: image, mask, the parameters and the ids of the unstable pixels only;
the triangle ids and the maps are recomputed on read)."""
JPEG_LAYOUT = 7
"""The layout written when the image is stored lossy (layout 6 with the image as JPEG bytes; opt-in)."""

DEFAULT_JPEG_QUALITY = 95
"""JPEG quality of the images of layouts 7 and 5 unless asked otherwise (``synth-cli render --jpeg-quality``)."""
READABLE_LAYOUTS = (1, 2, 3, 4, 5, 6, 7)
"""Layouts :func:`decode_sample` decodes (7: layout 6 with a JPEG image; 6: ids recomputed on read;
5: layout 4 with a JPEG image; 2: quantised maps; 1: linear image and albedo, no specular; see the
module doc)."""
SURFACE_KEYS = ("depth", "depth_coarse", "normals", "pncc", "albedo")
"""Layouts 3 to 7: the maps recomputed from ``tri_id``, the parameters and the model."""
GEOMETRY_KEYS = ("alpha_id", "alpha_exp", "beta", "pose", "translation", "intrinsics", "index")
"""Layouts 3 to 7: the stored parameters the recomputation of :data:`SURFACE_KEYS` (and, from layout 6,
of ``tri_id``) needs (+ ``detail_weights``)."""
IDS_STORED = ("mask", "tri_fix", "tri_crc")
"""Layouts 6 and 7: what :func:`restore_ids` needs beside the recomputed ids."""
DEPTH_STEP_MM = 1.0 / 128.0  # depth / coarse-depth quantisation step (coarser if the span needs it)
DETAIL_STEP_MM = 1.0 / 128.0  # quantisation of depth - depth_coarse (the fine detail)
PARAMETER_KEYS = ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics", "detail_weights",
                  "specular")
"""Per-sample parameters, stored and decoded as they are (float32)."""
DECODED_KEYS = ("image", "depth", "depth_coarse", "normals", "pncc", "albedo", "mask", "landmarks",
                "landmarks_visible") + PARAMETER_KEYS + ("index", "tri_id")
"""Every key :func:`decode_sample` can return (``depth_coarse``, ``detail_weights``: detail on only;
``tri_id``: layouts 3 to 7 only)."""
_DECODED = frozenset(DECODED_KEYS)
_NEED_MASK = frozenset(("depth", "depth_coarse", "mask", "normals"))  # decoded from the quantised depth q


def is_jpeg(layout: int) -> bool:
    """Whether shards of ``layout`` store the image as JPEG bytes (layouts 5 and 7)."""
    return layout in (5, 7)


def ids_recomputed(layout: int) -> bool:
    """Whether shards of ``layout`` recompute the triangle ids on read (layouts 6 and 7)."""
    return layout >= 6


def octahedral_encode(n: np.ndarray) -> np.ndarray:
    """Unit vectors ``(..., 3)`` -> int8 ``(..., 2)`` (octahedral map; zero vectors -> (0, 0))."""
    n = np.asarray(n, np.float32)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    ax, ay = np.abs(x), np.abs(y)
    s = ax + ay + np.abs(z)  # L1 norm
    inv = np.divide(np.float32(1.0), s, out=np.zeros_like(s), where=s > 0)
    out = np.empty(n.shape[:-1] + (2,), np.float32)
    ox, oy = out[..., 0], out[..., 1]
    np.multiply(x, inv, out=ox)  # x / |n|_1
    np.multiply(y, inv, out=oy)
    neg = z < 0
    if neg.any():  # lower hemisphere: fold over the diagonals
        px, py = ox[neg], oy[neg]
        ox[neg] = (1 - np.abs(py)) * np.where(px >= 0, 1.0, -1.0)
        oy[neg] = (1 - np.abs(px)) * np.where(py >= 0, 1.0, -1.0)
    out *= 127.0
    np.round(out, out=out)
    np.clip(out, -127, 127, out=out)
    return out.astype(np.int8)


def octahedral_decode(e: np.ndarray) -> np.ndarray:
    """int8 ``(..., 2)`` -> unit vectors ``(..., 3)`` float32 (inverse of :func:`octahedral_encode`)."""
    f = np.asarray(e, np.float32) / 127.0
    x, y = f[..., 0], f[..., 1]
    z = 1.0 - np.abs(x) - np.abs(y)
    t = np.clip(-z, 0.0, None)
    x = x - np.where(x >= 0, t, -t)
    y = y - np.where(y >= 0, t, -t)
    v = np.stack([x, y, z], axis=-1)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def delta2d_encode(a: np.ndarray) -> np.ndarray:
    """2-D difference (along width, then height; wrapping integer arithmetic) of ``(H, W, ...)``:
    smooth maps become mostly small numbers that compress well. Inverse: :func:`delta2d_decode`."""
    x = np.diff(a, axis=1, prepend=np.zeros_like(a[:, :1]))
    return np.diff(x, axis=0, prepend=np.zeros_like(x[:1]))


def delta2d_decode(d: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`delta2d_encode`: ``cumsum(cumsum(d, axis=0), axis=1)`` in ``d.dtype``."""
    return np.cumsum(np.cumsum(d, axis=0, dtype=d.dtype), axis=1, dtype=d.dtype)


DELTA2D = ("image", "depth", "depth_coarse", "normals", "pncc")  # stored 2-D-difference coded


def rct_encode(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` -> uint8 ``(G, R - G, B - G)`` modulo 256: a reversible colour
    transform (the channels of a photo move together, so the differences are small and compress
    well). Inverse: :func:`rct_decode`."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape[-1:] != (3,):
        raise ValueError(f"image must be uint8 (..., 3), got {image.dtype} {image.shape}")
    g = image[..., 1]
    return np.stack([g, image[..., 0] - g, image[..., 2] - g], axis=-1)  # uint8: wraps modulo 256


def rct_decode(code: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rct_encode`."""
    g = code[..., 0]
    return np.stack([code[..., 1] + g, g, code[..., 2] + g], axis=-1)


def row_delta_encode(ids: np.ndarray) -> np.ndarray:
    """Triangle ids ``(H, W)`` int (-1 off the face) -> uint32 zigzag code of ``(id + 1)`` minus its
    left neighbour (0 before the first column): ``2 d`` for ``d >= 0``, ``-2 d - 1`` below. Neighbouring
    pixels mostly see nearby triangles, and the zigzag keeps the high bytes of small differences
    zero (a plain int32 difference fills them with 0xFF for every negative one). Inverse:
    :func:`row_delta_decode`."""
    t = np.asarray(ids, np.int64) + 1
    d = np.diff(t, axis=1, prepend=0)
    return np.where(d >= 0, 2 * d, -2 * d - 1).astype(np.uint32)


def row_delta_decode(code: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`row_delta_encode`: int32 ids, -1 off the face."""
    z = np.asarray(code, np.int64)
    d = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    return (np.cumsum(d, axis=1) - 1).astype(np.int32)


def ids_crc(ids: np.ndarray) -> int:
    """CRC-32 (zlib) of a triangle-id image as little-endian int32 bytes, row by row: what a layout-6
    shard stores per sample (``tri_crc``) and :func:`restore_ids` checks."""
    import zlib

    return zlib.crc32(np.ascontiguousarray(ids, "<i4").tobytes())


@dataclasses.dataclass(frozen=True)
class StoredIds:
    """What a layout-6 sample stores of its triangle ids: the face ``mask (H, W)`` bool, ``fix (H, W)``
    (``id + 1`` at the pixels whose recomputed id cannot be trusted, 0 elsewhere) and ``crc`` (the
    writer's :func:`ids_crc`). ``where`` names the sample in errors."""

    mask: np.ndarray
    fix: np.ndarray
    crc: int
    where: str = "a layout-6 sample"

    @classmethod
    def from_raw(cls, raw: dict, where: str = "a layout-6 sample") -> "StoredIds":
        return cls(np.asarray(raw["mask"]).astype(bool), np.asarray(raw["tri_fix"]), int(raw["tri_crc"]), where)


class IdsMismatchError(ValueError):
    """The triangle ids recomputed by a reader do not reproduce the writer's (:func:`restore_ids`)."""


def restore_ids(recomputed: np.ndarray, stored: StoredIds) -> np.ndarray:
    """The writer's triangle ids ``(H, W)`` int32 from ids ``recomputed`` by the reader (the compiled
    rasterizer on the stored parameters): -1 off the stored mask, the stored id where ``fix`` has one,
    the recomputed id elsewhere. Raises :class:`IdsMismatchError` (a ``ValueError``) when the result's
    CRC is not the writer's — the reader's model or arithmetic moved the geometry by more than the
    writer allowed for (or the shard is damaged) — or a face pixel is left without a triangle."""
    tri = np.array(recomputed, np.int32)
    if tri.shape != stored.mask.shape or stored.fix.shape != stored.mask.shape:
        raise ValueError(f"{stored.where}: recomputed ids {tri.shape}, mask {stored.mask.shape} and fix "
                         f"{stored.fix.shape} must have one shape")
    tri[~stored.mask] = -1
    fixed = stored.fix > 0
    tri[fixed] = stored.fix[fixed].astype(np.int64) - 1
    holes = int(np.count_nonzero(stored.mask & (tri < 0)))
    if holes or ids_crc(tri) != stored.crc:
        why = f"{holes} face pixels without a triangle" if holes else "their CRC-32 differs from the writer's"
        raise IdsMismatchError(f"{stored.where}: the triangle ids recomputed here do not reproduce the writer's "
                               f"({why}): this machine's model or geometry differs from the writer's by more than "
                               "the shard allows for (same model file and detailface version needed), or the shard "
                               "is damaged (synth-cli verify)")
    return tri


def jpeg_encode(image: np.ndarray, quality: int, subsampling: str = "4:4:4") -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` -> JPEG bytes as a 1-D uint8 array (Pillow / libjpeg, baseline, no
    optimisation pass, ``subsampling`` of the chroma: ``"4:4:4"`` none, ``"4:2:0"`` halved in both
    directions). Deterministic for one libjpeg build. Inverse (up to the loss): :func:`jpeg_decode`."""
    import io

    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality!r}")
    if subsampling not in ("4:4:4", "4:2:0"):
        raise ValueError(f"subsampling must be '4:4:4' or '4:2:0', got {subsampling!r}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
    return np.frombuffer(buf.getvalue(), np.uint8)


def jpeg_decode(data) -> np.ndarray:
    """JPEG bytes (bytes or a 1-D uint8 array) -> uint8 RGB ``(H, W, 3)`` (a writable array)."""
    import io

    from PIL import Image

    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8).tobytes()
    with Image.open(io.BytesIO(raw)) as im:
        if im.format != "JPEG":
            raise ValueError(f"expected JPEG bytes, got {im.format}")
        return np.array(im.convert("RGB"))


def encode_depth(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """float depth (0 off-face) -> (uint16 q, offset, step); q = 0 off-face."""
    on = depth > 0
    if not on.any():
        return np.zeros(depth.shape, np.uint16), 0.0, DEPTH_STEP_MM
    lo, hi = float(depth[on].min()), float(depth[on].max())
    step = max(DEPTH_STEP_MM, (hi - lo) / 65000.0)
    q = np.zeros(depth.shape, np.uint16)
    q[on] = 1 + np.round((depth[on] - lo) / step).astype(np.uint16)
    return q, lo, step


def decode_depth(q: np.ndarray, offset: float, step: float) -> np.ndarray:
    return np.where(q > 0, np.float32(offset) + (q.astype(np.float32) - 1.0) * np.float32(step), 0.0).astype(np.float32)


def encode_sample(params, out, layout: int = LAYOUT_VERSION,
                  image_quality: int | None = None) -> dict[str, np.ndarray]:
    """Stored arrays of one sample of shard ``layout`` (6; 7 or 5: the image as JPEG at
    ``image_quality``, which must be given — the writer's ``image_quality`` too; 4, 3, 2 for tests of
    the older readers) from :class:`~synth.sampling.SampleParams` and
    :class:`~synth.render.RenderOutput` (layouts 3 to 7 need only the image, the mask, the triangle
    ids and the landmarks: ``render(maps=False)``; layouts 6 and 7 also its ``tri_unstable``:
    ``render(maps=False, stable=True)``)."""
    if layout in (3, 4, 5, 6, 7):
        return _encode_v3(params, out, layout, image_quality)
    if layout != 2:
        raise ValueError(f"layout must be one of 2 to 7, got {layout}")
    if out.normals is None or out.pncc is None or out.albedo is None:
        raise ValueError("layout 2 stores the maps: encode a render(params, maps=True) output")
    detail = out.depth_coarse is not None
    # detail on: the smooth coarse depth compresses well; the detail is stored once, as a difference
    q, offset, step = encode_depth(out.depth_coarse if detail else out.depth)
    enc = {
        "image": out.image,
        ("depth_coarse" if detail else "depth"): q,
        "depth_offset": np.float32(offset),
        "depth_step": np.float32(step),
        "normals": octahedral_encode(out.normals),
        "pncc": np.round(out.pncc * 255.0).astype(np.uint8),
        "albedo": _encode_albedo(out.albedo, out.mask),
        "landmarks": out.landmarks.astype(np.float32),
        "landmarks_visible": out.landmarks_visible.astype(np.uint8),
        **_params(params),
    }
    if detail:
        # relative to the *decoded* coarse depth so that decoding reproduces depth to DETAIL_STEP_MM / 2
        dq = decode_depth(q, offset, step)
        delta = np.where(out.mask, np.round((out.depth - dq) / DETAIL_STEP_MM), 0)
        enc["depth_detail"] = np.clip(delta, -32767, 32767).astype(np.int16)
    for key in DELTA2D:
        if key in enc:
            enc[key] = delta2d_encode(enc[key])
    return enc


def _params(params) -> dict[str, np.ndarray]:
    enc = {
        "alpha_id": params.alpha_id.astype(np.float32),
        "alpha_exp": params.alpha_exp.astype(np.float32),
        "beta": params.beta.astype(np.float32),
        "sh": np.asarray(params.sh, np.float32),
        "pose": np.asarray(params.pose, np.float32),
        "translation": np.asarray(params.translation, np.float32),
        "intrinsics": np.asarray(params.intrinsics, np.float32),
        "specular": np.array([params.specular_strength, params.shininess], np.float32),
        "index": np.int64(params.index),
    }
    if params.detail_weights is not None:
        enc["detail_weights"] = np.asarray(params.detail_weights, np.float32)
    return enc


def _encode_v3(params, out, layout: int, image_quality: int | None) -> dict[str, np.ndarray]:
    tri = np.asarray(out.tri_id)
    if is_jpeg(layout):
        if image_quality is None:
            raise ValueError(f"layout {layout} stores the image as JPEG: pass image_quality (the ShardWriter's)")
        image = jpeg_encode(out.image, image_quality)
    else:
        image = delta2d_encode(rct_encode(out.image) if layout >= 4 else out.image)
    enc = {
        "image": image,
        "mask": out.mask.astype(np.uint8),
        "landmarks": out.landmarks.astype(np.float32),
        "landmarks_visible": out.landmarks_visible.astype(np.uint8),
    }
    if ids_recomputed(layout):
        unstable = getattr(out, "tri_unstable", None)
        if unstable is None:
            raise ValueError(f"layout {layout} stores the ids of the unstable pixels only: encode a "
                             "render(params, maps=False, stable=True) output")
        if not np.array_equal(np.asarray(out.mask, bool), tri >= 0):
            raise ValueError("the render's mask differs from its triangle ids >= 0")
        keep = np.asarray(unstable, bool) & (tri >= 0)
        fix = np.zeros(tri.shape, np.uint32)  # id + 1 at the unstable face pixels (~1 %), 0 elsewhere
        fix[keep] = tri[keep] + 1
        enc["tri_fix"] = fix
        enc["tri_crc"] = np.uint32(ids_crc(tri))
    else:  # layout 3: 0 off the face
        enc["tri_id"] = row_delta_encode(tri) if layout >= 4 else delta2d_encode((tri + 1).astype(np.int32))
    enc.update(_params(params))
    return enc


def _encode_albedo(albedo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Linear albedo ``(H, W, 3)`` (0 off the face) -> sRGB uint8, encoding only the face pixels."""
    out = np.zeros(albedo.shape, np.uint8)
    out[mask] = linear_to_srgb_u8(albedo[mask])
    return out


def stored_for(keys, detail: bool, layout: int = LAYOUT_VERSION) -> tuple[str, ...]:
    """The stored datasets needed to decode ``keys`` (a subset of :data:`DECODED_KEYS`) of a shard
    of ``layout`` rendered with detail on (``detail=True``) or off. Raises ``ValueError`` naming an
    unknown key or one the shard cannot have (``depth_coarse`` / ``detail_weights`` with detail off)."""
    q = "depth_coarse" if detail else "depth"  # the quantised depth: its q > 0 is the mask
    out: list[str] = []
    for key in keys:
        if key not in DECODED_KEYS:
            raise ValueError(f"keys: unknown key {key!r}, expected some of {', '.join(DECODED_KEYS)}")
        if key in ("depth_coarse", "detail_weights") and not detail:
            raise ValueError(f"keys: {key!r} exists only in shards rendered with detail on")
        if key == "image" and is_jpeg(layout):
            out += [n for n in ("image", "image_span") if n not in out]
            continue
        if key == "tri_id" and layout < 3:
            raise ValueError(f"keys: 'tri_id' is stored from shard layout 3 on (this shard: layout {layout})")
        if layout >= 3:
            ids = list(IDS_STORED) if ids_recomputed(layout) else ["tri_id"]
            geometry = list(GEOMETRY_KEYS) + (["detail_weights"] if detail else [])
            if key in SURFACE_KEYS:
                need = ids + geometry
            elif key == "tri_id" and ids_recomputed(layout):
                need = ids + geometry
            else:
                need = [key]
        elif key == "depth":
            need = [q, "depth_offset", "depth_step"] + (["depth_detail"] if detail else [])
        elif key == "depth_coarse":
            need = [q, "depth_offset", "depth_step"]
        elif key in ("mask",):
            need = [q]
        elif key == "normals":
            need = ["normals", q]
        elif key == "specular" and layout == 1:
            need = []  # layout 1 had no specular term: decoded as zeros
        else:
            need = [key]
        out += [n for n in need if n not in out]
    return tuple(out)


def decode_sample(raw: dict[str, np.ndarray], keys=None, layout: int = LAYOUT_VERSION,
                  surface=None) -> dict[str, np.ndarray]:
    """Decoded arrays (docs/DESIGN.md keys) from the stored arrays of one sample of shard layout ``layout``.

    ``keys`` (default: all the sample has) limits the decoding to those keys; ``raw`` must then
    hold at least ``stored_for(keys, detail, layout)``. Each key decodes exactly as in the full decoding.

    Layouts 3 to 7: ``surface(raw, tri_id, maps=True)`` -> :class:`synth.render.SurfaceMaps` recomputes
    the maps (:data:`SURFACE_KEYS`; :class:`synth.shards.ShardReader` passes one built from the model);
    without it those keys raise ``ValueError`` and the full decoding leaves them out. Layouts 6 and 7
    recompute ``tri_id`` too: ``tri_id`` is then a :class:`StoredIds` (the surface rasterizes the ids and
    :func:`restore_ids` them), and ``maps=False`` when only the ids are wanted.
    """
    if layout not in READABLE_LAYOUTS:
        raise ValueError(f"layout {layout} cannot be decoded; readable layouts: {READABLE_LAYOUTS}")
    if layout >= 3:
        return _decode_v3(raw, keys, surface, layout)
    detail = "depth_coarse" in raw
    if keys is None:
        keys = [k for k in DECODED_KEYS if (k not in PARAMETER_KEYS or k in raw or (k == "specular" and layout == 1))
                and (k != "depth_coarse" or detail) and k != "tri_id"]
    wanted = set(keys)
    if not wanted <= _DECODED:
        stored_for(keys, detail)  # raises, naming the unknown key
    out: dict[str, np.ndarray] = {}
    if wanted & _NEED_MASK:
        q = delta2d_decode(raw["depth_coarse" if detail else "depth"])
        mask = q > 0
    if "depth" in wanted or "depth_coarse" in wanted:
        depth = decode_depth(q, float(raw["depth_offset"]), float(raw["depth_step"]))
        if detail:
            depth_coarse = depth
            if "depth" in wanted:
                depth = np.where(mask, depth_coarse + raw["depth_detail"].astype(np.float32)
                                 * np.float32(DETAIL_STEP_MM), 0.0).astype(np.float32)
    for key in keys:
        if key == "image":
            image = delta2d_decode(raw["image"])
            out[key] = image if layout >= 2 else linear_to_srgb_u8(image.astype(np.float32) / 255.0)
        elif key == "depth":
            out[key] = depth
        elif key == "depth_coarse":
            out[key] = depth_coarse
        elif key == "normals":
            normals = octahedral_decode(delta2d_decode(raw["normals"]))
            normals[~mask] = 0.0
            out[key] = normals
        elif key == "pncc":
            out[key] = delta2d_decode(raw["pncc"]).astype(np.float32) / 255.0
        elif key == "albedo":
            out[key] = srgb_u8_to_linear(raw["albedo"]) if layout >= 2 else raw["albedo"].astype(np.float32) / 255.0
        elif key == "specular" and layout == 1:
            out[key] = np.zeros(2, np.float32)
        elif key == "mask":
            out[key] = mask
        elif key == "landmarks_visible":
            out[key] = raw["landmarks_visible"].astype(bool)
        elif key == "index":
            out[key] = np.int64(raw["index"])
        else:  # landmarks and the parameters, stored as they are
            out[key] = raw[key]
    return out


def _decode_v3(raw: dict[str, np.ndarray], keys, surface, layout: int) -> dict[str, np.ndarray]:
    detail = "detail_weights" in raw
    if keys is None:
        keys = [k for k in DECODED_KEYS if (k not in PARAMETER_KEYS or k in raw) and (k != "depth_coarse" or detail)
                and (k not in SURFACE_KEYS or surface is not None)
                and (k != "tri_id" or surface is not None or not ids_recomputed(layout))]
    wanted = set(keys)
    if not wanted <= _DECODED:
        stored_for(keys, detail, layout)  # raises, naming the unknown key
    out: dict[str, np.ndarray] = {}
    tri = None
    maps = None
    want_maps = bool(wanted & set(SURFACE_KEYS))
    if ids_recomputed(layout) and ("tri_id" in wanted or want_maps):
        if surface is None:
            raise ValueError(f"keys {sorted(wanted & (set(SURFACE_KEYS) | {'tri_id'}))} of a layout-{layout} shard are "
                             "recomputed from the parameters and the morphable model: read them through "
                             "synth.shards.ShardReader (with model= for a model other than the built-in one)")
        maps = surface(raw, StoredIds.from_raw(raw, f"sample {int(raw['index'])}"), maps=want_maps)
        tri = maps.tri_id
    elif "tri_id" in wanted or want_maps:  # (H, W) int32, -1 off the face
        tri = row_delta_decode(raw["tri_id"]) if layout >= 4 else delta2d_decode(raw["tri_id"]) - 1
        if want_maps:
            if surface is None:
                raise ValueError(f"keys {sorted(wanted & set(SURFACE_KEYS))} of a layout-{layout} shard are "
                                 "recomputed from the triangle ids and the morphable model: read them through "
                                 "synth.shards.ShardReader (with model= for a model other than the built-in one)")
            maps = surface(raw, tri)
    for key in keys:
        if key == "image":
            if is_jpeg(layout):
                out[key] = jpeg_decode(raw["image"])
            else:
                image = delta2d_decode(raw["image"])
                out[key] = rct_decode(image) if layout >= 4 else image
        elif key == "mask":
            out[key] = raw["mask"].astype(bool)
        elif key == "tri_id":
            out[key] = tri
        elif key in SURFACE_KEYS:
            out[key] = getattr(maps, key)
        elif key == "landmarks_visible":
            out[key] = raw["landmarks_visible"].astype(bool)
        elif key == "index":
            out[key] = np.int64(raw["index"])
        else:  # landmarks and the parameters, stored as they are
            out[key] = raw[key]
    return out
