"""Render one synthetic sample: pyrender (headless OSMesa by default, EGL optional) + numpy.

How a sample is rendered
------------------------
1. Geometry (numpy): coarse vertices and albedo from the model (one GEMM per block of samples,
   :meth:`FaceRenderer.model_arrays`), optional detail displacement along the coarse
   vertex normals, vertex normals, transform to the camera frame ``p = R v + t``.
2. ONE triangle-id pass in pyrender's GL context (OSMesa or EGL, created and owned by
   ``pyrender.OffscreenRenderer``): the indexed mesh drawn by a two-line GLSL program writing
   ``gl_PrimitiveID + 1`` into an ``R32UI`` target of its own single-sample framebuffer, back faces
   culled, depth test ``GL_LESS``; one ``glReadPixels`` of that target is the triangle-id image.
   Context, program and buffers are created once; per sample only the vertex positions ``(N, 3)``
   are uploaded and the projection set. ``id_pass="flat_colors"`` selects the previous pass
   (pyrender's FLAT pipeline, vertices de-indexed, one 24-bit colour ``id + 1`` per triangle), kept
   as a second implementation the tests compare against.
3. Per pixel (numpy): exact barycentrics of the pixel centre in its triangle (perspective-correct,
   equivalent to the ray-triangle intersection of the camera model), then depth, normals, PNCC,
   albedo and the shading are interpolated / computed **per pixel**:
   ``image = clip(albedo * (sh_basis(normal) @ sh), 0, 1)`` (:func:`synth.lighting.shade`,
   the same function the training loss uses), composited over the background.

Depth is camera-space ``-p_z`` in millimetres, 0 off the face. ``depth_coarse`` (detail on) is the
depth of the model-only (coarse) version of the triangle hit by the pixel ray. Images have hard
(aliased) edges: the maps are exact per pixel, which is what the training targets need.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np

if not hasattr(np, "infty"):  # pyrender 0.1.45 still uses np.infty, removed in numpy 2
    np.infty = np.inf

from morphable_model.geometry import vertex_normals

from . import camera as cam
from .detail import DetailBank, apply_detail, build_detail_bank, displacement
from .lighting import shade
from .sampling import SampleParams

log = logging.getLogger(__name__)

PLATFORMS = ("osmesa", "egl")
# triangle-id pass: "primitive_id" = own GLSL program writing gl_PrimitiveID + 1 into an R32UI target,
# indexed mesh (default, fast); "flat_colors" = pyrender's FLAT pipeline on de-indexed vertices with
# one colour per triangle (the original path, kept as a second implementation and tested against it)
ID_PASSES = ("primitive_id", "flat_colors")
GEOMETRY_BATCH = 16  # samples per model-evaluation GEMM (fixed: results do not depend on the batching)
LANDMARK_DEPTH_TOL_MM = 5.0  # a landmark is hidden if the surface around its pixel is this much in front


@dataclasses.dataclass
class RenderOutput:
    """Per-sample maps (H = W = size) and 2-D landmarks; see docs/DESIGN.md for the conventions."""

    image: np.ndarray  # (H, W, 3) uint8, linear RGB over the background
    depth: np.ndarray  # (H, W) float32 mm, 0 off-face
    depth_coarse: np.ndarray | None  # (H, W) float32 mm, model-only geometry (detail on)
    normals: np.ndarray  # (H, W, 3) float32 unit, camera frame, 0 off-face
    pncc: np.ndarray  # (H, W, 3) float32 [0, 1], 0 off-face
    albedo: np.ndarray  # (H, W, 3) float32 [0, 1], 0 off-face
    mask: np.ndarray  # (H, W) bool, pixels covered by the face mesh
    landmarks: np.ndarray  # (68, 2) float32 pixel (u, v)
    landmarks_visible: np.ndarray  # (68,) bool
    tri_id: np.ndarray  # (H, W) int32 triangle index, -1 off-face (not stored in shards)


# ------------------------------------------------------------------------------ geometry helpers
def vertex_normals_fast(vertices: np.ndarray, triangles: np.ndarray, incidence=None) -> np.ndarray:
    """Area-weighted unit vertex normals ``(N, 3)`` float32: :func:`morphable_model.geometry.vertex_normals`
    (the one implementation; per-coordinate gathers and one sparse product) on float32 vertices.
    ``incidence``: the cached ``(N, T)`` vertex-face matrix (``MorphableModel.incidence``)."""
    return vertex_normals(np.asarray(vertices, dtype=np.float32), triangles, incidence=incidence)


def _screen_weights(pixels_uv: np.ndarray, tri_uv: np.ndarray) -> np.ndarray:
    """Unclipped screen-space barycentric weights ``(P, 3)`` of pixel points ``(P, 2)`` in the
    projected triangles ``tri_uv (P, 3, 2)`` (degenerate triangles: area clamped to 1e-12)."""
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]
    ab, ac, ap = b - a, c - a, pixels_uv - a
    den = ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]
    den = np.where(np.abs(den) > 1e-12, den, 1e-12)
    l1 = (ap[:, 0] * ac[:, 1] - ap[:, 1] * ac[:, 0]) / den
    l2 = (ab[:, 0] * ap[:, 1] - ab[:, 1] * ap[:, 0]) / den
    return np.stack([1.0 - l1 - l2, l1, l2], axis=-1)  # (P, 3)


def barycentrics(pixels_uv: np.ndarray, tri_uv: np.ndarray, tri_depth: np.ndarray, kind: str):
    """Barycentrics ``(P, 3)`` and depth ``(P,)`` of pixel points ``(P, 2)`` in triangles.

    ``tri_uv (P, 3, 2)`` are the projected corners, ``tri_depth (P, 3)`` their depths. For
    perspective the screen-space weights ``l`` are corrected (``w_k = l_k / d_k``, depth
    ``1 / sum(w)``), which equals intersecting the pixel ray with the 3-D triangle; for weak
    perspective screen-space weights are already 3-D weights and depth is interpolated linearly.
    """
    lam = _screen_weights(pixels_uv, tri_uv)  # (P, 3)
    # the GPU and numpy may disagree by a hair on which triangle owns an edge pixel
    lam = np.clip(lam, 0.0, 1.0)
    lam /= lam.sum(axis=-1, keepdims=True)
    if kind == "perspective":
        w = lam / tri_depth
        depth = 1.0 / w.sum(axis=-1)
        return w * depth[:, None], depth
    return lam, (lam * tri_depth).sum(axis=-1)


def rasterize_reference(verts_cam: np.ndarray, triangles: np.ndarray, intrinsics: np.ndarray, size: int,
                        kind: str = "perspective") -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious z-buffer rasterizer (loops over triangles) -> ``tri_id (H, W)`` int32 (-1 off),
    ``depth (H, W)`` float32 (0 off). Back faces are culled, pixel centres sampled. For tests."""
    uv, d = cam.project(np.asarray(verts_cam, np.float64), np.asarray(intrinsics, np.float64), kind)
    tri_id = np.full((size, size), -1, np.int32)
    zbuf = np.full((size, size), np.inf)
    for k, (i0, i1, i2) in enumerate(np.asarray(triangles)):
        p = uv[[i0, i1, i2]]  # (3, 2)
        # front-facing: counter-clockwise in camera (x right, y up) = clockwise in (u, v down)
        area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        if area >= 0:
            continue
        j0, j1 = max(int(np.floor(p[:, 0].min() - 0.5)), 0), min(int(np.ceil(p[:, 0].max() - 0.5)), size - 1)
        i0_, i1_ = max(int(np.floor(p[:, 1].min() - 0.5)), 0), min(int(np.ceil(p[:, 1].max() - 0.5)), size - 1)
        for i in range(i0_, i1_ + 1):
            for j in range(j0, j1 + 1):
                q = np.array([j + 0.5, i + 0.5])
                e = [(p[(m + 1) % 3, 0] - p[m, 0]) * (q[1] - p[m, 1]) - (p[(m + 1) % 3, 1] - p[m, 1]) * (q[0] - p[m, 0])
                     for m in range(3)]
                if not all(x <= 0 for x in e):
                    continue
                lam, z = barycentrics(q[None], p[None], d[[i0, i1, i2]][None], kind)
                if z[0] < zbuf[i, j]:
                    zbuf[i, j] = z[0]
                    tri_id[i, j] = k
    depth = np.where(np.isfinite(zbuf), zbuf, 0.0).astype(np.float32)
    return tri_id, depth


# ------------------------------------------------------------------------------ backgrounds
def noise_texture(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Smooth multi-octave coloured value noise ``(size, size, 3)`` float32 in [0, 1]
    (computed at a quarter of the resolution, then bilinearly upsampled)."""
    small = max(size // 4, 4)
    tex = _value_noise(rng, small, base)
    if small == size:
        return tex
    from PIL import Image

    channels = [np.asarray(Image.fromarray(tex[..., c], mode="F").resize((size, size), Image.BILINEAR))
                for c in range(3)]
    return np.stack(channels, axis=-1)


def _value_noise(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    out = np.zeros((size, size, 3), np.float32)
    x = (np.arange(size) + 0.5) / size
    total = 0.0
    for octave in range(4):
        g = 3 * 2 ** octave
        grid = rng.uniform(-1, 1, (g + 1, g + 1, 3)).astype(np.float32)
        t = x * g
        i = np.minimum(t.astype(int), g - 1)
        f = (t - i).astype(np.float32)
        # bilinear interpolation, rows then columns: (g+1, g+1, 3) -> (size, g+1, 3) -> (size, size, 3)
        rows = grid[i] * (1 - f)[:, None, None] + grid[i + 1] * f[:, None, None]
        img = rows[:, i] * (1 - f)[None, :, None] + rows[:, i + 1] * f[None, :, None]
        amp = 0.5 ** octave
        out += amp * img
        total += amp
    return np.clip(np.asarray(base, np.float32) + 0.35 * out / total, 0.0, 1.0)


class _ImageFolder:
    """Background images from a folder (sorted list, small decode cache)."""

    EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

    def __init__(self, folder: str):
        p = Path(folder)
        if not p.is_dir():
            raise ValueError(f"--background-dir {folder!r} is not a directory")
        self.files = sorted(f for f in p.rglob("*") if f.suffix.lower() in self.EXTENSIONS)
        if not self.files:
            raise ValueError(f"--background-dir {folder!r} holds no images ({', '.join(self.EXTENSIONS)})")
        self._load = functools.lru_cache(maxsize=32)(self._load_uncached)

    @staticmethod
    def _load_uncached(path: Path):
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        from PIL import Image

        im = self._load(self.files[int(rng.integers(len(self.files)))])
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        return np.asarray(crop, np.float32) / 255.0


def paint_occluders(image: np.ndarray, occluders) -> None:
    """Paint flat ellipses/rectangles (``synth.sampling.Occluder``) into ``image (H, W, 3)`` float in place."""
    if not occluders:
        return
    size = image.shape[0]
    c = np.arange(size) + 0.5
    uu, vv = np.meshgrid(c, c)
    for o in occluders:
        du, dv = uu - o.center[0], vv - o.center[1]
        ca, sa = np.cos(o.angle), np.sin(o.angle)
        a = (ca * du + sa * dv) / o.half_size[0]
        b = (-sa * du + ca * dv) / o.half_size[1]
        inside = (a * a + b * b <= 1.0) if o.kind == "ellipse" else ((np.abs(a) <= 1) & (np.abs(b) <= 1))
        image[inside] = o.color


# ------------------------------------------------------------------------------ the renderer
@dataclasses.dataclass
class _Geometry:
    """Per-sample geometry (see :meth:`FaceRenderer.geometry`)."""

    verts_cam: np.ndarray  # (N, 3) float32, drawn (detailed) surface, camera frame
    coarse_cam: np.ndarray | None  # (N, 3) float32 model-only surface (detail on)
    normals_cam: np.ndarray  # (N, 3) float32 unit vertex normals of the drawn surface
    albedo: np.ndarray  # (N, 3) float32 in [0, 1]


class FaceRenderer:
    """Renders :class:`~synth.sampling.SampleParams` of one model at one size; reuse it for many samples.

    ``platform``: ``osmesa`` (default, software) or ``egl`` (GPU, headless). The OpenGL platform is
    chosen by ``PYOPENGL_PLATFORM`` when pyrender is first imported in the process; asking for a
    different one afterwards raises ``ValueError``.
    """

    def __init__(self, model, size: int = 224, platform: str = "osmesa", detail_bank: DetailBank | None = None,
                 background_dir: str | None = None, id_pass: str = "primitive_id"):
        if platform not in PLATFORMS:
            raise ValueError(f"--platform must be one of {PLATFORMS}, got {platform!r}")
        if id_pass not in ID_PASSES:
            raise ValueError(f"id_pass must be one of {ID_PASSES}, got {id_pass!r}")
        self.id_pass = id_pass
        if int(size) != size or size < 8:
            raise ValueError(f"--size must be an integer >= 8, got {size!r}")
        current = os.environ.get("PYOPENGL_PLATFORM", "osmesa")
        if current != platform:
            import sys

            if "OpenGL" in sys.modules:
                raise ValueError(f"OpenGL already initialised for {current!r}; cannot render with {platform!r} "
                                 "in this process")
            os.environ["PYOPENGL_PLATFORM"] = platform
        self.model = model
        self.size = int(size)
        self.triangles = np.ascontiguousarray(model.triangles, dtype=np.int64)
        self.n_tri = self.triangles.shape[0]
        if self.n_tri >= 2 ** 24 - 1:
            raise ValueError(f"model has {self.n_tri} triangles; the id pass supports < 2^24")
        self._corner_index = self.triangles.reshape(-1)
        self._tri_cols = tuple(np.ascontiguousarray(self.triangles[:, j]) for j in range(3))
        self._incidence = model.incidence  # (N, T) sparse, cached on the model
        self._detail_bank = detail_bank
        self._pncc = np.asarray(model.pncc_colors, np.float32)
        self._attrs = np.zeros((model.n_vertices, 9), np.float32)  # interpolation buffer, see render()
        self._attrs[:, 6:9] = self._pncc
        self._mean_normals = vertex_normals_fast(model.mean_shape, self.triangles, self._incidence)
        self._landmarks = None if model.landmarks is None else np.asarray(model.landmarks)
        self._images = _ImageFolder(background_dir) if background_dir else None
        c = np.arange(self.size) + 0.5
        self._pixel_u, self._pixel_v = np.meshgrid(c, c)  # (H, W) pixel-centre coordinates
        self.timings = {"geometry": 0.0, "render": 0.0, "post": 0.0}
        self._gl = None
        self._bases = None

    # -------------------------------------------------------------------------- GL setup
    def _setup_gl(self) -> None:
        if self.id_pass == "flat_colors":
            self._setup_gl_flat()
            return
        import pyrender
        from OpenGL import GL

        # pyrender owns the (OSMesa / EGL) context; the id pass draws with its own program and framebuffer
        renderer = pyrender.OffscreenRenderer(self.size, self.size)
        renderer._platform.make_current()
        self._gl = {"GL": GL, "renderer": renderer, "camera": _MatrixCamera(),
                    "pass": _PrimitiveIdPass(self.size, self.triangles, self.model.n_vertices)}

    def _setup_gl_flat(self) -> None:
        import pyrender
        from OpenGL import GL

        ids = np.arange(1, self.n_tri + 1, dtype=np.int64)
        rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.float32) / 255.0
        color = np.concatenate([np.repeat(rgb, 3, axis=0), np.ones((3 * self.n_tri, 1), np.float32)], axis=1)
        positions = np.zeros((3 * self.n_tri, 3), np.float32)
        positions[:, 2] = -1e3  # placeholder, overwritten before each draw
        material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[1.0, 1.0, 1.0, 1.0], doubleSided=False)
        prim = pyrender.Primitive(positions=positions, color_0=color, mode=pyrender.constants.GLTF.TRIANGLES,
                                  material=material)
        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.0, 0.0, 0.0])
        scene.add(pyrender.Mesh([prim]))
        camera = _MatrixCamera()
        scene.add(camera, pose=np.eye(4))
        renderer = pyrender.OffscreenRenderer(self.size, self.size)
        flags = pyrender.RenderFlags.FLAT
        renderer.render(scene, flags)  # creates the context, buffers and framebuffers
        _disable_msaa(renderer)
        # interleaved vertex buffer layout of pyrender (no normals): position (3), colour (4)
        interleaved = np.ascontiguousarray(np.concatenate([positions, color], axis=1), dtype=np.float32)
        self._gl = {"GL": GL, "renderer": renderer, "pass": None, "scene": scene, "camera": camera, "prim": prim,
                    "flags": flags, "buffer": interleaved}

    def warm_up(self, detail: bool = True) -> None:
        """Create the GL context/buffers (and the detail bank) now rather than on the first sample."""
        if self._gl is None:
            self._setup_gl()
        if detail and self._detail_bank is None:
            self._detail_bank = build_detail_bank(self.model)
        self._model_bases()

    def close(self) -> None:
        """Free the GL context (the renderer cannot be used afterwards)."""
        if self._gl is not None:
            if self._gl["pass"] is not None:
                self._gl["renderer"]._platform.make_current()
                self._gl["pass"].delete()
            self._gl["renderer"].delete()
            self._gl = None

    def __enter__(self) -> "FaceRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def render_ids(self, verts_cam: np.ndarray, intrinsics: np.ndarray, kind: str) -> np.ndarray:
        """Triangle-id image ``(H, W)`` int32 (-1 off-mesh) of camera-frame vertices ``(N, 3)``."""
        if self._gl is None:
            self._setup_gl()
        g = self._gl
        GL = g["GL"]
        depth = -verts_cam[:, 2]
        if depth.min() <= 0:
            raise ValueError("every vertex must be in front of the camera (p_z < 0)")
        g["camera"].set(intrinsics, kind, self.size, znear=0.5 * float(depth.min()), zfar=2.0 * float(depth.max()) + 1.0)
        if g["pass"] is not None:
            g["renderer"]._platform.make_current()
            return g["pass"].draw(verts_cam, g["camera"].get_projection_matrix())
        buf = g["buffer"]
        corners = self._corner_index  # (3T,): corner k of triangle i at row 3i + k
        for c in range(3):  # per coordinate: 1-D gathers into the strided column are ~6x faster
            buf[:, c] = verts_cam[:, c][corners]
        renderer = g["renderer"]
        renderer._platform.make_current()
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, g["prim"]._buffers[0])
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, buf.nbytes, buf)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
        if renderer._platform.supports_framebuffers():  # EGL: pyrender's own offscreen path
            color, _ = renderer.render(g["scene"], g["flags"])
        else:  # OSMesa: draw and read back only the colour buffer (the GL depth is not needed)
            renderer._renderer.render(g["scene"], g["flags"])
            color = renderer._renderer.read_color_buf()
        c = color.astype(np.int32)
        return (c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16)) - 1

    # -------------------------------------------------------------------------- one sample
    def _model_bases(self):
        """Per-model float32 bases scaled by the standard deviations, stored transposed ``(K, 3N)``
        (C-contiguous) so that one GEMM ``(B, K) @ (K, 3N)`` evaluates a whole batch."""
        if self._bases is None:
            m = self.model
            shape = np.concatenate([np.asarray(m.id_basis, np.float32) * np.asarray(m.id_std, np.float32),
                                    np.asarray(m.exp_basis, np.float32) * np.asarray(m.exp_std, np.float32)],
                                   axis=1)  # (3N, Kid + Kexp)
            albedo = np.asarray(m.albedo_basis, np.float32) * np.asarray(m.albedo_std, np.float32)  # (3N, Ka)
            self._bases = (np.ascontiguousarray(shape.T), np.asarray(m.mean_shape, np.float32).reshape(-1),
                           np.ascontiguousarray(albedo.T), np.asarray(m.albedo_mean, np.float32).reshape(-1))
        return self._bases

    def model_arrays(self, params_list) -> list[tuple[np.ndarray, np.ndarray]]:
        """Coarse vertices and clipped per-vertex albedo, ``(N, 3)`` float32 each, of up to
        ``GEOMETRY_BATCH`` samples, evaluated as ONE padded GEMM per model part (the bases are read
        once for the batch; the GEMM is memory bound, so this is ~B times cheaper than B GEMVs).

        The batch is always padded to ``GEOMETRY_BATCH`` columns, so a sample's values do not depend
        on the batch it is evaluated in (its position, its neighbours or the batch length; tested):
        ``render(p)`` alone and the dataset's aligned batches give identical bits. Same values as
        ``model.shape``/``model.albedo`` up to float32 rounding."""
        params_list = list(params_list)
        if not 1 <= len(params_list) <= GEOMETRY_BATCH:
            raise ValueError(f"params_list must hold 1..{GEOMETRY_BATCH} samples, got {len(params_list)}")
        m = self.model
        shape_t, shape_mean, albedo_t, albedo_mean = self._model_bases()
        c_shape = np.zeros((GEOMETRY_BATCH, m.n_id + m.n_exp), np.float32)
        c_albedo = np.zeros((GEOMETRY_BATCH, m.n_albedo), np.float32)
        for b, p in enumerate(params_list):  # shorter coefficient vectors = trailing zeros (as model.shape)
            a_id, a_exp, beta = (np.asarray(x, np.float32).reshape(-1) for x in (p.alpha_id, p.alpha_exp, p.beta))
            if a_id.size > m.n_id or a_exp.size > m.n_exp or beta.size > m.n_albedo:
                raise ValueError(f"coefficients longer than the model's ({m.n_id}, {m.n_exp}, {m.n_albedo}): "
                                 f"got ({a_id.size}, {a_exp.size}, {beta.size})")
            c_shape[b, :a_id.size] = a_id
            c_shape[b, m.n_id:m.n_id + a_exp.size] = a_exp
            c_albedo[b, :beta.size] = beta
        shapes = c_shape @ shape_t  # (B, Kid + Kexp) @ (Kid + Kexp, 3N) -> (B, 3N)
        shapes += shape_mean
        albedos = c_albedo @ albedo_t  # (B, Ka) @ (Ka, 3N) -> (B, 3N)
        albedos += albedo_mean
        np.clip(albedos, 0.0, 1.0, out=albedos)
        n = m.n_vertices
        return [(shapes[b].reshape(n, 3), albedos[b].reshape(n, 3)) for b in range(len(params_list))]

    def geometry(self, params: SampleParams, arrays: tuple[np.ndarray, np.ndarray] | None = None):
        """``(verts_cam, coarse_cam or None, normals_cam, albedo)``: detailed (drawn) and coarse
        camera-frame vertices ``(N, 3)``, camera-frame unit vertex normals, per-vertex albedo.

        ``arrays``: this sample's ``(coarse, albedo)`` from :meth:`model_arrays` (computed here if None)."""
        g = self._geometry(params, arrays)
        return g.verts_cam, g.coarse_cam, g.normals_cam, g.albedo

    def _geometry(self, params: SampleParams, arrays=None) -> "_Geometry":
        m = self.model
        coarse, albedo = self.model_arrays([params])[0] if arrays is None else arrays
        detailed = None
        if params.detail_weights is not None:
            if self._detail_bank is None:
                self._detail_bank = build_detail_bank(m)
            disp = displacement(self._detail_bank, params.detail_weights)  # (N,)
            # along the mean shape's normals: sub-millimetre displacements, one normal pass saved
            detailed = apply_detail(coarse, self._mean_normals, disp)
        drawn = coarse if detailed is None else detailed
        normals = vertex_normals_fast(drawn, self.triangles, self._incidence)
        rot = params.rotation.astype(np.float32)
        t = params.translation.astype(np.float32)
        coarse_cam = coarse @ rot.T + t  # (N, 3) @ (3, 3)^T
        verts_cam = coarse_cam if detailed is None else detailed @ rot.T + t
        normals_cam = normals @ rot.T
        return _Geometry(verts_cam, coarse_cam if detailed is not None else None, normals_cam, albedo)

    def render(self, params: SampleParams, arrays: tuple[np.ndarray, np.ndarray] | None = None) -> RenderOutput:
        """All maps of one sample (``arrays``: its :meth:`model_arrays` entry, computed here if None)."""
        size, kind = self.size, params.projection
        t0 = time.perf_counter()
        geo = self._geometry(params, arrays)
        verts_cam, coarse_cam, normals_cam, albedo_v = geo.verts_cam, geo.coarse_cam, geo.normals_cam, geo.albedo
        k = np.asarray(params.intrinsics, np.float64)
        t1 = time.perf_counter()
        tri_id = self.render_ids(verts_cam, k, kind)
        t2 = time.perf_counter()

        flat_ids = tri_id.reshape(-1)
        pix = np.flatnonzero(flat_ids >= 0)  # (P,) flat indices of the face pixels
        mask = np.zeros(size * size, bool)
        mask[pix] = True
        mask = mask.reshape(size, size)
        tid = flat_ids[pix]
        c0, c1, c2 = (self._tri_cols[j][tid] for j in range(3))  # (P,) corner vertex ids
        px, py = self._pixel_u.reshape(-1)[pix], self._pixel_v.reshape(-1)[pix]  # (P,) pixel centres
        uv, d = cam.project(verts_cam.astype(np.float64), k, kind)  # (N, 2), (N,)
        l0, l1, l2, z = _weights_fast(px, py, uv, d, c0, c1, c2, kind, clip=True)  # (P,) each

        attrs = self._attrs  # (N, 9) per-process buffer: normal, albedo, pncc (constant)
        attrs[:, 0:3] = normals_cam
        attrs[:, 3:6] = albedo_v
        # sum_k lambda_k * attrs[corner_k]: (P, 1) * (P, 9) -> (P, 9), accumulated in place
        values = attrs[c0]
        values *= l0.astype(np.float32)[:, None]
        tmp = attrs[c1]
        tmp *= l1.astype(np.float32)[:, None]
        values += tmp
        tmp = attrs[c2]
        tmp *= l2.astype(np.float32)[:, None]
        values += tmp
        n = values[:, 0:3]
        norm = np.sqrt(np.einsum("pc,pc->p", n, n))  # (P,)
        n /= np.maximum(norm, 1e-12)[:, None]
        alb = np.clip(values[:, 3:6], 0.0, 1.0)
        pncc = np.clip(values[:, 6:9], 0.0, 1.0)
        face_rgb = shade(alb, n, np.asarray(params.sh, np.float32))  # (P, 3)

        def full(values: np.ndarray) -> np.ndarray:  # (P, C) face values -> (H, W, C) map, 0 off-face
            out = np.zeros((size * size,) + values.shape[1:], np.float32)
            out[pix] = values
            return out.reshape((size, size) + values.shape[1:])

        depth = full(z.astype(np.float32))
        depth_coarse = None
        if coarse_cam is not None:
            uv_c, d_c = cam.project(coarse_cam.astype(np.float64), k, kind)
            # the coarse triangle's plane, cut by the same pixel ray (no clipping of the weights)
            zc = _weights_fast(px, py, uv_c, d_c, c0, c1, c2, kind, clip=False)[3]
            depth_coarse = full(zc.astype(np.float32))

        image = np.ascontiguousarray(self._background(params), dtype=np.float32)  # (H, W, 3), owned
        image.reshape(-1, 3)[pix] = face_rgb  # a view: writes into image
        paint_occluders(image, params.occluders)
        image_u8 = np.round(image * 255.0).astype(np.uint8)
        lm, vis = self._landmarks_2d(verts_cam, k, kind, depth)
        t3 = time.perf_counter()
        self.timings["geometry"] += t1 - t0
        self.timings["render"] += t2 - t1
        self.timings["post"] += t3 - t2
        return RenderOutput(image=image_u8, depth=depth, depth_coarse=depth_coarse, normals=full(n),
                            pncc=full(pncc), albedo=full(alb), mask=mask, landmarks=lm,
                            landmarks_visible=vis, tri_id=tri_id)

    def _background(self, params: SampleParams) -> np.ndarray:
        size = self.size
        kind = params.background_kind
        if kind == "none":
            return np.zeros((size, size, 3), np.float32)
        if kind == "solid":
            return np.broadcast_to(np.asarray(params.background_color, np.float32), (size, size, 3)).copy()
        rng = np.random.default_rng(params.background_seed)
        if kind == "noise":
            return noise_texture(rng, size, 0.2 + 0.6 * np.asarray(params.background_color) - 0.0)
        if kind == "images":
            if self._images is None:
                raise ValueError("--background images needs --background-dir DIR")
            return self._images.draw(rng, size)
        raise ValueError(f"--background must be none|solid|noise|images, got {kind!r}")

    def _landmarks_2d(self, verts_cam, k, kind, depth):
        """Projected landmarks ``(68, 2)`` and visibility ``(68,)``.

        A landmark is visible when it projects inside the image and some face pixel of the 3x3
        neighbourhood of its pixel is not in front of it by more than ``LANDMARK_DEPTH_TOL_MM``
        (so landmarks on a silhouette stay visible; ones hidden behind the nose or the far cheek do not).
        """
        if self._landmarks is None:
            return np.zeros((68, 2), np.float32), np.zeros(68, bool)
        uv, d = cam.project(verts_cam[self._landmarks].astype(np.float64), k, kind)
        size = self.size
        col = np.floor(uv[:, 0]).astype(np.int64)
        row = np.floor(uv[:, 1]).astype(np.int64)
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        padded = np.pad(depth, 1)  # (H+2, W+2), 0 = off-face
        r, c = np.clip(row, 0, size - 1) + 1, np.clip(col, 0, size - 1) + 1
        dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
        patch = padded[r[:, None] + dr.ravel(), c[:, None] + dc.ravel()]  # (68, 9)
        not_in_front = (patch > 0) & (patch >= d[:, None] - LANDMARK_DEPTH_TOL_MM)
        return uv.astype(np.float32), inside & not_in_front.any(axis=1)


def _weights_fast(px, py, uv, d, c0, c1, c2, kind: str, clip: bool):
    """:func:`barycentrics` (``clip=True``) / :func:`_plane_depth` (``clip=False``) on 1-D arrays:
    pixel centres ``px, py (P,)``, all projected vertices ``uv (N, 2)``, ``d (N,)``, triangle corners
    ``c0, c1, c2 (P,)``. Returns ``l0, l1, l2, depth`` (P,) each. Tested against the (P, 3, 2) versions."""
    u, v = uv[:, 0], uv[:, 1]
    ax, ay = u[c0], v[c0]
    abx, aby = u[c1] - ax, v[c1] - ay
    acx, acy = u[c2] - ax, v[c2] - ay
    apx, apy = px - ax, py - ay
    den = abx * acy - aby * acx
    den = np.where(np.abs(den) > 1e-12, den, 1e-12)
    l1 = (apx * acy - apy * acx) / den
    l2 = (abx * apy - aby * apx) / den
    l0 = 1.0 - l1 - l2
    d0, d1, d2 = d[c0], d[c1], d[c2]
    if clip:
        l0, l1, l2 = np.clip(l0, 0, 1), np.clip(l1, 0, 1), np.clip(l2, 0, 1)
        s = l0 + l1 + l2
        l0, l1, l2 = l0 / s, l1 / s, l2 / s
    if kind != "perspective":
        return l0, l1, l2, l0 * d0 + l1 * d1 + l2 * d2
    w0, w1, w2 = l0 / d0, l1 / d1, l2 / d2
    w = w0 + w1 + w2
    if clip:
        depth = 1.0 / w
        return w0 * depth, w1 * depth, w2 * depth, depth
    safe = np.abs(w) > 1e-9
    fallback = np.clip(l0, 0, 1) * d0 + np.clip(l1, 0, 1) * d1 + np.clip(l2, 0, 1) * d2
    depth = np.where(safe, 1.0 / np.where(safe, w, 1.0), fallback)
    return l0, l1, l2, depth


def _plane_depth(pixels_uv, tri_uv, tri_depth, kind):
    """Like :func:`barycentrics` but without clipping: the depth where the pixel ray meets the
    triangle's plane (used for the coarse depth under a detailed pixel)."""
    lam = _screen_weights(pixels_uv, tri_uv)  # (P, 3)
    if kind == "perspective":
        w = (lam / tri_depth).sum(axis=-1)
        # a plane seen edge-on can give w ~ 0: fall back to the clipped interpolation there
        safe = np.abs(w) > 1e-9
        depth = np.where(safe, 1.0 / np.where(safe, w, 1.0), (np.clip(lam, 0, 1) * tri_depth).sum(-1))
        return lam, depth
    return lam, (lam * tri_depth).sum(axis=-1)


# ------------------------------------------------------------------------------ pyrender glue
_ID_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;
uniform mat4 projection;
void main() { gl_Position = projection * vec4(position, 1.0); }
"""
_ID_FRAGMENT_SHADER = """#version 330 core
out uint triangle_id;
void main() { triangle_id = uint(gl_PrimitiveID + 1); }
"""


class _PrimitiveIdPass:
    """Triangle-id pass in the current GL context (created by pyrender): the indexed mesh (vertex
    positions ``(N, 3)`` float32, the only per-sample upload, plus a static index buffer) drawn by a
    two-line GLSL program whose fragment shader writes ``gl_PrimitiveID + 1`` into a single-sample
    ``R32UI`` colour attachment of its own framebuffer (with a 24-bit depth buffer, ``GL_LESS``,
    back faces culled: the state of pyrender's forward pass). One ``glReadPixels`` of that attachment
    gives the id image; nothing else is read back."""

    def __init__(self, size: int, triangles: np.ndarray, n_vertices: int):
        from OpenGL import GL
        from OpenGL.GL import shaders

        self.size = size
        self.n_vertices = int(n_vertices)
        self.program = shaders.compileProgram(shaders.compileShader(_ID_VERTEX_SHADER, GL.GL_VERTEX_SHADER),
                                              shaders.compileShader(_ID_FRAGMENT_SHADER, GL.GL_FRAGMENT_SHADER),
                                              validate=False)
        self.u_projection = GL.glGetUniformLocation(self.program, "projection")
        self.vao = GL.glGenVertexArrays(1)
        GL.glBindVertexArray(self.vao)
        self.vbo, self.ebo = GL.glGenBuffers(2)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, 12 * self.n_vertices, None, GL.GL_STREAM_DRAW)
        GL.glEnableVertexAttribArray(0)
        GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, GL.GL_FALSE, 12, None)
        self.index = np.ascontiguousarray(triangles, dtype=np.uint32).reshape(-1)  # (3T,)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self.ebo)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, self.index.nbytes, self.index, GL.GL_STATIC_DRAW)
        GL.glBindVertexArray(0)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
        self.color_rb, self.depth_rb = GL.glGenRenderbuffers(2)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.color_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_R32UI, size, size)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.depth_rb)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, size, size)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, 0)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.color_rb)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, self.depth_rb)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"triangle-id framebuffer incomplete (status {status:#x})")
        self._ids = np.empty((size, size), np.uint32)  # read-back buffer, reused
        self._clear = np.zeros(4, np.uint32)

    def draw(self, verts_cam: np.ndarray, projection: np.ndarray) -> np.ndarray:
        """Triangle ids ``(H, W)`` int32 (-1 off-mesh), row 0 at the top."""
        from OpenGL import GL

        pos = np.ascontiguousarray(verts_cam, dtype=np.float32)
        if pos.shape != (self.n_vertices, 3):
            raise ValueError(f"verts_cam must be ({self.n_vertices}, 3), got {pos.shape}")
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glViewport(0, 0, self.size, self.size)
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_MULTISAMPLE)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDepthMask(GL.GL_TRUE)
        GL.glDepthFunc(GL.GL_LESS)
        GL.glDepthRange(0.0, 1.0)
        GL.glEnable(GL.GL_CULL_FACE)
        GL.glCullFace(GL.GL_BACK)
        GL.glFrontFace(GL.GL_CCW)
        GL.glClearBufferuiv(GL.GL_COLOR, 0, self._clear)
        GL.glClearBufferfv(GL.GL_DEPTH, 0, np.ones(1, np.float32))
        GL.glUseProgram(self.program)
        # pyrender's convention: uniforms column-major, so pass the row-major matrix with transpose
        GL.glUniformMatrix4fv(self.u_projection, 1, GL.GL_TRUE, np.ascontiguousarray(projection, np.float32))
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self.vbo)
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, pos.nbytes, pos)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
        GL.glBindVertexArray(self.vao)
        GL.glDrawElements(GL.GL_TRIANGLES, self.index.size, GL.GL_UNSIGNED_INT, None)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self.fbo)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 4)
        GL.glReadPixels(0, 0, self.size, self.size, GL.GL_RED_INTEGER, GL.GL_UNSIGNED_INT, self._ids)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        # GL rows start at the bottom; id 0 = background -> -1
        return self._ids[::-1].astype(np.int32) - 1

    def delete(self) -> None:
        from OpenGL import GL

        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteRenderbuffers(2, [self.color_rb, self.depth_rb])
        GL.glDeleteBuffers(2, [self.vbo, self.ebo])
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)


def _disable_msaa(renderer) -> None:
    """Re-allocate pyrender's 4x multisample buffers with 0 samples: triangle ids must not be
    averaged at edges. The framebuffer objects keep their attachments."""
    from OpenGL import GL

    r = renderer._renderer
    if getattr(r, "_main_cb_ms", None) is None:  # OSMesa draws into its own single-sample buffer
        return
    w, h = r._main_fb_dims
    GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, r._main_cb_ms)
    GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, 0, GL.GL_RGBA, w, h)
    GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, r._main_db_ms)
    GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, 0, GL.GL_DEPTH_COMPONENT24, w, h)
    GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, 0)


@functools.lru_cache(maxsize=1)
def _matrix_camera_class():
    import pyrender

    class MatrixCamera(pyrender.Camera):
        """pyrender camera with the projection of :mod:`synth.camera` (perspective or weak perspective,
        arbitrary principal point)."""

        def __init__(self):
            super().__init__(znear=1.0, zfar=1e4)
            self._proj = np.eye(4)

        def set(self, k: np.ndarray, kind: str, size: int, znear: float, zfar: float) -> None:
            fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
            n, f = znear, zfar
            p = np.zeros((4, 4))
            if kind == "perspective":
                # window x = fx x / d + cx, window y (from the bottom) = fy y / d + (H - cy)
                p[0, 0] = 2.0 * fx / size
                p[1, 1] = 2.0 * fy / size
                p[0, 2] = 1.0 - 2.0 * cx / size
                p[1, 2] = 2.0 * cy / size - 1.0
                p[2, 2] = (f + n) / (n - f)
                p[2, 3] = 2.0 * f * n / (n - f)
                p[3, 2] = -1.0
            else:
                # window x = s x + cx, window y = s y + (H - cy)
                p[0, 0] = 2.0 * fx / size
                p[1, 1] = 2.0 * fy / size
                p[0, 3] = 2.0 * cx / size - 1.0
                p[1, 3] = 1.0 - 2.0 * cy / size
                p[2, 2] = 2.0 / (n - f)
                p[2, 3] = (f + n) / (n - f)
                p[3, 3] = 1.0
            self.znear, self.zfar = n, f
            self._proj = p

        def get_projection_matrix(self, width=None, height=None):
            return self._proj

    return MatrixCamera


def _MatrixCamera():
    """A new camera of the (lazily defined, pyrender-derived) MatrixCamera class."""
    return _matrix_camera_class()()
