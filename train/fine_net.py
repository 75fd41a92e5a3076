"""FineNet: the hypercolumn network that adds fine detail to the coarse depth (phase 2).

After Richardson et al. 2017 (Sec. 4): a VGG-like trunk

    full resolution:   conv3x3 64, conv3x3 64            (BN + ReLU each)
    max-pool /2:       conv3x3 128, conv3x3 128
    max-pool /4:       conv3x3 256, conv3x3 256, conv3x3 256

whose three stages' last feature maps are upsampled (bilinear) back to full resolution and
concatenated with the input into a hypercolumn of ``5 + 64 + 128 + 256 = 453`` channels per pixel,
followed by 1x1 convolutions ``453 -> 50 -> 50 -> 10 -> 1`` (BN + ReLU between) predicting a
**residual** depth. ``width_mult`` scales every width (tiny configurations for tests). The last
layer starts at zero, so an untrained FineNet returns the coarse depth unchanged.

Input (``(B, 5, H, W)``, all from the photo and the network's own coarse estimate, never ground
truth): the image in [0, 1] (as the photo gives it, sRGB) mapped to ``(x - 0.5) / 0.25``; the coarse
depth normalised per image, ``(z - median_mask(z)) / depth_scale_mm`` on the coarse mask, 0 off it
(``depth_scale_mm`` = 50: a face spans about +-1); and the coarse mask (1 on the face).

Output: ``depth = z_coarse + refine * residual_scale_mm * y`` with ``y`` the last layer's output
and ``refine`` the pixels to refine (the coarse mask by default), so ``residual_scale_mm``
(default 1 mm, the order of wrinkles and folds: up to ~2.4 mm deep in the renders) sets the units the network works in; elsewhere
the depth stays the coarse one (0 off-face).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FineOutput", "FineNet", "normalise_depth", "IN_CHANNELS"]

IN_CHANNELS = 5  # image RGB, normalised coarse depth, coarse mask


@dataclasses.dataclass
class FineOutput:
    """FineNet's refined depth and the residual it added (both ``(B, H, W)`` mm)."""

    depth: torch.Tensor
    residual: torch.Tensor


def normalise_depth(depth: torch.Tensor, mask: torch.Tensor, scale_mm: float) -> torch.Tensor:
    """``(depth - median of depth on mask) / scale_mm`` per image on ``mask``, 0 off it; ``(B, H, W)``.
    The median is taken without gradient (a per-image constant)."""
    if depth.ndim != 3 or mask.shape != depth.shape:
        raise ValueError(f"depth and mask must both be (B, H, W), got {tuple(depth.shape)} and {tuple(mask.shape)}")
    m = mask.bool()
    med = torch.zeros(depth.shape[0], dtype=depth.dtype, device=depth.device)
    with torch.no_grad():
        for i in range(depth.shape[0]):
            sel = depth[i][m[i]]
            if sel.numel():
                med[i] = sel.median()
    return torch.where(m, (depth - med[:, None, None]) / scale_mm, torch.zeros_like(depth))


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FineNet(nn.Module):
    """The hypercolumn FineNet (module docstring). ``forward(image, depth_coarse, mask) -> FineOutput``."""

    def __init__(self, width_mult: float = 1.0, depth_scale_mm: float = 50.0, residual_scale_mm: float = 1.0):
        """Defaults are those of :class:`train.config.FineConfig` (``--width-mult``,
        ``--depth-scale-mm``, ``--residual-scale-mm``)."""
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not (depth_scale_mm > 0 and residual_scale_mm > 0):
            raise ValueError(f"depth_scale_mm and residual_scale_mm must be > 0, got {depth_scale_mm}, {residual_scale_mm}")
        c1, c2, c3 = (max(4, int(round(c * width_mult))) for c in (64, 128, 256))
        h1, h2 = max(4, int(round(50 * width_mult))), max(2, int(round(10 * width_mult)))
        self.stage1 = nn.Sequential(*_conv_bn_relu(IN_CHANNELS, c1), *_conv_bn_relu(c1, c1))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(c1, c2), *_conv_bn_relu(c2, c2))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(c2, c3), *_conv_bn_relu(c3, c3),
                                    *_conv_bn_relu(c3, c3))
        self.hyper_channels = IN_CHANNELS + c1 + c2 + c3
        self.head = nn.Sequential(*_conv_bn_relu(self.hyper_channels, h1, 1), *_conv_bn_relu(h1, h1, 1),
                                  *_conv_bn_relu(h1, h2, 1), nn.Conv2d(h2, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head[-1].weight)  # starts as the identity refinement
        nn.init.zeros_(self.head[-1].bias)
        self.depth_scale_mm, self.residual_scale_mm = float(depth_scale_mm), float(residual_scale_mm)
        self.width_mult = float(width_mult)

    def inputs(self, image: torch.Tensor, depth_coarse: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The normalised input stack ``(B, 5, H, W)`` (module docstring)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        b, _, h, w = image.shape
        if depth_coarse.shape != (b, h, w):
            raise ValueError(f"depth_coarse must be ({b}, {h}, {w}) like the image, got {tuple(depth_coarse.shape)}")
        if mask.shape != (b, h, w):
            raise ValueError(f"mask must be ({b}, {h}, {w}) like the image, got {tuple(mask.shape)}")
        x = (image.to(depth_coarse.dtype) - 0.5) / 0.25
        z = normalise_depth(depth_coarse, mask, self.depth_scale_mm)
        return torch.cat([x, z[:, None], mask[:, None].to(x.dtype)], dim=1)  # (B, 3 + 1 + 1, H, W)

    def forward(self, image: torch.Tensor, depth_coarse: torch.Tensor, mask: torch.Tensor,
                refine: torch.Tensor | None = None) -> FineOutput:
        """``image (B, 3, H, W)`` in [0, 1], ``depth_coarse (B, H, W)`` mm, ``mask (B, H, W)`` bool
        the coarse face; the residual is applied on ``refine (B, H, W)`` (default ``mask``; e.g.
        :func:`train.losses.refine_mask`, the face without its outline)."""
        if refine is None:
            refine = mask
        elif refine.shape != mask.shape:
            raise ValueError(f"refine must be {tuple(mask.shape)} like mask, got {tuple(refine.shape)}")
        x = self.inputs(image, depth_coarse, mask)
        size = x.shape[-2:]
        f1 = self.stage1(x)  # (B, c1, H, W)
        f2 = self.stage2(f1)  # (B, c2, H/2, W/2)
        f3 = self.stage3(f2)  # (B, c3, H/4, W/4)
        up = dict(size=size, mode="bilinear", align_corners=False)
        hyper = torch.cat([x, f1, F.interpolate(f2, **up), F.interpolate(f3, **up)], dim=1)  # (B, ~453, H, W)
        y = self.head(hyper)[:, 0]  # (B, H, W)
        residual = y.to(depth_coarse.dtype) * self.residual_scale_mm * refine.to(depth_coarse.dtype)
        return FineOutput(depth=depth_coarse + residual, residual=residual)

    def hyperparameters(self) -> dict[str, float]:
        """What rebuilds this network (stored in checkpoints next to the weights)."""
        return {"width_mult": self.width_mult, "depth_scale_mm": self.depth_scale_mm,
                "residual_scale_mm": self.residual_scale_mm}

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, float]) -> "FineNet":
        """The (untrained) network :meth:`hyperparameters` describes."""
        return cls(width_mult=float(hp["width_mult"]), depth_scale_mm=float(hp["depth_scale_mm"]),
                   residual_scale_mm=float(hp["residual_scale_mm"]))
