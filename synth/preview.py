"""A PNG preview grid of the first samples of a shard (``synth-cli preview``).

matplotlib is used through its object API (``matplotlib.figure.Figure`` drawn by the Agg canvas),
so nothing here selects a global backend or touches pyplot's state.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .shards import ShardReader

__all__ = ["preview_grid"]


def preview_grid(shard: str | os.PathLike, out: str | os.PathLike, n_samples: int = 4, model=None) -> Path:
    """PNG grid: one row per sample, columns image (+ visible landmarks green, hidden red),
    depth, normals, PNCC, mask (and depth_coarse - depth when detail is on). ``model``: the
    shard's morphable model (default: the built-in model it names), which recomputes its maps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if n_samples < 1:
        raise ValueError(f"--samples must be >= 1, got {n_samples}")
    with ShardReader(shard, model=model) as r:
        rows = [r.read(i) for i in range(min(n_samples, len(r)))]
    if not rows:
        raise ValueError(f"shard {str(shard)!r} holds no samples")
    cols = ["image", "depth", "normals", "pncc", "mask"] + (["detail"] if "depth_coarse" in rows[0] else [])
    fig = Figure(figsize=(2.2 * len(cols), 2.2 * len(rows)))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: savefig renders with Agg
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for i, s in enumerate(rows):
        m = s["mask"]
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.set_axis_off()
            if c == "image":
                ax.imshow(s["image"])
                lm, vis = s["landmarks"], s["landmarks_visible"]
                ax.scatter(lm[vis, 0] - 0.5, lm[vis, 1] - 0.5, s=3, c="lime")
                ax.scatter(lm[~vis, 0] - 0.5, lm[~vis, 1] - 0.5, s=3, c="red")
                ax.set_title(f"#{int(s['index'])}", fontsize=7)
            elif c == "depth":
                d = np.where(m, s["depth"], np.nan)
                ax.imshow(d, cmap="viridis_r")
            elif c == "normals":
                ax.imshow(np.where(m[..., None], (s["normals"] + 1) / 2, 0))
            elif c == "pncc":
                ax.imshow(s["pncc"])
            elif c == "mask":
                ax.imshow(m, cmap="gray")
            else:
                ax.imshow(np.where(m, s["depth_coarse"] - s["depth"], np.nan), cmap="RdBu")
            if i == 0 and c != "image":
                ax.set_title(c, fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    return out
