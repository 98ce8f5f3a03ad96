"""stitch.deep.model: shapes, the 4-point homography, the correlation lookup, gradients, any input size."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_perspective_transform

from stitch.deep.model import (
    HomographyRefiner,
    ModelConfig,
    apply_h,
    bilinear_windows,
    corners_to_h,
    count_parameters,
    h_to_corners,
    mace,
    sequence_loss,
)
from stitch.errors import ConfigError


def test_smoke():
    torch.manual_seed(0)
    net = HomographyRefiner(ModelConfig(global_iters=2, local_iters=1)).eval()
    a = torch.rand(2, 1, 64, 64)
    m = torch.ones_like(a)
    preds = net(a, m, a, m)
    assert len(preds) == 2 + 1 + 6 and preds[-1].shape == (2, 4, 2)  # global, local, LK (2 per level)
    assert count_parameters(HomographyRefiner()) < 5_000_000


def test_any_size():
    net = HomographyRefiner(ModelConfig(global_iters=1, local_iters=1)).eval()
    for h, w in ((64, 96), (128, 128), (48, 160)):
        a = torch.rand(1, 1, h, w)
        assert net(a, torch.ones_like(a), a, torch.ones_like(a))[-1].shape == (1, 4, 2)


def test_four_point_h():
    """Known answer: the same matrix as kornia and OpenCV; corners map exactly; round trip to offsets."""
    g = torch.Generator().manual_seed(1)
    delta = (torch.rand(3, 4, 2, generator=g, dtype=torch.float64) - 0.5) * 40
    H = corners_to_h(delta, 128, 96)
    c = torch.tensor([[0, 0], [128, 0], [128, 96], [0, 96]], dtype=torch.float64).expand(3, 4, 2)
    torch.testing.assert_close(H, get_perspective_transform(c, c + delta), rtol=1e-9, atol=1e-9)
    ref = cv2.getPerspectiveTransform(c[0].numpy().astype(np.float32), (c[0] + delta[0]).numpy().astype(np.float32))
    np.testing.assert_allclose(H[0].numpy(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(apply_h(H, c), c + delta, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h_to_corners(H, 128, 96), delta, rtol=1e-9, atol=1e-9)


def test_shift():
    """A pure translation t: R(c) = c + t for every corner, and the grid moves by t."""
    t = torch.tensor([3.5, -2.0], dtype=torch.float64)
    H = corners_to_h(t.expand(1, 4, 2), 64, 64)
    torch.testing.assert_close(H[0], torch.tensor([[1, 0, 3.5], [0, 1, -2.0], [0, 0, 1]], dtype=torch.float64))


def test_bilinear_windows_equals_grid_sample():
    g = torch.Generator().manual_seed(2)
    b, n, h, w, r = 2, 5, 7, 9, 2
    maps = torch.randn(b, n, h, w, generator=g)
    coords = torch.rand(b, n, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2.0  # some outside
    got = bilinear_windows(maps, coords, r)
    d = torch.arange(-r, r + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    pts = coords.reshape(b * n, 1, 1, 2) + torch.stack([dx, dy], -1)
    grid = torch.stack([2 * pts[..., 0] / (w - 1) - 1, 2 * pts[..., 1] / (h - 1) - 1], -1)
    ref = F.grid_sample(maps.reshape(b * n, 1, h, w), grid, align_corners=True, padding_mode="zeros")
    torch.testing.assert_close(got, ref.reshape(b, n, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stage", ["global", "local", "lk"])
def test_gradcheck(stage):
    """Analytical = numerical gradients w.r.t. the input, through normalisation, lookups and warps (float64).

    One iteration of one stage: between iterations the offsets are detached (RAFT-style), a path that
    autograd deliberately does not follow, so a longer chain would differ from finite differences.
    """
    torch.manual_seed(1)
    cfg = ModelConfig(enc_channels=(4, 4, 4), feat_dim=4, local_dim=4, hidden=6, radius=1, levels=2, global_iters=1,
                      local_iters=1)
    net = HomographyRefiner(cfg).double()
    for block in (net.global_update, net.local_update):  # non-zero heads: the output depends on the input
        torch.nn.init.normal_(block.head.weight, std=0.5)
    a = torch.rand(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    m = torch.ones_like(b)
    iters = {"global": {"global_iters": 1, "local_iters": 0, "lk_iters": (0, 0, 0)},
             "local": {"global_iters": 0, "local_iters": 1, "lk_iters": (0, 0, 0)},
             "lk": {"global_iters": 0, "local_iters": 0, "lk_iters": (0, 1, 0)}}[stage]
    net(a, m, b, m, **iters)[-1].sum().backward()
    assert a.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda x: net(x, m, b, m, **iters)[-1], (a,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_predict_rounds_compose():
    """With rounds=2 the second pass refines on the re-warped image; the result stays a valid offset set."""
    torch.manual_seed(0)
    net = HomographyRefiner(ModelConfig(global_iters=1, local_iters=1)).eval()
    a = torch.rand(1, 1, 64, 64)
    m = torch.ones_like(a)
    d1 = net.predict(a, m, a, m, rounds=1)
    d2 = net.predict(a, m, a, m, rounds=2)
    assert d1.shape == d2.shape == (1, 4, 2) and torch.isfinite(d2).all()


def test_losses():
    p = [torch.zeros(1, 4, 2), torch.ones(1, 4, 2)]
    t = torch.ones(1, 4, 2)
    assert sequence_loss(p, t, gamma=0.5).item() == pytest.approx(0.5)
    assert mace(torch.zeros(1, 4, 2), torch.tensor([[[3.0, 4.0]] * 4])).item() == pytest.approx(5.0)


def test_exception():
    net = HomographyRefiner(ModelConfig(global_iters=1, local_iters=0))
    a = torch.rand(1, 1, 60, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(a, torch.ones_like(a), a, torch.ones_like(a))
    with pytest.raises(ConfigError, match="model.radius"):
        ModelConfig(radius=0)
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig.from_dict({"depth": 3})
    with pytest.raises(ValueError, match="img_a"):
        net(torch.rand(1, 1, 64, 64), torch.ones(1, 1, 64, 64), torch.rand(1, 1, 32, 32), torch.ones(1, 1, 32, 32))


def _shifted_pair(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth random image and the same image shifted by (2.5, -1.5) px: (img, shifted, ones)."""
    img = torch.nn.functional.avg_pool2d(torch.rand(batch, 1, 256, 256), 2)  # smooth enough for LK to move
    shift = torch.tensor([[1.0, 0, 2.5], [0, 1.0, -1.5], [0, 0, 1.0]]).expand(batch, 3, 3)
    from kornia.geometry.transform import warp_perspective

    return img, warp_perspective(img, shift, (128, 128), align_corners=True), torch.ones_like(img)


@pytest.mark.parametrize("lk_dim", [0, 3, 4, 6])  # channel groups [img, mask, pad], [4] + [mask], [4] + [3], [4] + [3]
@pytest.mark.parametrize("step", [1.0, 1.5])
def test_lucas_kanade_inference_path_equals_autograd_path(lk_dim, step):
    """The CPU inference path (numpy + OpenCV) gives the training path's estimates (grad enabled), step by step."""
    torch.manual_seed(3)
    net = HomographyRefiner(ModelConfig(global_iters=1, local_iters=1, lk_iters=(1, 2, 4), lk_dim=lk_dim)).eval()
    img, b, m = _shifted_pair()
    m[1, :, :, :20] = 0  # a partial mask: A's invalid samples drop out of the error
    with torch.enable_grad():
        slow = net(img, m, b, m, lk_step=step)
    with torch.no_grad():
        fast = net(img, m, b, m, lk_step=step)
    assert len(fast) == len(slow) == 2 + 7 and fast[-1].abs().max() > 0.5  # the estimate moved
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f.float(), s.detach().float(), atol=2e-3, rtol=0)


def test_lk_refine_host_equals_predict():
    """The numpy fine mode (LK features through ``Encoder.lk_host``, the LK stage alone) returns predict()'s matrix."""
    torch.manual_seed(4)
    net = HomographyRefiner(ModelConfig()).eval()
    img, b, m = _shifted_pair(batch=1)
    m[..., :, 110:] = 0
    iters = (0, 4, 6)
    with torch.no_grad():
        lk = net._encode(torch.cat([img, b]), torch.cat([m, m]), coarse=False)[2].permute(0, 2, 3, 1).numpy()
    host = net.encoder.lk_host(np.concatenate([img[:, 0], b[:, 0]]).copy(), np.concatenate([m[:, 0], m[:, 0]]).copy())
    np.testing.assert_allclose(host, lk, atol=1e-4)
    delta = net.predict(img, m, b, m, rounds=1, global_iters=0, local_iters=0, lk_iters=iters, lk_step=1.5)
    R = net.lk_refine_host(img[0, 0].numpy(), m[0, 0].numpy(), b[0, 0].numpy(), m[0, 0].numpy(), iters, 1.5)
    np.testing.assert_allclose(R, corners_to_h(delta.double(), 128, 128)[0].numpy(), atol=1e-4)
    assert R[0, 2] > 0.5  # towards the shift (2.5, -1.5) even untrained: the image is one of the LK channels
    with pytest.raises(ValueError, match="lk_iters"):
        net.lk_refine_host(img[0, 0].numpy(), m[0, 0].numpy(), b[0, 0].numpy(), m[0, 0].numpy(), (4, 6), 1.0)



def test_lucas_kanade_host_last_step_only():
    """every_step=False returns the last of the every-step estimates; with no iteration, the start itself."""
    from stitch.deep.model import lucas_kanade_host

    rng = np.random.default_rng(5)
    fa = cv2.GaussianBlur(rng.random((64, 64, 5), dtype=np.float32), (0, 0), 2.0)
    fb = np.roll(fa, 1, axis=1)  # B(u) = A(u - 1 feature px): R moves A's content 2 input px to the right
    m = np.ones((64, 64), np.float32)
    start = np.eye(3)
    every = lucas_kanade_host(fa, m, fb, m, start, (4, 2), (2, 3), 1e-3, 1.0)
    last = lucas_kanade_host(fa, m, fb, m, start, (4, 2), (2, 3), 1e-3, 1.0, every_step=False)
    assert len(every) == 5 and len(last) == 1
    np.testing.assert_allclose(last[0], every[-1], atol=1e-12)
    assert 1.0 < last[0][0, 2] < 3.0  # towards the 2 px shift
    shifted = np.array([[1.0, 0, 3.0], [0, 1.0, 0], [0, 0, 2.0]])
    np.testing.assert_allclose(lucas_kanade_host(fa, m, fb, m, shifted, (4, 2), (0, 0), 1e-3, every_step=False)[0],
                               shifted / 2.0)
    assert lucas_kanade_host(fa, m, fb, m, shifted, (4, 2), (0, 0), 1e-3) == []
