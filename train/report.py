"""Pictures and pages of reconstructions: shaded views, the overlay on the photo, the side-by-side
comparison, the turntable GIF and the folder's ``index.html``.

Every picture is drawn by :class:`synth.render.MeshRenderer` (the renderer's triangle ids and
per-pixel shading) with a grey "clay" material and a fixed light (:data:`DISPLAY_SH`: soft ambient
plus a key light from the upper left, in front), so what shows is the geometry, not the photo's
colours. Shading is computed in linear light and encoded to sRGB for display
(:mod:`synth.color`, like the renders); photo colours are decoded from sRGB first.

* ``overlay``: the photo (scaled to at most ``overlay_max_side`` on its longer side) with the
  shaded mesh (detailed when the fine stage ran) blended over it, seen from the photo's camera;
* ``compare``: ``photo | coarse shaded | detailed shaded | detail map`` in the crop's view (with
  ``--no-fine``: ``photo | coarse shaded | coarse in the photo's colours``); the detail map is the
  height FineNet added toward the viewer, ``coarse depth - refined depth`` in mm, red = raised,
  blue = sunk, on a symmetric scale written under it;
* ``turntable``: the detailed (else coarse) mesh turning about the vertical axis through its
  centroid, one swing ``0 -> +60 -> 0 -> -60`` degrees of yaw, a looping GIF;
* ``index.html`` (:func:`write_index`): every reconstruction in the folder (each ``<name>.json``
  whose ``format`` is :data:`RESULT_FORMAT`) with its compare image, turntable
  and links to its files; plain HTML and inline CSS, nothing fetched from the network; every file
  name and path written into it is HTML-escaped (and URL-quoted in links), so a photo named
  ``<script>...`` shows as text.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synth import camera, framing
from synth.color import linear_to_srgb_u8, srgb_u8_to_linear
from synth.lighting import ambient_sh, directional_sh

__all__ = ["RESULT_FORMAT", "DISPLAY_SH", "BACKGROUND", "clay_view", "detail_map", "compare_image", "overlay_image",
           "turntable_frames", "face_pictures", "write_index", "write_page", "faces_html", "skipped_html"]

log = logging.getLogger(__name__)

RESULT_FORMAT = "detailface-reconstruction"
"""``format`` key of every ``<name>.json`` that :mod:`train.reconstruct` writes; the index page lists
the JSON files of its folder that carry it."""

DISPLAY_SH = (ambient_sh([0.06] * 3) + directional_sh([-0.6, 0.5, 0.62], [0.55] * 3)).astype(np.float32)
"""(9, 3) irradiance SH of the pictures (linear light): ambient 0.06 plus a key light of 0.55 from the
upper left in front (camera frame; direction toward the light). On the clay, in sRGB: about 0.2
where only the ambient reaches, 0.6 facing the camera, 0.77 facing the light."""

TEXTURE_SH = (ambient_sh([0.8] * 3) + directional_sh([-0.6, 0.5, 0.62], [0.25] * 3)).astype(np.float32)
"""(9, 3) light of meshes drawn in the photo's colours, which already hold the photo's shading: mostly ambient."""

CLAY = 0.85
"""Grey albedo of the clay material."""

BACKGROUND = (46, 46, 46)
"""Background of the panels and turntable frames (RGB)."""

OVERLAY_ALPHA = 0.75
"""Weight of the shaded mesh over the photo in the overlay."""

TURNTABLE_YAW_DEG = 60.0
TURNTABLE_MS = 80  # per frame

_CAPTION = 20  # pixels of the caption strip under each compare panel


def _scaled(k: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Intrinsics of an image resized by ``sx`` (``sy``) per axis (continuous pixel convention)."""
    out = np.array(k, np.float64)
    out[0] *= sx
    out[1] *= sx if sy is None else sy
    return out


def clay_view(renderer, verts_cam: np.ndarray, intrinsics: np.ndarray, size: int, colors: np.ndarray | None = None,
              projection: str = "perspective", background=BACKGROUND,
              normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, mask (H, W) bool)`` (``size``: an int or ``(H, W)``): the mesh shaded with
    :data:`DISPLAY_SH`, grey clay (or ``colors (N, 3)`` uint8), over ``background``
    (``normals``: the vertex normals when known, see :meth:`synth.render.MeshRenderer.render`)."""
    if colors is None:
        albedo, sh = np.full((len(verts_cam), 3), CLAY, np.float32), DISPLAY_SH
    else:
        albedo, sh = srgb_u8_to_linear(np.asarray(colors, np.uint8)), TEXTURE_SH
    out = renderer.render(verts_cam, intrinsics, size, sh, albedo, projection, normals=normals)
    img = np.empty(out.mask.shape + (3,), np.uint8)
    img[...] = np.asarray(background, np.uint8)
    img[out.mask] = linear_to_srgb_u8(out.image[out.mask])
    return img, out.mask


def detail_map(depth_coarse: np.ndarray, depth_refined: np.ndarray, mask: np.ndarray, size: int,
               background=BACKGROUND) -> tuple[np.ndarray, float]:
    """``(image (size, size, 3) uint8, half range mm)``: the added height ``coarse - refined`` (mm,
    toward the viewer) in a diverging colour map (red raised, blue sunk), symmetric about 0 at
    +-(99th percentile of its magnitude, at least 0.05 mm)."""
    h = np.where(mask, depth_coarse - depth_refined, 0.0)
    a = float(np.percentile(np.abs(h[mask]), 99)) if mask.any() else 0.0
    a = max(a, 0.05)
    rgba = matplotlib.colormaps["RdBu_r"](np.clip(0.5 + 0.5 * h / a, 0.0, 1.0))  # (S, S, 4) in [0, 1]
    img = np.empty(h.shape + (3,), np.uint8)
    img[...] = np.asarray(background, np.uint8)
    img[mask] = np.round(rgba[mask][:, :3] * 255.0).astype(np.uint8)
    if img.shape[0] != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return img, a


def _strip(panels: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """Panels side by side, each with its caption underneath."""
    size = panels[0][0].shape[0]
    font = ImageFont.load_default(size=13)
    canvas = Image.new("RGB", (size * len(panels), size + _CAPTION), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (img, caption) in enumerate(panels):
        canvas.paste(Image.fromarray(img), (i * size, 0))
        draw.text((i * size + size / 2, size + _CAPTION / 2), caption, fill=(230, 230, 230), font=font, anchor="mm")
    return np.asarray(canvas)


def _normals(renderer, result) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertex normals of the coarse and the detailed mesh (None without one), computed once per face."""
    coarse = renderer.vertex_normals(result.vertices_cam)
    return coarse, None if result.vertices_detailed is None else renderer.vertex_normals(result.vertices_detailed)


def compare_image(result, rgb: np.ndarray, renderer, view_size: int, projection: str = "perspective",
                  normals: tuple | None = None) -> np.ndarray:
    """``photo | coarse shaded | detailed shaded | detail map`` (``--no-fine``: ``photo | coarse
    shaded | coarse in the photo's colours``) in the crop's view, ``view_size`` pixels per panel."""
    face = result.face
    k = _scaled(face.intrinsics, view_size / face.size)
    photo = framing.crop_image(rgb, face.crop, view_size, resample="bilinear", fill=BACKGROUND[0])
    n_coarse, n_detailed = _normals(renderer, result) if normals is None else normals
    coarse, _ = clay_view(renderer, result.vertices_cam, k, view_size, projection=projection, normals=n_coarse)
    panels = [(photo, "photo"), (coarse, "coarse")]
    if result.vertices_detailed is not None:
        detailed, _ = clay_view(renderer, result.vertices_detailed, k, view_size, projection=projection,
                                normals=n_detailed)
        dmap, a = detail_map(result.depth_coarse, result.depth, result.mask, view_size)
        panels += [(detailed, "detailed"), (dmap, f"detail (+-{a:.2f} mm)")]
    else:
        textured, _ = clay_view(renderer, result.vertices_cam, k, view_size, colors=result.colors, projection=projection,
                                normals=n_coarse)
        panels += [(textured, "coarse, photo colours")]
    return _strip(panels)


def overlay_image(result, rgb: np.ndarray, renderer, max_side: int, projection: str = "perspective",
                  normals: tuple | None = None) -> np.ndarray:
    """The photo scaled to at most ``max_side`` pixels on its longer side, with the shaded mesh
    (detailed when there is one) blended over it (weight :data:`OVERLAY_ALPHA`) from the photo's camera."""
    h, w = rgb.shape[:2]
    f = min(1.0, max_side / max(h, w))
    w2, h2 = max(1, round(w * f)), max(1, round(h * f))
    photo = rgb if (w2, h2) == (w, h) else np.asarray(
        Image.fromarray(rgb).resize((w2, h2), Image.Resampling.LANCZOS, reducing_gap=3.0))
    k = _scaled(result.face.photo_intrinsics, w2 / w, h2 / h)
    verts = result.vertices_detailed if result.vertices_detailed is not None else result.vertices_cam
    n_coarse, n_detailed = _normals(renderer, result) if normals is None else normals
    shaded, mask = clay_view(renderer, verts, k, (h2, w2), projection=projection,
                             normals=n_detailed if result.vertices_detailed is not None else n_coarse)
    out = photo.astype(np.float32)
    out[mask] = (1.0 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * shaded[mask]
    return np.round(out).astype(np.uint8)


def turntable_frames(renderer, verts_cam: np.ndarray, intrinsics: np.ndarray, size: int, n_frames: int,
                     projection: str = "perspective", max_yaw_deg: float = TURNTABLE_YAW_DEG) -> list[np.ndarray]:
    """``n_frames`` views ``(size, size, 3)`` uint8 of the mesh turned about the camera's vertical
    axis through its centroid by ``max_yaw_deg * sin(2 pi t / n_frames)``."""
    pivot = verts_cam.mean(axis=0)  # (3,)
    normals = renderer.vertex_normals(verts_cam)  # a rigid turn rotates them: computed once
    frames = []
    for t in range(n_frames):
        yaw = math.radians(max_yaw_deg) * math.sin(2.0 * math.pi * t / n_frames)
        rot = camera.rotation_matrix(np.array([yaw, 0.0, 0.0]))  # Ry(yaw), camera frame
        turned = (verts_cam - pivot) @ rot.T + pivot  # (N, 3) @ (3, 3)^T
        frames.append(clay_view(renderer, turned, intrinsics, size, projection=projection,
                                normals=normals @ rot.T.astype(np.float32))[0])
    return frames


def _save_png(img: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(img).save(path, format="PNG")


def _save_gif(frames: list[np.ndarray]) -> Callable[[Path], None]:
    grey = all(np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 0], f[..., 2]) for f in frames)

    def write(path: Path) -> None:  # grey clay frames as 8-bit grey: exact, no palette search
        ims = [Image.fromarray(f[..., 0] if grey else f) for f in frames]
        ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=TURNTABLE_MS, loop=0)

    return write


def face_pictures(result, rgb: np.ndarray, renderer, view_size: int = 256, n_frames: int = 24,
                  overlay_max_side: int = 1024, projection: str = "perspective") -> dict[str, Callable[[Path], None]]:
    """The pictures of one reconstruction, drawn now: ``{"overlay", "compare", "turntable"}`` ->
    a function writing that file (PNG, PNG, GIF) to the path it is given."""
    verts = result.vertices_detailed if result.vertices_detailed is not None else result.vertices_cam
    k = _scaled(result.face.intrinsics, view_size / result.face.size)
    normals = _normals(renderer, result)
    return {
        "overlay": _save_png(overlay_image(result, rgb, renderer, overlay_max_side, projection, normals)),
        "compare": _save_png(compare_image(result, rgb, renderer, view_size, projection, normals)),
        "turntable": _save_gif(turntable_frames(renderer, verts, k, view_size, n_frames, projection)),
    }


# ------------------------------------------------------------------------------ pages
_CSS = """
body { font-family: sans-serif; margin: 2em; background: #f4f4f4; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin: 0 0 .4em 0; word-break: break-all; }
.face { background: #fff; border-radius: 6px; padding: 1em; margin-bottom: 1.5em; box-shadow: 0 1px 3px #0002; }
.pics { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.pics img { max-width: 100%; border-radius: 3px; }
.meta { color: #555; font-size: .9em; margin: .3em 0; word-break: break-all; }
.links a { margin-right: .8em; } table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
.skipped li { word-break: break-all; }
"""


def _e(text) -> str:
    """HTML-escaped text (also safe inside a quoted attribute)."""
    return html.escape(str(text), quote=True)


def _href(name: str, base: str = "") -> str:
    """A relative link to file ``name`` of the folder ``base`` (``""``: the page's own folder, else
    e.g. ``"reconstruct/"``): the name URL-quoted, then all escaped for the attribute."""
    return _e(base + urllib.parse.quote(name, safe=""))


def _results(out: Path) -> list[dict]:
    docs = []
    for p in sorted(out.glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("format") == RESULT_FORMAT:
            docs.append(d)
    return docs


def _face_section(d: dict, base: str = "") -> str:
    files = d.get("files", {})
    name = d.get("name", "?")
    pics = []
    if "compare" in files:
        pics.append(f'<img src="{_href(files["compare"], base)}" alt="{_e(name)}: comparison">')
    if "turntable" in files:
        pics.append(f'<img src="{_href(files["turntable"], base)}" alt="{_e(name)}: turntable">')
    labels = [("coarse_obj", "coarse OBJ"), ("coarse_ply", "coarse PLY"), ("detailed_obj", "detailed OBJ"),
              ("detailed_ply", "detailed PLY"), ("depth", "depth PNG"), ("overlay", "overlay"), ("json", "JSON")]
    files = {**files, "json": f"{name}.json"}
    links = " ".join(f'<a href="{_href(files[k], base)}">{label}</a>' for k, label in labels if k in files)
    pose = d.get("params", {}).get("pose_deg", {})
    total = sum(v for k, v in d.get("timings_ms", {}).items() if k != "pictures")
    meta = (f"photo {_e(d.get('photo', '?'))} &middot; face {_e(d.get('face_index', 0))} &middot; "
            f"yaw {pose.get('yaw', 0):.1f}&deg; pitch {pose.get('pitch', 0):.1f}&deg; roll {pose.get('roll', 0):.1f}&deg; "
            f"&middot; fine stage: {'yes' if d.get('fine', {}).get('used') else 'no'} &middot; {total:.0f} ms")
    return (f'<div class="face"><h2>{_e(name)}</h2><div class="meta">{meta}</div>'
            f'<div class="pics">{"".join(pics)}</div><div class="links">{links}</div></div>')


def write_page(path: Path, title: str, body: str) -> Path:
    """A self-contained HTML page (inline CSS) at ``path``; ``body`` is trusted markup (escape
    anything user-supplied in it with :func:`html.escape`)."""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{_e(title)}</h1>\n{body}\n</body></html>\n")
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def faces_html(out: Path, base: str = "") -> str:
    """The sections of every reconstruction in folder ``out``, for a page in ``out`` (``base=""``)
    or in the folder above it (``base="<out's name>/"``)."""
    docs = _results(out)
    if not docs:
        return "<p>No reconstructions in this folder.</p>"
    return "\n".join(_face_section(d, base) for d in docs)


def skipped_html(skipped: Iterable[tuple[Path, str]]) -> str:
    skipped = list(skipped)
    if not skipped:
        return ""
    items = "".join(f"<li>{_e(p)}: {_e(r)}</li>" for p, r in skipped)
    return f'<h2>Skipped in the last run</h2><ul class="skipped">{items}</ul>'


def write_index(out: str | os.PathLike, skipped: Iterable[tuple[Path, str]] = (),
                title: str = "detailface reconstructions") -> Path:
    """``out/index.html``: every reconstruction in ``out`` and the files skipped by the last run."""
    out = Path(out)
    n = len(_results(out))
    body = (f'<p class="meta">{n} reconstruction{"s" * (n != 1)}; meshes are in the photo camera\'s frame '
            "(mm); open the OBJ/PLY files in any mesh viewer.</p>\n" + faces_html(out) + "\n" + skipped_html(skipped))
    return write_page(out / "index.html", title, body)
