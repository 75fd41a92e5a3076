"""Fit SH lighting to a real photo by least squares and place it in the synthetic lighting prior.

1. Detect the face and its 68 landmarks (:class:`train.detector.FaceDetector`).
2. Fit the pose and translation of the built-in model's mean face to the 51 inner landmarks
   (perspective camera, focal length from ``--fov``; scipy least squares on the reprojection error).
3. Render its per-pixel camera-frame normals and mean albedo with the synth renderer and keep the
   pixels on skin (inner face region, away from eyes, brows and lips).
4. Per channel, least squares ``photo_linear = albedo * (sh_basis(normal) @ sh)`` for the 9
   irradiance coefficients (the photo's sRGB decoded to linear).
5. Compare summary statistics of the fit with 3 000 draws of ``synth.lighting.sample_sh`` (default
   ``sh9`` prior): the mean shading of frontal normals (brightness), its log R/G and log B/G
   (colour), the directional part ``|L1| / L0`` of the luminance, and the light's elevation /
   azimuth; printed with the fit's percentile in the prior.

The albedo is the model's mean (a medium skin; ``--melanin`` moves it along the skin axis); a
lighter subject makes the fitted shading that much brighter (brightness and albedo are ambiguous
in one photo) — the colour and direction statistics do not depend on it. The order-2
coefficients get a small ridge penalty (``--ridge``): one face's normals span only a cap of the
sphere. Only the skin below the brows is used (hair often covers the forehead). Usage: ``python scripts/fit_photo_lighting.py [--image PATH]``
(default: scikit-image's ``astronaut``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

import numpy as np
from scipy.optimize import least_squares

from morphable_model import load_model
from synth import camera as cam
from synth.lighting import LightingConfig, sample_sh, sh_basis
from synth.render import FaceRenderer
from synth.sampling import SampleParams

INNER = np.arange(17, 68)
LUMA = np.array([0.2126, 0.7152, 0.0722])


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    c = img.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def fit_pose(model, landmarks_2d: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pose (3,), translation (3,)) of the mean face whose landmarks project onto ``landmarks_2d``."""
    pts = model.mean_shape[model.landmarks[INNER]].astype(np.float64)
    target = landmarks_2d[INNER].astype(np.float64)
    f = intrinsics[0, 0]
    iod_px = np.linalg.norm(landmarks_2d[36] - landmarks_2d[45])
    iod_mm = np.linalg.norm(model.mean_shape[model.landmarks[36]] - model.mean_shape[model.landmarks[45]])
    depth = f * iod_mm / iod_px
    centre = (target.mean(0) - intrinsics[:2, 2]) / f * depth
    x0 = np.array([0.0, 0.0, 0.0, centre[0], -centre[1], -depth - pts[:, 2].mean()])

    def residual(x):
        rot = cam.rotation_matrix(*x[:3])
        uv, _ = cam.project(cam.to_camera(pts, rot, x[3:]), intrinsics)
        return (uv - target).ravel()

    sol = least_squares(residual, x0)
    rms = math.sqrt(np.mean(sol.fun**2))
    logging.info("pose fit: yaw %.1f pitch %.1f roll %.1f deg, distance %.0f mm, rms %.2f px",
                 *np.degrees(sol.x[:3]), -sol.x[5], rms)
    return sol.x[:3].astype(np.float32), sol.x[3:].astype(np.float32)


def statistics(sh: np.ndarray) -> dict[str, float]:
    """Brightness, colour and direction of irradiance SH ``(9, 3)``."""
    k = np.arange(64) + 0.5
    z = 0.3 + 0.7 * k / 64  # frontal normals (camera-facing cap)
    phi = k * math.pi * (3 - math.sqrt(5))
    n = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], -1)
    shading = (sh_basis(n) @ sh).mean(0)  # (3,)
    lum = sh @ LUMA  # (9,) luminance coefficients
    l1 = np.array([lum[3], lum[1], lum[2]])  # x, y, z dipole (basis order: Y1-1 = y, Y10 = z, Y11 = x)
    return {
        "brightness": float(shading @ LUMA),
        "log_rg": float(np.log(shading[0] / shading[1])),
        "log_bg": float(np.log(shading[2] / shading[1])),
        "directional": float(np.linalg.norm(l1) / max(lum[0], 1e-9)),
        "elevation_deg": float(np.degrees(np.arcsin(l1[1] / max(np.linalg.norm(l1), 1e-9)))),
        "azimuth_deg": float(np.degrees(np.arctan2(l1[0], l1[2]))),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=None, help="photo (default: skimage.data.astronaut())")
    ap.add_argument("--fov", type=float, default=30.0, help="assumed horizontal field of view, degrees")
    ap.add_argument("--melanin", type=float, default=0.0, help="albedo: melanin coefficient (std) of the mean face")
    ap.add_argument("--ridge", type=float, default=0.1,
                    help="ridge weight on the order-2 coefficients (x the mean diagonal of the normal equations)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.image is None:
        from skimage import data

        photo = data.astronaut()
    else:
        from PIL import Image

        photo = np.asarray(Image.open(args.image).convert("RGB"))
    from train.detector import FaceDetector

    with FaceDetector() as det:
        faces = [f for f in det.detect(photo) if f.landmarks is not None]
    if not faces:
        raise SystemExit("no face found")
    h, w = photo.shape[:2]
    size = max(h, w)
    canvas = np.zeros((size, size, 3), np.uint8)  # the renderer is square: pad
    canvas[:h, :w] = photo
    f = 0.5 * size / math.tan(math.radians(args.fov) / 2)
    k = cam.intrinsics_matrix(f, f, size / 2, size / 2)
    model = load_model(None)
    pose, t = fit_pose(model, faces[0].landmarks, k)
    beta = np.zeros(model.n_albedo, np.float32)
    beta[0] = args.melanin  # the built-in model's first albedo column is melanin
    params = SampleParams(
        index=0, alpha_id=np.zeros(model.n_id, np.float32), alpha_exp=np.zeros(model.n_exp, np.float32),
        beta=beta, pose=pose, translation=t, intrinsics=k.astype(np.float32),
        projection="perspective", sh=np.zeros((9, 3), np.float32), detail_weights=None, background_kind="none",
        background_color=np.zeros(3, np.float32), background_seed=0, occluders=[],
    )
    with FaceRenderer(model, size=size) as renderer:
        out = renderer.render(params)
    # skin of the inner face below the brows (a fringe of hair often covers the forehead)
    brow_y = model.mean_shape[model.landmarks[17:27], 1].min()
    skin_vertex = model.face_region & model.region_mask("face") & (model.mean_shape[:, 1] < brow_y - 4.0)
    skin_tri = skin_vertex[model.triangles].all(axis=1)
    albedo = out.albedo
    sel = (out.tri_id >= 0) & skin_tri[np.maximum(out.tri_id, 0)]
    sel &= np.abs(albedo - albedo[sel].mean(0)).max(-1) < 0.06  # skin tone only (no brows, lips)
    sel &= (canvas.max(-1) < 250) & (canvas.min(-1) > 5)  # no clipped photo pixels
    sel[:, w:] = False
    sel[h:, :] = False
    y = sh_basis(out.normals[sel].astype(np.float64))  # (P, 9)
    a = albedo[sel].astype(np.float64)  # (P, 3)
    img = srgb_to_linear(canvas)[sel]  # (P, 3)
    # ridge on the order-2 coefficients: normals of one face span a cap of the sphere, so the
    # constant, z and 3z^2-1 terms are nearly collinear without it
    penalty = np.zeros(9)
    penalty[4:] = 1.0
    sh = []
    for c in range(3):
        design = a[:, c:c + 1] * y  # (P, 9)
        gram = design.T @ design  # (9, 9)
        lam = args.ridge * np.trace(gram) / 9.0
        sh.append(np.linalg.solve(gram + lam * np.diag(penalty), design.T @ img[:, c]))
    sh = np.stack(sh, 1)  # (9, 3)
    fitted = a * (y @ sh)
    rel = np.sqrt(np.mean((fitted - img) ** 2)) / img.mean()
    print(f"fitted on {sel.sum()} skin pixels; relative RMS residual {rel:.3f}")
    print("sh (9, 3):\n" + np.array2string(sh, precision=3, suppress_small=True))
    fit = statistics(sh)
    prior = [statistics(sample_sh(np.random.default_rng([0, 3, i]), LightingConfig())) for i in range(3000)]
    print(f"{'statistic':>14} {'photo fit':>10} {'prior 5%':>9} {'50%':>7} {'95%':>7} {'fit percentile':>15}")
    for key, value in fit.items():
        vals = np.array([p[key] for p in prior])
        pct = 100.0 * (vals < value).mean()
        lo, med, hi = np.percentile(vals, [5, 50, 95])
        print(f"{key:>14} {value:>10.3f} {lo:>9.3f} {med:>7.3f} {hi:>7.3f} {pct:>14.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
