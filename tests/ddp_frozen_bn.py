"""``train-cli`` with BatchNorm frozen: normalisation by the running statistics, as in eval mode,
while training (the affine weights still learn). Each sample's output then no longer depends on
the other samples of its batch, so 2 DDP ranks with 4 samples each can equal 1 process with the
8 together (tests/test_train_crash.py). Run by torchrun as a script::

    torchrun --nproc-per-node 2 tests/ddp_frozen_bn.py coarse ...

Not collected by pytest (no ``test_`` prefix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def frozen_batch_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``BatchNorm2d.forward`` using the running statistics whatever the mode (never updating them)."""
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


if __name__ == "__main__":
    torch.nn.BatchNorm2d.forward = frozen_batch_norm_forward
    from train.cli import main

    main()
