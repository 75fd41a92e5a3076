"""Run a CLI module that pauses at a chosen point, so that a test can ``kill -9`` it exactly there.

    python tests/kill_points.py MARKER POINT COUNT MODULE [ARGS...]

runs ``python -m MODULE ARGS...`` in this process with one hook installed; at the COUNT-th event
of POINT the process writes its pid to the file MARKER and sleeps until it is killed:

- ``shard-write``: after the COUNT-th ``synth.shards.ShardWriter.write`` (that sample is in the
  temporary shard file, the shard is not finished);
- ``ckpt-write``: inside the COUNT-th ``torch.save`` (a checkpoint), half of its bytes written
  and fsynced to the temporary checkpoint file, not renamed yet;
- ``train-step``: at the COUNT-th optimiser step, before it changes the weights (the log rows of
  the previous steps are written).

Only the paused process is affected: tests compare what is left behind and what a rerun makes of it
with an uninterrupted run. Not collected by pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import io
import os
import runpy
import sys
import time
from pathlib import Path


def _pause(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:  # until the test's SIGKILL
        time.sleep(60)


def install(point: str, count: int, marker: str) -> None:
    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == count

    if point == "shard-write":
        from synth.shards import ShardWriter

        write = ShardWriter.write

        def paused_write(self, i, encoded):
            write(self, i, encoded)
            if hit():
                _pause(marker)

        ShardWriter.write = paused_write
    elif point == "ckpt-write":
        import torch

        save = torch.save

        def paused_save(obj, f, *args, **kwargs):
            if not hit():
                return save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _pause(marker)

        torch.save = paused_save
    elif point == "train-step":
        import torch

        step = torch.optim.AdamW.step

        def paused_step(self, *args, **kwargs):
            if hit():
                _pause(marker)
            return step(self, *args, **kwargs)

        torch.optim.AdamW.step = paused_step
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    marker, point, count, module, *args = sys.argv[1:]
    install(point, int(count), marker)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
