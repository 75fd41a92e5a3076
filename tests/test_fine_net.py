"""train.fine_net: shapes, identity start, input normalisation, hypercolumn width, it can learn."""

from __future__ import annotations

import pytest
import torch

from train.fine_net import IN_CHANNELS, FineNet, FineOutput, normalise_depth


def _inputs(b=2, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    depth = 500.0 + 30.0 * torch.rand(b, h, w, generator=g)
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    mask[:, 3:-3, 4:-4] = True
    return image, torch.where(mask, depth, torch.zeros_like(depth)), mask


def test_full_width_hypercolumn_and_size():
    net = FineNet()
    assert net.hyper_channels == IN_CHANNELS + 64 + 128 + 256 == 453  # the paper's ~450
    widths = [m.out_channels for m in net.head if isinstance(m, torch.nn.Conv2d)]
    assert widths == [50, 50, 10, 1]
    assert sum(p.numel() for p in net.parameters()) * 4 < 20e6  # fits the 20 MB checkpoint budget


@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (3, 19, 23)])
def test_shapes_and_identity_start(b, h, w):
    torch.manual_seed(0)
    net = FineNet(width_mult=0.125)
    image, depth, mask = _inputs(b, h, w)
    out = net(image, depth, mask)
    assert isinstance(out, FineOutput) and out.depth.shape == (b, h, w) and out.residual.shape == (b, h, w)
    assert torch.equal(out.depth, depth)  # zero-initialised last layer: the coarse depth, unchanged
    assert (out.residual == 0).all()


def test_input_normalisation():
    net = FineNet(width_mult=0.125, depth_scale_mm=50.0)
    image, depth, mask = _inputs()
    x = net.inputs(image, depth, mask)
    assert x.shape == (2, IN_CHANNELS, 20, 24)
    assert torch.allclose(x[:, :3], (image - 0.5) / 0.25)
    z = x[:, 3]
    for i in range(2):
        assert abs(float(z[i][mask[i]].median())) < 1e-6  # median 0 on the mask
        assert torch.allclose(z[i][mask[i]], (depth[i][mask[i]] - depth[i][mask[i]].median()) / 50.0)
    assert (z[~mask] == 0).all() and torch.equal(x[:, 4].bool(), mask)
    assert torch.equal(normalise_depth(depth, torch.zeros_like(mask), 10.0), torch.zeros_like(depth))


def test_residual_stays_on_the_mask_and_is_in_mm():
    torch.manual_seed(0)
    net = FineNet(width_mult=0.125, residual_scale_mm=2.0)
    torch.nn.init.constant_(net.head[-1].bias, 0.5)  # the last layer outputs 0.5 everywhere
    image, depth, mask = _inputs()
    out = net(image, depth, mask)
    assert torch.allclose(out.residual[mask], torch.full((int(mask.sum()),), 1.0))  # 0.5 * 2 mm
    assert (out.residual[~mask] == 0).all() and torch.equal(out.depth[~mask], depth[~mask])


def test_it_learns_a_residual_from_the_image():
    # A detail visible in the image (a dark stripe) must become depth: a few Adam steps on an L2
    # to the target residual cut the error well below its start (can fail: a broken gradient path,
    # a head that ignores the hypercolumn).
    torch.manual_seed(0)
    net = FineNet(width_mult=0.125)
    image, depth, mask = _inputs(b=4, h=16, w=16)
    stripe = torch.zeros(4, 16, 16)
    stripe[:, 7:9] = 1.0
    image = image * 0.2 + 0.5 * (1 - stripe[:, None])
    target = -0.8 * stripe * mask  # mm: a groove where the image is dark
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        out = net(image, depth, mask)
        loss = ((out.residual - target) ** 2)[mask].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_bad_inputs():
    net = FineNet(width_mult=0.125)
    image, depth, mask = _inputs()
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\)"):
        net(image[:, :2], depth, mask)
    with pytest.raises(ValueError, match=r"depth_coarse must be \(2, 20, 24\)"):
        net(image, depth[:, :10], mask)
    with pytest.raises(ValueError, match=r"mask must be \(2, 20, 24\)"):
        net(image, depth, mask[:1])
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        FineNet(width_mult=0)
