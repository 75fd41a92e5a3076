"""Benchmark: the compiled kernels of synth's per-sample work next to the numpy/BLAS code they replace,
timed side by side in this run (one BLAS thread, as in dataset workers; best of ``--repeats``).

1. model evaluation of the built-in model (shape and albedo parts, ``FaceRenderer.model_arrays``):
   :func:`synth.kernels.linear_combination` (fixed-order sums, tiled 4 rows x 4 terms) vs the
   one-thread OpenBLAS GEMM padded to 16 rows that it replaced at stop 26, for 16 samples and 1;
2. sRGB encoding of a 224 px image: :func:`synth.color.linear_to_srgb_u8` (exact thresholds) vs
   the float32 formula it replaced, and how many of ``--values`` random values the formula puts
   one level off;
3. a photo background's decode x gains + clip: :func:`synth.color.srgb_u8_to_linear_gained` vs
   numpy's table look-up, multiply and clip (the same bits, checked here).

    python benchmarks/kernels.py [--repeats 5] [--values 10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import morphable_model as mm
from synth.color import linear_to_srgb, linear_to_srgb_u8, srgb_u8_to_linear, srgb_u8_to_linear_gained
from synth.kernels import linear_combination
from synth.render import FaceRenderer


def best_ms(f, repeats: int) -> float:
    f()  # compile / warm caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def float32_formula_u8(x: np.ndarray) -> np.ndarray:
    """The encoder before stop 27: the float32 curve, times 255, rounded half to even."""
    out = linear_to_srgb(np.asarray(x, dtype=np.float32))
    out *= 255.0
    np.round(out, out=out)
    return out.astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--values", type=int, default=10_000_000, help="random values for the encoders' comparison")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    model = mm.load_model(None)
    shape_t, shape_mean, albedo_t, albedo_mean = FaceRenderer(model, 64, platform="cpu")._model_bases()
    c_shape = rng.standard_normal((16, shape_t.shape[0])).astype(np.float32)
    c_albedo = rng.standard_normal((16, albedo_t.shape[0])).astype(np.float32)

    def gemm(rows: int):
        s = np.zeros_like(c_shape)
        s[:rows] = c_shape[:rows]
        a = np.zeros_like(c_albedo)
        a[:rows] = c_albedo[:rows]
        return s @ shape_t + shape_mean, a @ albedo_t + albedo_mean

    def kernel(rows: int):
        return (linear_combination(c_shape[:rows], shape_t, shape_mean),
                linear_combination(c_albedo[:rows], albedo_t, albedo_mean))

    image = rng.random((224, 224, 3)).astype(np.float32) ** 2
    photo = np.rot90(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)[:, ::-1], 1)
    gains = np.exp(rng.uniform(-0.5, 0.5, 3)).astype(np.float32)

    def numpy_gained():
        lin = srgb_u8_to_linear(photo)
        lin *= gains
        return np.clip(lin, 0.0, 1.0, out=lin)

    with threadpool_limits(limits=1, user_api="blas"):
        print(f"model evaluation, built-in model ({model.n_vertices} vertices; shape + albedo), ms, best of "
              f"{args.repeats}:")
        for rows in (16, 1):
            tg, tk = best_ms(lambda: gemm(rows), args.repeats), best_ms(lambda: kernel(rows), args.repeats)
            print(f"  {rows:2d} samples: BLAS GEMM padded to 16 rows {tg:6.1f} ({tg / rows:5.2f}/sample), "
                  f"linear_combination {tk:6.1f} ({tk / rows:5.2f}/sample): {tk / tg:.2f}x")
        te, tf = best_ms(lambda: linear_to_srgb_u8(image), args.repeats), best_ms(lambda: float32_formula_u8(image),
                                                                                   args.repeats)
        print(f"sRGB encoding of a 224 px image: float32 formula {tf:.2f} ms, exact thresholds {te:.2f} ms "
              f"({tf / te:.1f}x faster)")
        x = rng.random(args.values).astype(np.float32) ** 2
        off = int(np.count_nonzero(float32_formula_u8(x) != linear_to_srgb_u8(x)))
        print(f"  the float32 formula is one level off on {off} of {args.values} random values (x = u^2)")
        assert np.array_equal(numpy_gained(), srgb_u8_to_linear_gained(photo, gains))
        tn, tl = best_ms(numpy_gained, args.repeats), best_ms(lambda: srgb_u8_to_linear_gained(photo, gains),
                                                              args.repeats)
        print(f"photo background decode x gains + clip, 224 px rotated view: numpy {tn:.2f} ms, per-channel "
              f"tables {tl:.2f} ms ({tn / tl:.1f}x faster, the same bits)")


if __name__ == "__main__":
    main()
