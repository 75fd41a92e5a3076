"""Render one synthetic sample: a triangle-id pass (compiled CPU z-buffer by default; GL on OSMesa or
EGL optional) + exact per-pixel maps and shading.

How a sample is rendered
------------------------
1. Geometry (numpy + compiled kernels): coarse vertices and albedo from the model (one pass over
   the bases per block of samples, :meth:`FaceRenderer.model_arrays`), then the optional detail
   displacement along the mean shape's vertex normals, the transform to the camera frame
   ``p = R v + t`` and the projection in one compiled pass (:func:`synth.kernels.camera_project`).
2. ONE triangle-id pass: :func:`synth.kernels.rasterize` on ``platform="cpu"``, or the indexed mesh
   drawn in a headless GL context (:mod:`synth.gl`) by a two-line GLSL program writing
   ``gl_PrimitiveID + 1`` into an ``R32UI`` target; back faces culled, nearest wins.
3. Per pixel: exact barycentrics of the pixel centre in its triangle (perspective-correct,
   equivalent to the ray-triangle intersection of the camera model; :func:`synth.kernels.interpolate`,
   the twin of :func:`synth.raster.barycentrics`), then depth, normals (the vertex normals computed
   at the corners of the face pixels' triangles only, :func:`synth.kernels.vertex_normals_at`), PNCC
   and albedo are interpolated **per pixel**, and the radiance is computed in linear light:
   ``linear = clip(albedo * (sh_basis(normal) @ sh) * occlusion + specular, 0, 1)`` (the Lambertian
   SH term is :func:`synth.lighting.shade`, the same formula the training loss uses; ``occlusion``
   the crease darkening :func:`synth.detail.cavity_occlusion`, 1 without; ``specular`` is the
   Blinn-Phong highlight :func:`synth.lighting.blinn_phong` of the SH lighting's dominant light,
   :func:`synth.lighting.dominant_light`, with the sample's strength and shininess, 0 when the
   strength is 0) in one compiled pass (:func:`synth.kernels.shade_pixels`) over the linear-light
   background (:mod:`synth.backgrounds`); facial hair (:func:`synth.backgrounds.paint_facial_hair`,
   on the face's pixels), line occluders (glasses, brows, strands; :func:`synth.backgrounds.paint_lines`),
   both placed by the landmarks, and occluders are painted and the image is
   encoded to sRGB uint8 (:func:`synth.color.linear_to_srgb_u8`), like a photo.

Depth is camera-space ``-p_z`` in millimetres, 0 off the face. ``depth_coarse`` (detail on) is the
depth of the model-only (coarse) version of the triangle hit by the pixel ray. Images have hard
(aliased) edges: the maps are exact per pixel, which is what the training targets need. The GL pass
is tested against the numpy reference rasterizer :func:`synth.raster.rasterize_reference`.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import camera as cam
from . import kernels
from .backgrounds import ImageFolder, draw_background, paint_facial_hair, paint_lines, paint_occluders
from .color import linear_to_srgb_u8
from .detail import BANK_VERSION, CREASE_WIDTH, DetailBank, build_detail_bank, cavity_occlusion, displacement
from .lighting import dominant_light, shade
from .sampling import SampleParams

__all__ = ["FaceRenderer", "RenderOutput", "SurfaceMaps", "MeshRenderer", "MeshImage", "PLATFORMS", "GEOMETRY_BATCH",
           "LANDMARK_DEPTH_TOL_MM"]

PLATFORMS = ("cpu", "osmesa", "egl")
"""Where the triangle ids are rasterized: ``cpu`` (default) the compiled z-buffer loop
:func:`synth.kernels.rasterize`, no OpenGL; ``osmesa`` / ``egl`` the GLSL id pass of :mod:`synth.gl`
(software / GPU). The per-pixel work is the same for all three."""

# samples per model evaluation (kernels.linear_combination: results do not depend on the batching;
# 32 streams the bases from memory ~15 % less per sample than 16 on the built-in model)
GEOMETRY_BATCH = 32
LANDMARK_DEPTH_TOL_MM = 5.0  # a landmark is hidden if the surface around its pixel is this much in front


@dataclasses.dataclass
class RenderOutput:
    """Per-sample maps (H = W = size) and 2-D landmarks; see docs/DESIGN.md for the conventions."""

    image: np.ndarray  # (H, W, 3) uint8, sRGB-encoded, over the background
    depth: np.ndarray  # (H, W) float32 mm, 0 off-face
    depth_coarse: np.ndarray | None  # (H, W) float32 mm, model-only geometry (detail on)
    normals: np.ndarray | None  # (H, W, 3) float32 unit, camera frame, 0 off-face (None: maps=False)
    pncc: np.ndarray | None  # (H, W, 3) float32 [0, 1], 0 off-face (None: maps=False)
    albedo: np.ndarray | None  # (H, W, 3) float32 [0, 1] linear RGB, 0 off-face (None: maps=False)
    specular: np.ndarray | None  # (H, W, 3) float32 linear Blinn-Phong radiance (None: strength 0 or maps=False;
    # not stored)
    mask: np.ndarray  # (H, W) bool, pixels covered by the face mesh
    landmarks: np.ndarray  # (68, 2) float32 pixel (u, v)
    landmarks_visible: np.ndarray  # (68,) bool
    tri_id: np.ndarray  # (H, W) int32 triangle index, -1 off-face (stored from layout 3 on)
    # (H, W) bool: pixels whose id a reader recomputing it might not reproduce (render(stable=True);
    # synth.kernels.rasterize_stable, and on GL platforms wherever GL's ids differ from the CPU's)
    tri_unstable: np.ndarray | None = None


@dataclasses.dataclass
class SurfaceMaps:
    """The per-pixel maps of :meth:`FaceRenderer.surface_maps` (same meanings as :class:`RenderOutput`;
    the maps are None when only the ids were asked for)."""

    depth: np.ndarray | None  # (H, W) float32 mm, 0 off-face
    depth_coarse: np.ndarray | None  # (H, W) float32 mm (detail on)
    normals: np.ndarray | None  # (H, W, 3) float32 unit, camera frame
    pncc: np.ndarray | None  # (H, W, 3) float32 [0, 1]
    albedo: np.ndarray | None  # (H, W, 3) float32 linear RGB
    mask: np.ndarray  # (H, W) bool
    tri_id: np.ndarray | None = None  # (H, W) int32, the ids the maps were computed from


@dataclasses.dataclass
class _Pixels:
    """Per-pixel values at the P face pixels (see :meth:`FaceRenderer._pixels`)."""

    pix: np.ndarray  # (P,) flat pixel indices
    mask: np.ndarray  # (H, W) bool
    depth: np.ndarray  # (P,) float64 mm
    normals: np.ndarray  # (P, 3) float32 unit
    albedo: np.ndarray  # (P, 3) float32 in [0, 1]
    pncc: np.ndarray | None  # (P, 3) float32 in [0, 1]
    depth_coarse: np.ndarray | None  # (P,) float32 mm
    occlusion: np.ndarray | None = None  # (P,) float32 crease darkening, None = none


@dataclasses.dataclass
class _Geometry:
    """Per-sample geometry (see :meth:`FaceRenderer.geometry`)."""

    verts_cam: np.ndarray  # (N, 3) float32, drawn (detailed) surface, camera frame
    coarse_cam: np.ndarray | None  # (N, 3) float32 model-only surface (detail on)
    normals_cam: np.ndarray | None  # (N, 3) float32 unit vertex normals of the drawn surface (None: not asked)
    albedo: np.ndarray  # (N, 3) float32 in [0, 1]
    occlusion: np.ndarray | None = None  # (N,) float32 in (0, 1]: crease darkening of the image (cavity > 0)
    drawn: np.ndarray | None = None  # (N, 3) float32 drawn surface, model frame (for normals at some vertices)
    rotation: np.ndarray | None = None  # (3, 3) float32 model -> camera rotation
    uv: np.ndarray | None = None  # (N, 2) float64 pixel coordinates of verts_cam (synth.camera.project)
    depth: np.ndarray | None = None  # (N,) float64 their depths
    uv_coarse: np.ndarray | None = None  # the same of coarse_cam (None with it)
    depth_coarse: np.ndarray | None = None


@dataclasses.dataclass
class _GLState:
    """The GL objects of one renderer (created on first use, see :meth:`FaceRenderer.warm_up`)."""

    context: "GLContext"
    id_pass: "PrimitiveIdPass"


class FaceRenderer:
    """Renders :class:`~synth.sampling.SampleParams` of one model at one size; reuse it for many samples.

    ``platform`` (:data:`PLATFORMS`): ``cpu`` (default: compiled rasterizer, no OpenGL), ``osmesa``
    (software OpenGL) or ``egl`` (GPU OpenGL, headless). The OpenGL platform is fixed per process when
    OpenGL is first imported (:func:`synth.gl.select_platform`, called here); asking for a different
    one afterwards raises ``ValueError``.
    """

    def __init__(self, model, size: int = 224, platform: str = "cpu", detail_bank: DetailBank | None = None,
                 background_dir: str | None = None, detail_version: int = BANK_VERSION):
        if int(size) != size or size < 8:
            raise ValueError(f"--size must be an integer >= 8, got {size!r}")
        if platform not in PLATFORMS:
            raise ValueError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
        if platform != "cpu":
            from .gl import select_platform

            select_platform(platform)
        self.platform = platform
        self.model = model
        self.size = int(size)
        self.triangles = np.ascontiguousarray(model.triangles, dtype=np.int64)
        self.n_tri = self.triangles.shape[0]
        if self.n_tri >= 2 ** 32 - 1:
            raise ValueError(f"model has {self.n_tri} triangles; the id pass (R32UI, id + 1) supports < 2^32 - 1")
        self._tri_cols = tuple(np.ascontiguousarray(self.triangles[:, j]) for j in range(3))  # (T,) corner j
        if detail_bank is None and detail_version not in CREASE_WIDTH:
            raise ValueError(f"detail bank version must be one of {sorted(CREASE_WIDTH)}, got {detail_version!r}")
        self._detail_bank = detail_bank
        self.detail_version = detail_version
        self._pncc = np.array(model.pncc_colors, np.float32)  # writeable: see kernels.interpolate
        self._mean_normals = kernels.vertex_normals(np.asarray(model.mean_shape, np.float32), self.triangles)
        self._landmarks = None if model.landmarks is None else np.asarray(model.landmarks)
        self._images = ImageFolder(background_dir) if background_dir else None
        self.timings = {"geometry": 0.0, "render": 0.0, "post": 0.0}
        self._gl: _GLState | None = None
        self._bases = None

    # -------------------------------------------------------------------------- GL
    def _setup_gl(self) -> _GLState:
        if self._gl is None:
            # pyrender's platform classes own the (OSMesa / EGL) context; the id pass has its own
            # program and framebuffer in it
            from .gl import GLContext, PrimitiveIdPass

            context = GLContext(self.platform, self.size, self.size)
            self._gl = _GLState(context, PrimitiveIdPass(self.size, self.triangles, self.model.n_vertices))
        return self._gl

    def warm_up(self, detail: bool = True) -> None:
        """Create the GL context/buffers (and the detail bank) now rather than on the first sample."""
        if self.platform != "cpu":
            self._setup_gl()
        if detail and self._detail_bank is None:
            self._detail_bank = build_detail_bank(self.model, version=self.detail_version)
        self._model_bases()

    def close(self) -> None:
        """Free the GL context (the renderer cannot be used afterwards)."""
        if self._gl is not None:
            self._gl.context.make_current()
            self._gl.id_pass.delete()
            self._gl.context.delete()
            self._gl = None

    def __enter__(self) -> "FaceRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def render_ids(self, verts_cam: np.ndarray, intrinsics: np.ndarray, projection: str) -> np.ndarray:
        """Triangle-id image ``(H, W)`` int32 (-1 off-mesh) of camera-frame vertices ``(N, 3)``
        (rasterized on this renderer's platform)."""
        k = np.asarray(intrinsics, np.float64)
        uv, d = cam.project(np.asarray(verts_cam, np.float64), k, projection)
        return self._ids(verts_cam, uv, d, k, projection)

    @staticmethod
    def _check_in_front(d: np.ndarray) -> None:
        if d.min() <= 0:
            raise ValueError("every vertex must be in front of the camera (p_z < 0)")

    def _ids(self, verts_cam, uv, d, k, projection) -> np.ndarray:
        self._check_in_front(d)
        if self.platform == "cpu":
            return kernels.rasterize(uv, d, self.triangles, self.size, projection, cull_backfaces=True)
        from .gl import projection_matrix

        gl = self._setup_gl()
        depth = -verts_cam[:, 2]
        proj = projection_matrix(k, projection, self.size, znear=0.5 * float(depth.min()),
                                 zfar=2.0 * float(depth.max()) + 1.0)
        gl.context.make_current()
        return gl.id_pass.draw(verts_cam, proj)

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
        ``GEOMETRY_BATCH`` samples, evaluated in ONE pass over each model part's bases
        (:func:`synth.kernels.linear_combination`: memory bound, so ~B times cheaper than B
        separate evaluations).

        Each sample's sums run in a fixed order, so its values do not depend on the batch it is
        evaluated in (its position, its neighbours or the batch length), on BLAS threads or on the
        CPU (tested): ``render(p)`` alone, the dataset's batches and the shard reader give
        identical bits. (A BLAS GEMM did not: on an AMD EPYC, rows 6-15 of a padded 16-row GEMM
        and 1 vs 2 threads each changed an ulp here and there.) Same values as
        ``model.shape``/``model.albedo`` up to float32 rounding."""
        params_list = list(params_list)
        if not 1 <= len(params_list) <= GEOMETRY_BATCH:
            raise ValueError(f"params_list must hold 1..{GEOMETRY_BATCH} samples, got {len(params_list)}")
        m = self.model
        shape_t, shape_mean, albedo_t, albedo_mean = self._model_bases()
        c_shape = np.zeros((len(params_list), m.n_id + m.n_exp), np.float32)
        c_albedo = np.zeros((len(params_list), m.n_albedo), np.float32)
        for b, p in enumerate(params_list):  # shorter coefficient vectors = trailing zeros (as model.shape)
            a_id, a_exp, beta = (np.asarray(x, np.float32).reshape(-1) for x in (p.alpha_id, p.alpha_exp, p.beta))
            if a_id.size > m.n_id or a_exp.size > m.n_exp or beta.size > m.n_albedo:
                raise ValueError(f"coefficients longer than the model's ({m.n_id}, {m.n_exp}, {m.n_albedo}): "
                                 f"got ({a_id.size}, {a_exp.size}, {beta.size})")
            c_shape[b, :a_id.size] = a_id
            c_shape[b, m.n_id:m.n_id + a_exp.size] = a_exp
            c_albedo[b, :beta.size] = beta
        # (B, Kid + Kexp) x (Kid + Kexp, 3N) -> (B, 3N); (B, Ka) x (Ka, 3N) -> (B, 3N)
        shapes = kernels.linear_combination(c_shape, shape_t, shape_mean)
        albedos = kernels.linear_combination(c_albedo, albedo_t, albedo_mean)
        np.clip(albedos, 0.0, 1.0, out=albedos)
        n = m.n_vertices
        return [(shapes[b].reshape(n, 3), albedos[b].reshape(n, 3)) for b in range(len(params_list))]

    def geometry(self, params: SampleParams, arrays: tuple[np.ndarray, np.ndarray] | None = None):
        """``(verts_cam, coarse_cam or None, normals_cam, albedo)``: detailed (drawn) and coarse
        camera-frame vertices ``(N, 3)``, camera-frame unit vertex normals, per-vertex albedo.

        ``arrays``: this sample's ``(coarse, albedo)`` from :meth:`model_arrays` (computed here if None)."""
        g = self._geometry(params, arrays)
        return g.verts_cam, g.coarse_cam, g.normals_cam, g.albedo

    def _geometry(self, params: SampleParams, arrays=None, with_coarse: bool = True,
                  with_normals: bool = True) -> "_Geometry":
        """``with_coarse=False``: the model-only surface of a detailed sample is not transformed
        (``coarse_cam`` None; only ``depth_coarse`` needs it); ``with_normals=False``: no vertex
        normals (``normals_cam`` None: :meth:`_pixels` computes them at the face pixels' corners)."""
        m = self.model
        coarse, albedo = self.model_arrays([params])[0] if arrays is None else arrays
        coarse = np.asarray(coarse, np.float32)
        rot = params.rotation.astype(np.float32)
        t = params.translation.astype(np.float32)
        k = np.asarray(params.intrinsics, np.float64)
        occlusion = None
        coarse_cam = uv_c = d_c = None
        if params.detail_weights is not None:
            if self._detail_bank is None:
                self._detail_bank = build_detail_bank(m, version=self.detail_version)
            disp = displacement(self._detail_bank, params.detail_weights)  # (N,)
            if params.cavity > 0:
                occlusion = cavity_occlusion(disp, params.cavity)
            # along the mean shape's normals (synth.detail.apply_detail: millimetre displacements, one
            # normal pass saved), into the camera frame (float32) and exactly synth.camera.project of
            # it, in one compiled pass
            drawn, verts_cam, uv, d = kernels.camera_project(coarse, rot, t, k, params.projection,
                                                             displace=(self._mean_normals, disp))
            if with_coarse:
                coarse_cam, uv_c, d_c = kernels.camera_project(coarse, rot, t, k, params.projection)
        else:
            drawn = coarse
            verts_cam, uv, d = kernels.camera_project(coarse, rot, t, k, params.projection)
        # morphable_model.geometry.vertex_normals bit for bit (tested), rotated in float32 (normals
        # rotate, they do not translate); without with_normals, _pixels computes them at the face
        # pixels' corners only
        normals_cam = kernels.vertex_normals_at(drawn, self.triangles, rot) if with_normals else None
        return _Geometry(verts_cam, coarse_cam, normals_cam, albedo, occlusion, drawn, rot, uv, d, uv_c, d_c)

    def render(self, params: SampleParams, arrays: tuple[np.ndarray, np.ndarray] | None = None,
               maps: bool = True, stable: bool = False) -> RenderOutput:
        """All maps of one sample (``arrays``: its :meth:`model_arrays` entry, computed here if None).

        ``maps=False``: only what the shards of layouts 3 to 7 store is computed — the image, the triangle
        ids, the mask, the landmarks (and ``depth``, which the landmarks' visibility needs);
        ``normals``, ``pncc``, ``albedo``, ``specular`` and ``depth_coarse`` are None.
        :meth:`surface_maps` recomputes the maps from the ids. ``stable=True`` also fills
        ``tri_unstable`` (what layouts 6 and 7 store the ids of)."""
        size, projection = self.size, params.projection
        t0 = time.perf_counter()
        geo = self._geometry(params, arrays, with_coarse=maps, with_normals=False)
        k = np.asarray(params.intrinsics, np.float64)
        uv, d = geo.uv, geo.depth  # (N, 2), (N,)
        t1 = time.perf_counter()
        unstable = None
        if stable:
            self._check_in_front(d)
            # the ids a reader recomputes (the compiled rasterizer), and where they could differ
            cpu_ids, unstable = kernels.rasterize_stable(uv, d, self.triangles, size, projection, cull_backfaces=True)
            tri_id = cpu_ids if self.platform == "cpu" else self._ids(geo.verts_cam, uv, d, k, projection)
            if tri_id is not cpu_ids:
                unstable |= tri_id != cpu_ids  # GL's edge rule and precision differ from the CPU's
        else:
            tri_id = self._ids(geo.verts_cam, uv, d, k, projection)
        t2 = time.perf_counter()
        px = self._pixels(geo, tri_id, uv, d, k, projection, pncc=maps, coarse=maps)
        n, alb, pix = px.normals, px.albedo, px.pix
        sh = np.asarray(params.sh, np.float32)
        highlight = None
        if params.specular_strength > 0:
            light_dir, light_color = dominant_light(sh)  # (3,), (3,)
            highlight = (light_dir, light_color, np.float32(params.specular_strength), np.float32(params.shininess))
        image = draw_background(params.background_kind, params.background_color, params.background_seed,
                                size, self._images)
        image = np.ascontiguousarray(image, dtype=np.float32)  # (H, W, 3) linear light, owned
        # linear = clip(albedo * (sh_basis(n) @ sh) * occlusion + blinn_phong(...), 0, 1) at the face
        # pixels, in one compiled pass (the twin of synth.lighting.shade / blinn_phong, tested)
        spec = kernels.shade_pixels(image, pix, n, alb, sh, px.occlusion, highlight, k, projection)
        depth = _full(px.depth.astype(np.float32), pix, size)
        lm, vis = self._landmarks_2d(geo.uv, geo.depth, depth)
        # facial hair on the face's pixels, then glasses, brows, strands: placed by the landmarks, no
        # geometry (none without landmarks)
        paint_facial_hair(image, params.facial_hair, lm if self._landmarks is not None else None, depth > 0)
        paint_lines(image, params.line_occluders, lm if self._landmarks is not None else None)
        paint_occluders(image, params.occluders)
        image_u8 = linear_to_srgb_u8(image)  # encoded like a photo
        t3 = time.perf_counter()
        self.timings["geometry"] += t1 - t0
        self.timings["render"] += t2 - t1
        self.timings["post"] += t3 - t2
        return RenderOutput(image=image_u8, depth=depth,
                            depth_coarse=None if px.depth_coarse is None else _full(px.depth_coarse, pix, size),
                            normals=_full(n, pix, size) if maps else None,
                            pncc=None if px.pncc is None else _full(px.pncc, pix, size),
                            albedo=_full(alb, pix, size) if maps else None,
                            specular=None if spec is None or not maps else _full(spec, pix, size),
                            mask=px.mask, landmarks=lm, landmarks_visible=vis, tri_id=tri_id, tri_unstable=unstable)

    def surface_maps(self, params: SampleParams, tri_id,
                     arrays: tuple[np.ndarray, np.ndarray] | None = None, maps: bool = True) -> SurfaceMaps:
        """The per-pixel maps of a sample whose triangle-id image ``tri_id (H, W)`` is known (a shard
        of layout 3 stores the ids, not the maps): the same computation as :meth:`render`, without
        rasterizing, lighting or compositing, so the maps equal ``render(params)``'s bit for bit
        given the same model arrays (``arrays``, from :meth:`model_arrays`; computed if None).

        ``tri_id`` may instead be a :class:`synth.codecs.StoredIds` (layouts 6 and 7): the ids are
        then rasterized here by the compiled rasterizer from the same geometry and completed by
        :func:`synth.codecs.restore_ids` (which checks them against the writer's CRC).
        ``maps=False``: only the ids (and the mask) are returned."""
        from .codecs import StoredIds, restore_ids

        size, projection = self.size, params.projection
        geo = None
        if isinstance(tri_id, StoredIds):
            geo = self._geometry(params, arrays, with_coarse=maps, with_normals=False)
            k = np.asarray(params.intrinsics, np.float64)
            uv, d = geo.uv, geo.depth
            self._check_in_front(d)
            tri_id = restore_ids(kernels.rasterize(uv, d, self.triangles, size, projection, cull_backfaces=True),
                                 tri_id)
            if not maps:
                return SurfaceMaps(depth=None, depth_coarse=None, normals=None, pncc=None, albedo=None,
                                   mask=tri_id >= 0, tri_id=tri_id)
        tri_id = np.asarray(tri_id)
        if tri_id.shape != (size, size):
            raise ValueError(f"tri_id must be ({size}, {size}), got {tri_id.shape}")
        if tri_id.size and (int(tri_id.max()) >= self.n_tri or int(tri_id.min()) < -1):
            raise ValueError(f"tri_id must hold -1 or triangle indices < {self.n_tri}, got "
                             f"[{int(tri_id.min())}, {int(tri_id.max())}]")
        if geo is None:
            geo = self._geometry(params, arrays, with_normals=False)
            k = np.asarray(params.intrinsics, np.float64)
            uv, d = geo.uv, geo.depth
        px = self._pixels(geo, tri_id, uv, d, k, projection, pncc=True, coarse=True)
        pix = px.pix
        return SurfaceMaps(depth=_full(px.depth.astype(np.float32), pix, size),
                           depth_coarse=None if px.depth_coarse is None else _full(px.depth_coarse, pix, size),
                           normals=_full(px.normals, pix, size), pncc=_full(px.pncc, pix, size),
                           albedo=_full(px.albedo, pix, size), mask=px.mask, tri_id=tri_id)

    def _pixels(self, geo: "_Geometry", tri_id, uv, d, k, projection, pncc: bool, coarse: bool) -> "_Pixels":
        """Per-pixel values at the face pixels of ``tri_id``: barycentric interpolation of the vertex
        normals (normalised), albedo (clipped to [0, 1]) and, when asked, PNCC and the coarse depth."""
        size = self.size
        flat_ids = tri_id.reshape(-1)
        pix = np.flatnonzero(flat_ids >= 0)  # (P,) flat indices of the face pixels
        mask = np.zeros(size * size, bool)
        mask[pix] = True
        tid = flat_ids[pix]
        # the vertex normals at the corners of the face pixels' triangles only, packed with the albedo
        # and the crease darkening: columns normal 0:3, albedo 3:6, darkening 6 (when present), padding
        packed = kernels.vertex_normals_at(geo.drawn, self.triangles, geo.rotation, tid,
                                           pack=[geo.albedo] + ([] if geo.occlusion is None else [geo.occlusion]))
        attrs = [packed] + ([self._pncc] if pncc else [])
        values, z = kernels.interpolate(pix, tid, size, uv, d, self.triangles, attrs, projection)  # (P, C), (P,)
        first = packed.shape[1]  # the PNCC's first column
        # unit normals, albedo and PNCC clipped to [0, 1], in place
        kernels.unit_and_clip(values, (3, 6), (first, first + 3) if pncc else ())
        n, alb = values[:, 0:3], values[:, 3:6]
        occ = None if geo.occlusion is None else values[:, 6]
        pncc_v = values[:, first:first + 3] if pncc else None
        zc = None
        if coarse and geo.coarse_cam is not None:
            uv_c, d_c = geo.uv_coarse, geo.depth_coarse
            # the coarse triangle's plane, cut by the same pixel ray (no clipping of the weights)
            zc = kernels.plane_depth(pix, tid, size, uv_c, d_c, self.triangles, projection).astype(np.float32)
        return _Pixels(pix=pix, mask=mask.reshape(size, size), depth=z, normals=n, albedo=alb,
                       pncc=pncc_v, depth_coarse=zc, occlusion=occ)

    def _landmarks_2d(self, uv_all, d_all, depth):
        """Projected landmarks ``(68, 2)`` and visibility ``(68,)`` (``uv_all``, ``d_all``: the
        projected vertices of :meth:`_geometry`).

        A landmark is visible when it projects inside the image and some face pixel of the 3x3
        neighbourhood of its pixel is not in front of it by more than ``LANDMARK_DEPTH_TOL_MM``
        (so landmarks on a silhouette stay visible; ones hidden behind the nose or the far cheek do not).
        """
        if self._landmarks is None:
            return np.zeros((68, 2), np.float32), np.zeros(68, bool)
        uv, d = uv_all[self._landmarks], d_all[self._landmarks]
        size = self.size
        col = np.floor(uv[:, 0]).astype(np.int64)
        row = np.floor(uv[:, 1]).astype(np.int64)
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        r = np.clip(row, 0, size - 1)[:, None] + _NEIGHBOUR_ROWS  # (68, 9), -1 .. size
        c = np.clip(col, 0, size - 1)[:, None] + _NEIGHBOUR_COLS
        patch = depth[np.clip(r, 0, size - 1), np.clip(c, 0, size - 1)]  # 0 = off-face
        patch[(r < 0) | (r >= size) | (c < 0) | (c >= size)] = 0.0  # beyond the border: off-face
        not_in_front = (patch > 0) & (patch >= d[:, None] - LANDMARK_DEPTH_TOL_MM)
        return uv.astype(np.float32), inside & not_in_front.any(axis=1)


_NEIGHBOUR_ROWS = np.repeat(np.arange(-1, 2), 3)  # the 3x3 neighbourhood of a pixel
_NEIGHBOUR_COLS = np.tile(np.arange(-1, 2), 3)


# ------------------------------------------------------------------------------ any mesh, any camera
@dataclasses.dataclass
class MeshImage:
    """What :meth:`MeshRenderer.render` draws (``(H, W)`` as asked)."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1], linear light: colour * SH shading on the mesh, 0 off it
    mask: np.ndarray  # (H, W) bool, pixels covered by the mesh
    depth: np.ndarray  # (H, W) float32 mm (-p_z of the visible surface), 0 off the mesh
    normals: np.ndarray  # (H, W, 3) float32 unit camera-frame normals, 0 off the mesh


class MeshRenderer:
    """Draws a mesh of one fixed triangle list through any camera with SH lighting: "render this
    mesh with this camera and this light" for pictures of reconstructions (:mod:`train.report`).

    Not a second renderer: the steps of :class:`FaceRenderer` — the triangle-id image (the compiled
    z-buffer :func:`synth.kernels.rasterize` on ``platform="cpu"``, or the GL id pass of
    :mod:`synth.gl` on ``osmesa`` / ``egl``; back faces culled), exact perspective-correct
    barycentrics and interpolation of the vertex normals and colours at the pixel centres
    (:func:`synth.kernels.interpolate`), and Lambertian SH shading (:func:`synth.lighting.shade`).
    Vertex positions change per call (turntables, coarse vs detailed meshes of one topology), the
    triangles do not. Any image size, square or not.
    """

    def __init__(self, triangles: np.ndarray, n_vertices: int, platform: str = "cpu"):
        tris = np.ascontiguousarray(triangles, dtype=np.int64)
        if tris.ndim != 2 or tris.shape[1] != 3:
            raise ValueError(f"triangles must be (T, 3), got {tris.shape}")
        if tris.size and (tris.min() < 0 or tris.max() >= n_vertices):
            raise ValueError(f"triangles must index 0..{n_vertices - 1}, got {tris.min()}..{tris.max()}")
        if platform not in PLATFORMS:
            raise ValueError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
        if platform != "cpu":
            from .gl import select_platform

            select_platform(platform)
        self.platform = platform
        self.triangles = tris
        self.n_vertices = int(n_vertices)
        self._context = None  # GL platforms: one context, one id pass per (square) size
        self._passes: dict = {}

    def vertex_normals(self, verts_cam: np.ndarray) -> np.ndarray:
        """Unit vertex normals ``(N, 3)`` float32 of the mesh with vertices ``verts_cam (N, 3)``."""
        return kernels.vertex_normals(np.asarray(verts_cam, np.float32), self.triangles)

    def _ids(self, v: np.ndarray, uv: np.ndarray, d: np.ndarray, k: np.ndarray, projection: str,
             h: int, w: int) -> np.ndarray:
        if self.platform == "cpu":
            return kernels.rasterize(uv, d, self.triangles, (h, w), projection, cull_backfaces=True)
        from .gl import GLContext, PrimitiveIdPass, projection_matrix

        side = max(h, w)  # the GL pass is square: draw the square from the image's top-left corner
        if self._context is None:
            self._context = GLContext(self.platform, side, side)
        self._context.make_current()
        if side not in self._passes:
            self._passes[side] = PrimitiveIdPass(side, self.triangles, self.n_vertices)
        near = 0.5 * float(d.min()) if projection == "perspective" else float(d.min()) - 1.0
        proj = projection_matrix(k, projection, side, znear=near, zfar=2.0 * float(d.max()) + 1.0)
        return self._passes[side].draw(v, proj)[:h, :w]

    def render(self, verts_cam: np.ndarray, intrinsics: np.ndarray, size, sh: np.ndarray,
               colors: np.ndarray | None = None, projection: str = "perspective",
               normals: np.ndarray | None = None) -> MeshImage:
        """The mesh with camera-frame vertices ``verts_cam (N, 3)`` seen through ``intrinsics (3, 3)``
        in an image of ``size`` (an int: square, or ``(H, W)``), lit by irradiance SH ``sh (9, 3)``
        (camera frame), with per-vertex linear albedo ``colors (N, 3)`` in [0, 1] (None: white); the
        image is linear light (encode it with :func:`synth.color.linear_to_srgb` to show it).
        ``normals (N, 3)``: the vertices' unit normals when the caller has them
        (:meth:`vertex_normals`; e.g. rotated with the mesh for a turntable), else computed here."""
        h, w = (size, size) if np.ndim(size) == 0 else tuple(size)
        if int(h) != h or int(w) != w or h < 1 or w < 1:
            raise ValueError(f"size must be a positive integer or (H, W), got {size!r}")
        h, w = int(h), int(w)
        v = np.asarray(verts_cam, np.float64)
        if v.shape != (self.n_vertices, 3):
            raise ValueError(f"verts_cam must be ({self.n_vertices}, 3), got {v.shape}")
        if colors is not None and np.shape(colors) != (self.n_vertices, 3):
            raise ValueError(f"colors must be ({self.n_vertices}, 3), got {np.shape(colors)}")
        if normals is not None and np.shape(normals) != (self.n_vertices, 3):
            raise ValueError(f"normals must be ({self.n_vertices}, 3), got {np.shape(normals)}")
        k = np.asarray(intrinsics, np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"intrinsics must be (3, 3), got {k.shape}")
        cam.check_projection(projection)
        uv, d = cam.project(v, k, projection)  # (N, 2), (N,)
        if projection == "perspective" and d.min() <= 0:
            raise ValueError("every vertex must be in front of the camera (p_z < 0)")
        ids = self._ids(v, uv, d, k, projection, h, w).reshape(-1)  # (H*W,)
        pix = np.flatnonzero(ids >= 0)  # (P,) flat indices of the mesh pixels
        normals = self.vertex_normals(v) if normals is None else np.asarray(normals, np.float32)  # (N, 3)
        albedo = np.ones((self.n_vertices, 3), np.float32) if colors is None else np.asarray(colors, np.float32)
        attrs = np.concatenate([normals, albedo], axis=1)  # (N, 6)
        values, z = kernels.interpolate(pix, ids[pix], w, uv, d, self.triangles, attrs, projection)  # (P, 6), (P,)
        kernels.unit_and_clip(values, (3, 6))  # unit normals, albedo in [0, 1] (as FaceRenderer's)
        n = values[:, :3]
        rgb = shade(values[:, 3:], n, np.asarray(sh, np.float32))  # (P, 3)

        def full(x: np.ndarray) -> np.ndarray:  # (P, C) -> (H, W, C), 0 off the mesh
            out = np.zeros((h * w,) + x.shape[1:], np.float32)
            out[pix] = x
            return out.reshape((h, w) + x.shape[1:])

        mask = np.zeros(h * w, bool)
        mask[pix] = True
        return MeshImage(image=full(rgb), mask=mask.reshape(h, w), depth=full(z.astype(np.float32)), normals=full(n))

    def close(self) -> None:
        """Free the GL objects and the context, if any (the renderer cannot be used afterwards)."""
        if self._context is not None:
            self._context.make_current()
            for p in self._passes.values():
                p.delete()
            self._passes.clear()
            self._context.delete()
            self._context = None

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _full(values: np.ndarray, pix: np.ndarray, size: int) -> np.ndarray:
    """``(P, ...)`` face values -> ``(H, W, ...)`` float32 map, 0 off the face."""
    out = np.zeros((size * size,) + values.shape[1:], np.float32)
    out[pix] = values
    return out.reshape((size, size) + values.shape[1:])
