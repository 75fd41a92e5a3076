"""synth.render: the id pass + numpy maps against hand-computed geometry and the reference rasterizer
(synth.raster.rasterize_reference with back faces culled, as the GL pass draws)."""
import dataclasses

import numpy as np
import pytest

from morphable_model import MorphableModel
from morphable_model.geometry import face_normals
from synth import camera as cam
from synth.detail import N_FIELDS
from synth.color import linear_to_srgb_u8
from synth.lighting import blinn_phong, dominant_light, sh_basis, shade, view_directions
from synth.raster import barycentrics, rasterize_reference
from synth.render import FaceRenderer, LANDMARK_DEPTH_TOL_MM, MeshRenderer
from synth.sampling import SamplingConfig, sample_params


def _flat_model(vertices, triangles):
    """A model with zero bases: its shape is exactly ``vertices``."""
    v = np.asarray(vertices, np.float32)
    n = len(v)
    z = np.zeros((3 * n, 1), np.float32)
    return MorphableModel(mean_shape=v, id_basis=z, id_std=np.ones(1), exp_basis=z, exp_std=np.ones(1),
                          albedo_mean=np.full((n, 3), 0.5, np.float32), albedo_basis=z, albedo_std=np.ones(1),
                          triangles=np.asarray(triangles, np.int32), source="test:flat")


def _params(pose=(0.0, 0.0, 0.0), t=(0.0, 0.0, -200.0), k=None, projection="perspective", background="none",
            sh=None):
    from synth.sampling import SampleParams

    sh_ = np.zeros((9, 3), np.float32) if sh is None else sh
    if sh is None:
        sh_[0] = 1.0 / 0.28209479  # constant irradiance 1
    return SampleParams(index=0, alpha_id=np.zeros(1, np.float32), alpha_exp=np.zeros(1, np.float32),
                        beta=np.zeros(1, np.float32), pose=np.asarray(pose, np.float32),
                        translation=np.asarray(t, np.float32),
                        intrinsics=cam.intrinsics_matrix(64, 64, 32, 32) if k is None else k, projection=projection,
                        sh=sh_, detail_weights=None, background_kind=background,
                        background_color=np.array([0.2, 0.4, 0.6]), background_seed=0, occluders=[])


SQUARE = [[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]]


@pytest.fixture(scope="module")
def square_renderer():
    with FaceRenderer(_flat_model(SQUARE, [[0, 1, 2], [0, 2, 3]]), 64) as r:
        yield r


def test_golden_square(square_renderer):
    out = square_renderer.render(_params())
    # 100 mm at 200 mm with f = 64 px -> 32 px wide, centred: columns/rows 16..47 exactly
    expected = np.zeros((64, 64), bool)
    expected[16:48, 16:48] = True
    np.testing.assert_array_equal(out.mask, expected)
    np.testing.assert_allclose(out.depth[expected], 200.0, atol=1e-3)
    assert np.all(out.depth[~expected] == 0)
    np.testing.assert_allclose(out.normals[expected], np.tile([0, 0, 1.0], (1024, 1)), atol=1e-6)
    # PNCC x = normalised model x = (u - 16) / 32 at pixel centres (x grows to the image right)
    cols = np.arange(16, 48) + 0.5
    np.testing.assert_allclose(out.pncc[20, 16:48, 0], (cols - 16) / 32, atol=1e-5)
    rows = np.arange(16, 48) + 0.5
    np.testing.assert_allclose(out.pncc[16:48, 20, 1], 1 - (rows - 16) / 32, atol=1e-5)  # y up
    assert set(np.unique(out.tri_id)) == {-1, 0, 1}
    # albedo 0.5 x irradiance 1 = linear 0.5, stored sRGB-encoded: 255 * 0.735357 = 187.5
    np.testing.assert_allclose(out.image[expected], 188, atol=1)
    assert out.image.dtype == np.uint8 and out.depth.dtype == np.float32 and out.mask.dtype == bool


def test_asymmetric_triangle_lands_upper_right():
    # model triangle in x > 0, y > 0 (right, up) -> image columns > 32, rows < 32 (v grows down)
    with FaceRenderer(_flat_model([[0, 0, 0], [50, 0, 0], [0, 50, 0]], [[0, 1, 2]]), 64) as r:
        out = r.render(_params())
    u, v = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    s = (u - 32) + (32 - v)  # inside: u > 32, v < 32, s < 16
    inside = (u > 32) & (v < 32) & (s < 16)
    clear = (np.abs(s - 16) > 1e-6) & (np.abs(u - 32) > 1e-6) & (np.abs(v - 32) > 1e-6)  # no pixel on an edge
    np.testing.assert_array_equal(out.mask[clear], inside[clear])
    assert out.mask.sum() > 100


def test_yaw_pushes_image_right_side_away(square_renderer):
    out = square_renderer.render(_params(pose=(np.radians(30), 0, 0)))
    row = out.depth[32][out.mask[32]]
    assert np.all(np.diff(row) > 0)  # depth grows to the right: the face turned toward the image right
    assert out.normals[32, 32, 0] > 0.4


def test_weak_perspective_square(square_renderer):
    out = square_renderer.render(_params(k=cam.intrinsics_matrix(0.24, 0.24, 32, 32), projection="weak_perspective"))
    expected = np.zeros((64, 64), bool)
    expected[20:44, 20:44] = True  # 100 mm * 0.24 px/mm = 24 px from 20 to 44
    np.testing.assert_array_equal(out.mask, expected)
    np.testing.assert_allclose(out.depth[expected], 200.0, atol=1e-3)


@pytest.fixture(scope="module")
def tiny_renderer(tiny_model):
    with FaceRenderer(tiny_model, 64) as r:
        yield r


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_matches_reference_rasterizer(tiny_model, tiny_renderer, projection):
    cfg = SamplingConfig(projection=projection)
    for i in range(2):
        p = sample_params(tiny_model, cfg, 64, 0, i)
        out = tiny_renderer.render(p)
        verts, _, _, _ = tiny_renderer.geometry(p)
        ref = rasterize_reference(verts, tiny_model.triangles, p.intrinsics, 64, projection, cull_backfaces=True)
        tid, depth = ref.tri_id, ref.depth
        # GL and the reference may disagree on pixels whose centre lies on a shared edge
        assert (tid == out.tri_id).mean() > 0.995
        same = (tid == out.tri_id) & (tid >= 0)
        np.testing.assert_allclose(out.depth[same], depth[same], rtol=1e-5)


def test_vertex_pixel_has_vertex_depth(tiny_model, tiny_renderer):
    # a vertex's projected pixel, when covered by a triangle using that vertex, has the vertex's depth up
    # to the triangle's slope over <= 0.71 px. For triangles facing the camera (normal within 60 deg of
    # the ray to the vertex, slope <= tan 60 = 1.73) that is < 1.3 px worth of millimetres at that depth:
    # tolerance 2 px. (The triangle's own normal and the ray, not the optical axis: a vertex normal can
    # face the camera while a neighbouring triangle does not, e.g. on the coarse head's ears, and rays
    # to the image corners are ~30 deg off the axis.)
    p = sample_params(tiny_model, SamplingConfig(detail=False), 64, 0, 4)
    out = tiny_renderer.render(p)
    verts, _, _, _ = tiny_renderer.geometry(p)
    tri_n = face_normals(verts.astype(np.float64), tiny_model.triangles)  # (T, 3) camera frame
    uv, d = cam.project(verts.astype(np.float64), p.intrinsics.astype(np.float64))
    col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    ok = (col >= 0) & (col < 64) & (row >= 0) & (row < 64)
    checked = 0
    for vi in np.flatnonzero(ok):
        t = out.tri_id[row[vi], col[vi]]
        if t >= 0 and vi in tiny_model.triangles[t] and tri_n[t] @ (-verts[vi] / np.linalg.norm(verts[vi])) > 0.5:
            mm_per_px = d[vi] / p.intrinsics[0, 0]
            assert abs(out.depth[row[vi], col[vi]] - d[vi]) < 2 * mm_per_px
            checked += 1
    assert checked > 50


def test_landmarks_agree_with_mask_and_depth(tiny_model, tiny_renderer):
    seen_hidden = False
    for i, yaw in enumerate([0.0, 70.0, -70.0]):
        cfg = SamplingConfig(yaw_deg=0, detail=False)
        p = sample_params(tiny_model, cfg, 64, 0, i)
        p = dataclasses.replace(p, pose=np.array([np.radians(yaw), 0, 0], np.float32))
        out = tiny_renderer.render(p)
        verts, _, _, _ = tiny_renderer.geometry(p)
        uv, d = cam.project(verts[tiny_model.landmarks].astype(np.float64), p.intrinsics.astype(np.float64))
        np.testing.assert_allclose(out.landmarks, uv, atol=1e-3)
        for j in range(68):
            r, c = int(np.floor(uv[j, 1])), int(np.floor(uv[j, 0]))
            patch = out.depth[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
            face = patch[patch > 0]
            if out.landmarks_visible[j]:  # on the mask (3x3) and not behind the rendered surface
                assert 0 <= r < 64 and 0 <= c < 64 and face.size and face.max() >= d[j] - LANDMARK_DEPTH_TOL_MM
                assert np.abs(face - d[j]).min() < 3 * d[j] / p.intrinsics[0, 0] + LANDMARK_DEPTH_TOL_MM
            elif 0 <= r < 64 and 0 <= c < 64:  # hidden: whatever is drawn there is in front of it
                assert np.all(face < d[j] - LANDMARK_DEPTH_TOL_MM)
        if yaw == 0:
            assert out.landmarks_visible.mean() > 0.9
        seen_hidden |= not out.landmarks_visible.all()
    assert seen_hidden  # at +-70 degrees some contour landmarks are hidden


def _assert_same_levels(got, want):
    """uint8 images equal up to one level, in at most 1 % of the values (float rounding only)."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())


def test_shading_is_the_shared_formula(tiny_model, tiny_renderer):
    """Specular and crease darkening off: the image is the Lambertian SH formula the training loss
    uses, sRGB-encoded."""
    p = sample_params(tiny_model, SamplingConfig(background="none", occluders=0, specular=False, cavity=0.0),
                      64, 1, 2)
    assert p.specular_strength == 0
    out = tiny_renderer.render(p)
    m = out.mask
    assert out.specular is None
    # the compiled pass (float64 inside) vs the float32 formula: a value may cross a rounding boundary
    _assert_same_levels(out.image[m], linear_to_srgb_u8(shade(out.albedo[m], out.normals[m], p.sh)))
    assert np.all(out.image[~m] == 0)


def test_specular_is_blinn_phong_of_the_dominant_light(tiny_model, tiny_renderer):
    """linear = clip(albedo * shading + specular), the specular recomputed from the maps and parameters."""
    cfg = SamplingConfig(background="none", occluders=0, specular_strength=(0.6, 0.6), shininess=(10, 10),
                         cavity=0.0)
    p = sample_params(tiny_model, cfg, 64, 1, 2)
    out = tiny_renderer.render(p)
    m = out.mask
    c = np.arange(64) + 0.5
    uv = np.stack(np.meshgrid(c, c), axis=-1)[m]  # (P, 2) face pixel centres
    light_dir, light_color = dominant_light(np.asarray(p.sh, np.float64))
    spec = blinn_phong(out.normals[m].astype(np.float64), view_directions(uv, p.intrinsics.astype(np.float64)),
                       light_dir, light_color, 0.6, 10.0)
    np.testing.assert_allclose(out.specular[m], spec, atol=1e-5)  # float32 vs float64
    assert spec.max() > 0.05  # a visible highlight
    lin = out.albedo[m] * (sh_basis(out.normals[m]) @ p.sh) + out.specular[m]
    _assert_same_levels(out.image[m], linear_to_srgb_u8(np.clip(lin, 0, 1)))
    off = tiny_renderer.render(dataclasses.replace(p, specular_strength=0.0))
    assert np.all(out.image[m].astype(int) >= off.image[m]) and (out.image[m] > off.image[m]).any()


def test_render_without_maps_has_the_stored_outputs_only(tiny_model, tiny_renderer):
    """maps=False (the dataset job): the same image, ids, mask and landmarks; no maps to encode as layout 2."""
    from synth.codecs import encode_sample

    p = sample_params(tiny_model, SamplingConfig(), 64, 1, 5)
    full, lean = tiny_renderer.render(p, stable=True), tiny_renderer.render(p, maps=False, stable=True)
    for key in ("image", "tri_id", "mask", "depth", "landmarks", "landmarks_visible", "tri_unstable"):
        np.testing.assert_array_equal(getattr(lean, key), getattr(full, key), err_msg=key)
    assert lean.normals is None and lean.albedo is None and lean.pncc is None and lean.depth_coarse is None
    assert set(encode_sample(p, lean)) == set(encode_sample(p, full))  # layout 6 needs no maps
    assert set(encode_sample(p, lean, layout=4)) == set(encode_sample(p, full, layout=4))
    plain = tiny_renderer.render(p, maps=False)  # without stable=True: the same ids, not what layout 6 needs
    np.testing.assert_array_equal(plain.tri_id, lean.tri_id)
    assert plain.tri_unstable is None and lean.tri_unstable.dtype == bool
    with pytest.raises(ValueError, match=r"layout 6 stores the ids of the unstable pixels only: encode a "
                                         r"render\(params, maps=False, stable=True\) output"):
        encode_sample(p, plain)
    with pytest.raises(ValueError, match="layout 2 stores the maps"):
        encode_sample(p, lean, layout=2)


def test_outputs_shapes_ranges_odd_size(tiny_model):
    with FaceRenderer(tiny_model, 33) as r:
        p = sample_params(tiny_model, SamplingConfig(), 33, 0, 3)
        out = r.render(p)
    m = out.mask
    assert out.image.shape == (33, 33, 3) and out.depth.shape == (33, 33) and out.normals.shape == (33, 33, 3)
    assert out.landmarks.shape == (68, 2) and out.landmarks_visible.shape == (68,)
    assert m.sum() > 50 and np.all(out.depth[m] > 0) and np.all(out.depth[~m] == 0)
    np.testing.assert_allclose(np.linalg.norm(out.normals[m], axis=-1), 1, atol=1e-5)
    assert np.all(out.normals[~m] == 0)
    for key in ("pncc", "albedo"):
        a = getattr(out, key)
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.mean(out.normals[m][:, 2] > 0) > 0.95  # visible surfaces face the camera


def test_detail_changes_depth_within_amplitude(tiny_model, tiny_renderer):
    p = sample_params(tiny_model, SamplingConfig(detail=True, detail_scale=3.0), 64, 0, 6)
    out = tiny_renderer.render(p)
    m = out.mask
    diff = np.abs(out.depth_coarse[m] - out.depth[m])
    assert diff.max() > 0.05  # something is displaced
    # displacement along normals of at most sum(weights) mm; seen obliquely a bit more: generous 5x
    assert np.median(diff) < float(p.detail_weights.sum()) + 1e-3
    zero = dataclasses.replace(p, detail_weights=np.zeros(N_FIELDS, np.float32))
    out0 = tiny_renderer.render(zero)
    # two float32 paths (clipped barycentrics / the plane cut by the ray) agree to float32 rounding,
    # a few ulp of the depth (1e-5 relative: 4 um at 0.36 m, the nearest --distance), wherever the
    # pixel centre is inside its triangle. At a triangle's edge the GPU can own a pixel whose centre
    # is a hair outside; clipping then differs by slope x hair (0.04 mm seen on one pixel of the tiny
    # model's steep 16 mm head triangles): allow that on at most 0.5 % of the pixels, below 0.1 mm.
    d0, dc = out0.depth[out0.mask], out0.depth_coarse[out0.mask]
    off = np.abs(dc - d0) > 1e-5 * d0 + 1e-3
    assert off.mean() < 5e-3 and np.abs(dc - d0).max() < 0.1
    off = tiny_renderer.render(dataclasses.replace(p, detail_weights=None))
    assert off.depth_coarse is None


def test_cavity_darkens_the_shading_of_creases_only(tiny_model, tiny_renderer):
    """``cavity`` multiplies the face's linear radiance by the interpolated exp(cavity * min(disp, 0))
    and changes nothing else: maps, mask and landmarks equal the cavity-free render's."""
    from synth.color import srgb_to_linear
    from synth.detail import cavity_occlusion, displacement

    p = sample_params(tiny_model, SamplingConfig(detail_scale=2.0, occluders=0.0, specular=False), 64, 0, 6)
    dark = tiny_renderer.render(dataclasses.replace(p, cavity=0.5))
    flat = tiny_renderer.render(dataclasses.replace(p, cavity=0.0))
    for key in ("depth", "depth_coarse", "normals", "albedo", "pncc", "mask", "tri_id", "landmarks"):
        np.testing.assert_array_equal(getattr(dark, key), getattr(flat, key), err_msg=key)
    m = flat.mask
    np.testing.assert_array_equal(dark.image[~m], flat.image[~m])  # the background is untouched
    ratio = srgb_to_linear(dark.image[m] / 255.0) / np.maximum(srgb_to_linear(flat.image[m] / 255.0), 1e-6)
    bright = srgb_to_linear(flat.image[m] / 255.0) > 0.05  # where 8-bit rounding leaves a usable ratio
    disp = displacement(tiny_renderer._detail_bank, p.detail_weights)
    lo = float(cavity_occlusion(disp, 0.5).min())
    assert lo < 0.8  # the sample has a real crease
    assert (ratio[bright] <= 1.02).all() and (ratio[bright] >= lo - 0.02).all()
    crease = (flat.depth - flat.depth_coarse)[m] > 0.5  # > 0.5 mm into the skin (farther away): >= 22 % darker
    assert crease.any() and np.median(ratio[bright & crease[:, None]]) < 0.85
    assert SamplingConfig(detail=False).cavity > 0
    assert sample_params(tiny_model, SamplingConfig(detail=False), 64, 0, 6).cavity == 0.0  # no detail, no creases
    with pytest.raises(ValueError, match="--cavity"):
        SamplingConfig(cavity=-1.0)


def test_backgrounds_and_occluders(tiny_model, tiny_renderer, tmp_path):
    from PIL import Image

    from synth.sampling import Occluder

    p = sample_params(tiny_model, SamplingConfig(background="solid", occluders=0), 64, 0, 1)
    out = tiny_renderer.render(p)
    bg = ~out.mask
    # background colours are sRGB values: decoded to linear for compositing, encoded back exactly
    np.testing.assert_allclose(out.image[bg], np.tile(np.round(p.background_color * 255), (bg.sum(), 1)), atol=1)
    noise = tiny_renderer.render(dataclasses.replace(p, background_kind="noise"))
    assert noise.image[~noise.mask].std() > 1  # a texture, not a colour
    occ = Occluder("rectangle", np.array([32.0, 32.0]), np.array([5.0, 5.0]), 0.0, np.array([1.0, 0.0, 0.0]))
    o = tiny_renderer.render(dataclasses.replace(p, occluders=[occ]))
    np.testing.assert_array_equal(o.image[30, 30], [255, 0, 0])
    np.testing.assert_array_equal(o.depth, out.depth)  # occluders paint the image only
    Image.fromarray(np.full((40, 50, 3), [10, 200, 30], np.uint8)).save(tmp_path / "a.png")
    with FaceRenderer(tiny_model, 64, background_dir=str(tmp_path)) as r:
        img = r.render(dataclasses.replace(p, background_kind="images"))
    np.testing.assert_allclose(img.image[~img.mask], np.tile([10, 200, 30], ((~img.mask).sum(), 1)), atol=1)


def test_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="--platform"):
        FaceRenderer(tiny_model, 64, platform="wgl")
    with pytest.raises(ValueError, match="--size"):
        FaceRenderer(tiny_model, 4)
    with pytest.raises(ValueError, match="--background-dir"):
        FaceRenderer(tiny_model, 64, background_dir="/nonexistent/dir")


# ------------------------------------------------------------------ fast paths vs their references
@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_primitive_id_pass_matches_reference(tiny_model, tiny_renderer, projection):
    """The id pass (GLSL gl_PrimitiveID on the indexed mesh) against the numpy z-buffer (back faces
    culled, as the pass draws), on the same vertices."""
    cfg = SamplingConfig(projection=projection)
    for i in range(3):
        p = sample_params(tiny_model, cfg, 64, 0, i)
        verts = tiny_renderer.geometry(p)[0]
        k = np.asarray(p.intrinsics, np.float64)
        ids = tiny_renderer.render_ids(verts, k, projection)
        ref = rasterize_reference(verts, tiny_model.triangles, p.intrinsics, 64, projection, cull_backfaces=True)
        assert ids.dtype == np.int32 and ids.shape == (64, 64)
        assert ids.min() == -1 and 0 <= ids.max() < tiny_model.n_triangles
        assert (ids >= 0).sum() > 500  # the face covers a good part of the image
        # edge pixels (centre on a shared edge) may go either way
        assert (ids == ref.tri_id).mean() > 0.995


def test_primitive_id_pass_golden_square(square_renderer):
    """Two triangles of a square filling the middle of the image: ids 0 and 1 split along the diagonal."""
    p = _params()
    verts = square_renderer.geometry(p)[0]
    ids = square_renderer.render_ids(verts, np.asarray(p.intrinsics, np.float64), "perspective")
    ref = rasterize_reference(verts, square_renderer.triangles, p.intrinsics, 64, "perspective", cull_backfaces=True)
    assert set(np.unique(ids)) == {-1, 0, 1}
    assert (ids == ref.tri_id).mean() > 0.995


def test_model_arrays_match_model_and_do_not_depend_on_batching(tiny_model, tiny_renderer):
    from synth.render import GEOMETRY_BATCH

    cfg = SamplingConfig()
    params = [sample_params(tiny_model, cfg, 64, 0, i) for i in range(GEOMETRY_BATCH)]
    batch = tiny_renderer.model_arrays(params)
    assert len(batch) == GEOMETRY_BATCH
    for p, (coarse, albedo) in zip(params, batch):
        assert coarse.shape == albedo.shape == (tiny_model.n_vertices, 3)
        assert coarse.dtype == albedo.dtype == np.float32
        # float32 GEMM vs the model's own evaluation: rounding only (coordinates ~100 mm)
        np.testing.assert_allclose(coarse, tiny_model.shape(p.alpha_id, p.alpha_exp), atol=1e-3)
        np.testing.assert_allclose(albedo, tiny_model.albedo(p.beta), atol=1e-5)
    # a sample alone, at another position or among other neighbours: identical bits
    alone = tiny_renderer.model_arrays([params[5]])[0]
    np.testing.assert_array_equal(alone[0], batch[5][0])
    np.testing.assert_array_equal(alone[1], batch[5][1])
    shuffled = tiny_renderer.model_arrays(params[5:0:-1])
    np.testing.assert_array_equal(shuffled[0][0], batch[5][0])
    # nor with the caller's BLAS threads (OpenBLAS splits the columns among them: an ulp here and
    # there on some CPUs; the dataset's workers run one thread, an interactive render(p) all)
    from threadpoolctl import threadpool_limits

    for n in (1, 2, 3):
        with threadpool_limits(limits=n, user_api="blas"):
            again = tiny_renderer.model_arrays(params)
        for b in range(GEOMETRY_BATCH):
            np.testing.assert_array_equal(again[b][0], batch[b][0])
            np.testing.assert_array_equal(again[b][1], batch[b][1])
    # render(p) computes its arrays the same way
    out = tiny_renderer.render(params[5])
    out_b = tiny_renderer.render(params[5], batch[5])
    np.testing.assert_array_equal(out.depth, out_b.depth)
    np.testing.assert_array_equal(out.image, out_b.image)
    with pytest.raises(ValueError, match="params_list"):
        tiny_renderer.model_arrays(params + params[:1])
    with pytest.raises(ValueError, match="params_list"):
        tiny_renderer.model_arrays([])


def test_linear_combination_rows_depend_on_their_own_coefficients_only():
    """synth.kernels.linear_combination: coef @ basis + mean up to float32 rounding, and a row's
    bits are the same alone, at another position, among other rows and whatever BLAS's threads
    (a BLAS GEMM's are not on some CPUs)."""
    from threadpoolctl import threadpool_limits

    from synth.kernels import linear_combination

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((37, 5000)).astype(np.float32)
    mean = rng.standard_normal(5000).astype(np.float32) * 100
    coef = rng.standard_normal((16, 37)).astype(np.float32)
    coef[3, 20:] = 0.0  # a truncated row
    out = linear_combination(coef, basis, mean)
    np.testing.assert_allclose(out, coef.astype(np.float64) @ basis + mean, rtol=0, atol=2e-4)
    for b in (0, 3, 6, 15):
        np.testing.assert_array_equal(linear_combination(coef[b:b + 1], basis, mean)[0], out[b])
    np.testing.assert_array_equal(linear_combination(coef[::-1], basis, mean)[::-1], out)
    # the exact sums: products rounded to float32, added in the order k = 0, 1, ..., then + mean,
    # whatever the tiling (4 rows x 8 terms, then 4, remainders of rows and terms, column blocks)
    for rows in (out.shape[0], 7, 1):
        acc = np.zeros((rows, basis.shape[1]), np.float32)
        for k in range(basis.shape[0]):
            acc = acc + coef[:rows, k:k + 1] * basis[k]
        for block in (8192, 333):  # one column block, several
            np.testing.assert_array_equal(linear_combination(coef[:rows], basis, mean, block=block), acc + mean)
    for n in (1, 2):
        with threadpool_limits(limits=n, user_api="blas"):
            np.testing.assert_array_equal(linear_combination(coef, basis, mean, block=333), out)
    with pytest.raises(ValueError, match="linear_combination"):
        linear_combination(coef, basis[:-1], mean)


def test_interpolated_maps_match_per_pixel_formula(tiny_model, tiny_renderer):
    """The flat-index interpolation: every face pixel's normal / albedo / pncc is the barycentric
    combination of its triangle's vertex values (recomputed here with synth.raster.barycentrics on
    (P, 3, 2) corner arrays)."""
    p = sample_params(tiny_model, SamplingConfig(detail=False), 64, 0, 3)
    out = tiny_renderer.render(p)
    verts, _, normals, albedo = tiny_renderer.geometry(p)
    k = np.asarray(p.intrinsics, np.float64)
    uv, d = cam.project(verts.astype(np.float64), k, p.projection)
    ii, jj = np.nonzero(out.mask)
    tri = tiny_model.triangles[out.tri_id[ii, jj]]  # (P, 3)
    pix = np.stack([jj + 0.5, ii + 0.5], -1)
    lam, z = barycentrics(pix, uv[tri], d[tri], p.projection)  # (P, 3), (P,)
    np.testing.assert_allclose(out.depth[ii, jj], z, rtol=1e-6)
    n = np.einsum("pk,pkc->pc", lam, normals[tri])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    np.testing.assert_allclose(out.normals[ii, jj], n, atol=1e-5)  # float32 interpolation
    np.testing.assert_allclose(out.albedo[ii, jj], np.clip(np.einsum("pk,pkc->pc", lam, albedo[tri]), 0, 1), atol=1e-5)
    pncc = np.asarray(tiny_model.pncc_colors)
    np.testing.assert_allclose(out.pncc[ii, jj], np.clip(np.einsum("pk,pkc->pc", lam, pncc[tri]), 0, 1), atol=1e-5)
    assert not out.normals[~out.mask].any() and not out.depth[~out.mask].any()


# ------------------------------------------------------------------------------ MeshRenderer
@pytest.mark.parametrize("projection,platform", [("perspective", "cpu"), ("weak_perspective", "cpu"),
                                                 ("perspective", "osmesa")])
def test_mesh_renderer_draws_what_the_face_renderer_draws(tiny_model, projection, platform):
    """The same vertices, albedo, camera and light: the same mask, depth, normals and shading."""
    cfg = SamplingConfig(detail=False, background="none", projection=projection)
    p = sample_params(tiny_model, cfg, 64, 3, 1)
    with FaceRenderer(tiny_model, 64, platform=platform) as r:
        out = r.render(p)
        verts, _, _, albedo = r.geometry(p)
    with MeshRenderer(tiny_model.triangles, tiny_model.n_vertices, platform=platform) as mr:
        img = mr.render(verts, p.intrinsics, 64, p.sh, albedo, projection)
        again = mr.render(verts, p.intrinsics, 64, p.sh, albedo, projection)
    np.testing.assert_array_equal(img.mask, out.mask)
    np.testing.assert_array_equal(img.depth, out.depth)
    # same formula; the face renderer rotates model-frame normals, this one takes them from the
    # camera-frame vertices: float32 rounding of a few 1e-5
    np.testing.assert_allclose(img.normals, out.normals, atol=1e-4)
    m = out.mask
    np.testing.assert_allclose(img.image[m], shade(out.albedo[m], out.normals[m], p.sh), atol=1e-4)
    assert (img.image[~m] == 0).all()
    np.testing.assert_array_equal(again.image, img.image)  # a second draw with the same pass


def test_mesh_renderer_golden_square_at_two_sizes():
    """A 100 mm square at 200 mm, f = 64 px, principal point (32, 32): it covers pixels 16..47 at
    size 64; at size 96 and in a 48 x 80 image the same camera draws the same pixels (the rest of
    the image is empty); ambient light 0.5 on white gives 0.5; a colour per vertex is interpolated."""
    v = np.asarray(SQUARE, np.float64) + [0, 0, -200]
    k = cam.intrinsics_matrix(64, 64, 32, 32)
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 0.5 / 0.28209479  # constant irradiance 0.5
    with MeshRenderer(np.array([[0, 1, 2], [0, 2, 3]]), 4) as mr:
        for size in (64, 96, (48, 80)):
            img = mr.render(v, k, size, sh)
            assert img.mask.shape == ((size, size) if isinstance(size, int) else size)
            assert img.mask[16:48, 16:48].all() and img.mask.sum() == 32 * 32, size
            np.testing.assert_allclose(img.depth[img.mask], 200.0, atol=1e-4)
            np.testing.assert_allclose(img.image[img.mask], 0.5, atol=1e-6)
            np.testing.assert_allclose(img.normals[img.mask], [[0, 0, 1]] * 1024, atol=1e-6)
        red_left = mr.render(v, k, 64, sh, colors=np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]]))
    row = red_left.image[32, 16:48]  # left (x = -50, red) to right (x = +50, blue), linear in between
    assert row[0, 0] > 0.45 and row[-1, 2] > 0.45 and np.all(np.diff(row[:, 0]) < 0)


def test_mesh_renderer_bad_arguments(tiny_model):
    with MeshRenderer(tiny_model.triangles, tiny_model.n_vertices) as mr:
        v = np.asarray(tiny_model.mean_shape) + [0, 0, -600]
        k = cam.intrinsics_matrix(64, 64, 32, 32)
        n = tiny_model.n_vertices
        with pytest.raises(ValueError, match=rf"verts_cam must be \({n}, 3\), got \({n - 1}, 3\)"):
            mr.render(v[:-1], k, 64, np.zeros((9, 3)))
        with pytest.raises(ValueError, match="colors must be"):
            mr.render(v, k, 64, np.zeros((9, 3)), colors=np.zeros((3, 3)))
        with pytest.raises(ValueError, match="in front of the camera"):
            mr.render(v + [0, 0, 1000], k, 64, np.zeros((9, 3)))
    with pytest.raises(ValueError, match="triangles must index"):
        MeshRenderer(np.array([[0, 1, 5]]), 3)


@pytest.mark.parametrize("field", ["line_occluders", "facial_hair"])
def test_painted_without_geometry_changes_the_image_only(tiny_model, tiny_renderer, field):
    """--line-occluders and --facial-hair draw from their own streams: switching one on changes the
    image where it was painted and nothing else (not the depth, not the landmarks, not the other
    draws); facial hair only on the face's pixels."""
    from synth.backgrounds import paint_facial_hair, paint_lines

    off = SamplingConfig(background="solid", occluders=0)
    on = dataclasses.replace(off, **{field: 1.0})
    for i in range(4):
        p0, p1 = sample_params(tiny_model, off, 64, 0, i), sample_params(tiny_model, on, 64, 0, i)
        assert not getattr(p0, field) and getattr(p1, field)
        for f in dataclasses.fields(p0):  # every other draw kept
            if f.name != field:
                np.testing.assert_equal(getattr(p1, f.name), getattr(p0, f.name))
        a, b = tiny_renderer.render(p0), tiny_renderer.render(p1)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        changed = (a.image != b.image).any(axis=-1)
        blank = np.zeros((64, 64, 3), np.float32)
        if field == "line_occluders":
            cover = paint_lines(blank, p1.line_occluders, b.landmarks)
        else:
            cover = paint_facial_hair(blank, p1.facial_hair, b.landmarks, b.depth > 0)
            assert not (changed & (b.depth == 0)).any()
        assert changed.any() and not (changed & (cover == 0)).any()  # only where it was painted
