"""synth.preview: the PNG grid, drawn without touching matplotlib's global state."""
import subprocess
import sys

import numpy as np


def test_preview_grid_draws_and_leaves_matplotlib_alone(tiny_shards, tmp_path):
    shards = tiny_shards(4, 32, 0, 4)
    out = tmp_path / "grid.png"
    code = (
        "import sys, matplotlib\n"
        # the raw rcParams entry (reading it through rcParams[...] would resolve it, importing pyplot)
        "raw = lambda: dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "before = raw()\n"
        "from synth.preview import preview_grid\n"
        f"preview_grid({str(shards / 'shard-00000.h5')!r}, {str(out)!r}, 3)\n"
        "print(before == raw(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["True", "False"]  # no backend switch, pyplot never imported
    from PIL import Image

    with Image.open(out) as im:
        a = np.asarray(im)
    # 3 rows x 6 columns (detail on) of 2.2 inch panels at 100 dpi
    assert a.shape[:2] == (660, 1320) and a.std() > 10
