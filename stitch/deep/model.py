"""The learned refiner: a small correlation network that predicts 4-corner offsets, applied iteratively.

Architecture (IHN/RAFT-like, kept small for CPUs; about 0.2 M parameters at the defaults):

* a shared encoder turns each image of the pair, ``[normalised gray, validity mask]`` (2, H, W), into
  features at stride 4 (``feat_dim`` channels) and, for the fine stage, stride 2 (``local_dim``);
* **global stage** (stride 4): one all-pairs correlation volume between the two feature maps, pooled
  into ``levels`` pyramid levels. Each of ``global_iters`` iterations maps the stride-4 grid of A through
  the current homography, looks up a (2r+1)^2 window of correlations around each mapped point, and a
  small CNN turns the lookups plus the current flow into an update of the four corner offsets;
* **local stage** (stride 2, optional): ``local_iters`` iterations that warp B's stride-2 features by
  the current homography and correlate them with A's in a (2r+1)^2 neighbourhood (sub-pixel accuracy);
* between two *rounds* (``predict(..., rounds=2)``), A is re-warped with ``kornia.geometry`` by the
  estimate so far and the whole network runs again on the nearly aligned pair.

Convention: A (``src`` side, already warped into the working frame) and B (``dst`` side) are
(B, 1, H, W) float tensors in [0, 1] with (B, 1, H, W) validity masks. The prediction ``delta`` (B, 4, 2)
is the displacement in input pixels of the corners TL, TR, BR, BL = (0, 0), (W, 0), (W, H), (0, H),
pixel centres at integer coordinates (the OpenCV / ``stitch.geometry`` convention): the residual
homography R with R(c_k) = c_k + delta_k maps A pixels to B pixels, A(u) ~ B(R u).
Device and dtype follow the inputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_perspective_transform, warp_perspective
from torch import Tensor, nn

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the refiner network (see the module docstring)."""

    feat_dim: int = 32          # stride-4 feature channels (global correlation)
    local_dim: int = 16         # stride-2 feature channels (local correlation); 0 disables the local stage
    enc_channels: tuple[int, int] = (16, 32)  # encoder widths at stride 2 and stride 4
    hidden: int = 32            # width of the update CNNs
    radius: int = 3             # lookup radius r: (2r+1)^2 correlations per level
    levels: int = 2             # pyramid levels of the global correlation volume
    global_iters: int = 6
    local_iters: int = 3

    def __post_init__(self) -> None:
        for f in ("feat_dim", "hidden", "radius", "levels", "global_iters"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"model.{f}={getattr(self, f)}: must be >= 1")
        if self.local_dim < 0 or self.local_iters < 0:
            raise ConfigError("model.local_dim and model.local_iters must be >= 0")
        if len(self.enc_channels) != 2 or min(self.enc_channels) < 1:
            raise ConfigError(f"model.enc_channels={self.enc_channels}: two positive widths")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (TOML section); unknown keys are an error naming the key."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        d = dict(d)
        if "enc_channels" in d:
            d["enc_channels"] = tuple(int(c) for c in d["enc_channels"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["enc_channels"] = list(self.enc_channels)
        return d


# --- geometry helpers ------------------------------------------------------------------------------


def image_corners_t(width: int, height: int, like: Tensor) -> Tensor:
    """The corners (1, 4, 2) TL, TR, BR, BL of a W x H image in pixels, on ``like``'s device/dtype."""
    return torch.tensor([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]],
                        device=like.device, dtype=like.dtype).unsqueeze(0)


def corners_to_h(delta: Tensor, width: int, height: int) -> Tensor:
    """Homography (B, 3, 3) mapping corner c_k to c_k + delta_k; delta (B, 4, 2) pixels. Computed in float32+."""
    dt = torch.float64 if delta.dtype == torch.float64 else torch.float32
    d = delta.to(dt)
    c = image_corners_t(width, height, d).expand_as(d)
    with torch.autocast(device_type=d.device.type, enabled=False):
        return get_perspective_transform(c, c + d)


def h_to_corners(H: Tensor, width: int, height: int) -> Tensor:
    """Corner displacements (B, 4, 2) of the homographies H (B, 3, 3): H(c_k) - c_k."""
    c = image_corners_t(width, height, H).expand(H.shape[0], 4, 2)
    ph = torch.cat([c, torch.ones_like(c[..., :1])], -1) @ H.transpose(1, 2)
    return ph[..., :2] / ph[..., 2:3] - c


def apply_h(H: Tensor, pts: Tensor) -> Tensor:
    """Map points (B, N, 2) through H (B, 3, 3)."""
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ H.transpose(1, 2).to(pts.dtype)
    return ph[..., :2] / _safe(ph[..., 2:3])


def _safe(w: Tensor) -> Tensor:
    return torch.where(w.abs() < 1e-8, torch.full_like(w, 1e-8), w)


def pixel_grid(h: int, w: int, stride: int, like: Tensor) -> Tensor:
    """(1, h*w, 2) input-pixel coordinates (x, y) of a stride-``stride`` feature grid (centre convention)."""
    off = 0.5 * (stride - 1)
    ys = torch.arange(h, device=like.device, dtype=torch.float32) * stride + off
    xs = torch.arange(w, device=like.device, dtype=torch.float32) * stride + off
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(1, h * w, 2)


def to_feature_px(p: Tensor, stride: int) -> Tensor:
    """Input px -> feature px of a stride-``stride`` map (pixel centres: x_in = s x_f + (s - 1) / 2)."""
    return (p - 0.5 * (stride - 1)) / stride


def normalize_image(img: Tensor, mask: Tensor) -> Tensor:
    """Zero-mean, unit-std over the valid pixels of each image (B, 1, H, W); invalid pixels -> 0."""
    n = mask.sum((2, 3), keepdim=True).clamp_min(1.0)
    mean = (img * mask).sum((2, 3), keepdim=True) / n
    var = (((img - mean) * mask) ** 2).sum((2, 3), keepdim=True) / n
    return (img - mean) / (var.sqrt() + 0.02) * mask


# --- network ---------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2 if k % 2 else 1)


class Encoder(nn.Module):
    """(B, 2, H, W) -> stride-2 features (B, local_dim, H/2, W/2) or None, stride-4 features (B, feat_dim, H/4, W/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c2, c4 = cfg.enc_channels
        self.down1 = _conv(2, c2, 4, 2)  # k=4, s=2, p=1: output centre at 2j + 0.5 (pixel-centre aligned)
        self.mid = _conv(c2, c2)
        self.down2 = _conv(c2, c4, 4, 2)
        self.conv4 = _conv(c4, c4)
        self.out4 = nn.Conv2d(c4, cfg.feat_dim, 1)
        self.out2 = nn.Conv2d(c2, cfg.local_dim, 1) if cfg.local_dim and cfg.local_iters else None

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        x2 = F.relu(self.mid(F.relu(self.down1(x))))
        x4 = F.relu(self.conv4(F.relu(self.down2(x2))))
        f2 = self.out2(x2).contiguous() if self.out2 is not None else None
        return f2, self.out4(x4).contiguous()


class UpdateBlock(nn.Module):
    """Lookups + flow (B, cin, h, w) -> corner-offset update (B, 4, 2) in feature px."""

    def __init__(self, cin: int, hidden: int, size_hint: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(cin, hidden, 1)
        n_down = max(0, int(math.log2(max(size_hint, 2))) - 1)  # down to ~2 x 2
        self.down = nn.ModuleList([_conv(hidden, hidden, 3, 2) for _ in range(n_down)])
        self.head = nn.Conv2d(hidden, 2, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.inp(x))
        for conv in self.down:
            if min(x.shape[-2:]) < 4:
                break
            x = F.relu(conv(x))
        x = self.head(F.adaptive_avg_pool2d(x, 2))  # (B, 2, 2, 2): cells TL TR / BL BR
        x = x.flatten(2).transpose(1, 2)  # (B, 4, 2) in cell order TL, TR, BL, BR
        return x[:, [0, 1, 3, 2]]  # corner order TL, TR, BR, BL


class HomographyRefiner(nn.Module):
    """Predicts the residual homography between two nearly aligned images as 4 corner offsets.

    Example:
        >>> net = HomographyRefiner(ModelConfig())
        >>> a = b = torch.rand(1, 1, 128, 128); m = torch.ones_like(a)
        >>> net(a, m, b, m)[-1].shape
        torch.Size([1, 4, 2])
    """

    def __init__(self, cfg: ModelConfig | None = None, work_size: int = 128) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.work_size = int(work_size)
        c = self.cfg
        self.encoder = Encoder(c)
        win = (2 * c.radius + 1) ** 2
        self.global_update = UpdateBlock(c.levels * win + 2, c.hidden, self.work_size // 4)
        self.local_update = (UpdateBlock(win + 2, c.hidden, self.work_size // 4)
                             if c.local_dim and c.local_iters else None)

    # parameter groups for the optimizer: backbone = encoder, head = update blocks
    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def _encode(self, img: Tensor, mask: Tensor) -> tuple[Tensor | None, Tensor]:
        x = torch.cat([normalize_image(img, mask), mask], 1)
        return self.encoder(x)

    def _lookup(self, pyramid: list[Tensor], coords: Tensor, h: int, w: int) -> Tensor:
        """Correlation windows around ``coords`` (B, h*w, 2, stride-4 feature px) -> (B, L*(2r+1)^2, h, w)."""
        r = self.cfg.radius
        d = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        offs = torch.stack([dx, dy], -1).reshape(1, 2 * r + 1, 2 * r + 1, 2)
        b = coords.shape[0]
        out = []
        for lvl, corr in enumerate(pyramid):  # corr: (B*h*w, 1, hl, wl)
            hl, wl = corr.shape[-2:]
            c = (coords.reshape(-1, 1, 1, 2) - 0.5 * (2 ** lvl - 1)) / 2 ** lvl + offs
            gx = 2.0 * c[..., 0] / max(wl - 1, 1) - 1.0
            gy = 2.0 * c[..., 1] / max(hl - 1, 1) - 1.0
            s = F.grid_sample(corr, torch.stack([gx, gy], -1).to(corr.dtype), mode="bilinear",
                              padding_mode="zeros", align_corners=True)
            out.append(s.reshape(b, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2)

    def forward(self, img_a: Tensor, mask_a: Tensor, img_b: Tensor, mask_b: Tensor,
                global_iters: int | None = None, local_iters: int | None = None,
                init: Tensor | None = None) -> list[Tensor]:
        """Corner-offset estimates (B, 4, 2), one per iteration, last = best; see the module docstring.

        Args:
            img_a, img_b: (B, 1, H, W) gray images in [0, 1]; H and W multiples of 8.
            mask_a, mask_b: (B, 1, H, W) validity masks (1 = valid).
            init: optional (B, 4, 2) starting offsets (default zeros = identity).
        """
        if img_a.shape != img_b.shape or img_a.dim() != 4 or img_a.shape[1] != 1:
            raise ValueError(f"img_a, img_b: expected equal (B, 1, H, W) shapes, got {tuple(img_a.shape)}, "
                             f"{tuple(img_b.shape)}")
        bsz, _, H, W = img_a.shape
        if H % 8 or W % 8:
            raise ValueError(f"img_a: H and W must be multiples of 8, got {H} x {W}")
        gi = self.cfg.global_iters if global_iters is None else int(global_iters)
        li = self.cfg.local_iters if local_iters is None else int(local_iters)
        f2a, f4a = self._encode(img_a, mask_a)
        f2b, f4b = self._encode(img_b, mask_b)
        h, w = f4a.shape[-2:]
        delta = torch.zeros(bsz, 4, 2, device=img_a.device, dtype=torch.float32) if init is None else init.float()
        preds: list[Tensor] = []

        # global stage: all-pairs correlation at stride 4, computed once in float32
        with torch.autocast(device_type=img_a.device.type, enabled=False):
            fa, fb = f4a.float().flatten(2), f4b.float().flatten(2)
            corr = (fa.transpose(1, 2) @ fb) / math.sqrt(fa.shape[1])  # (B, hw, hw)
        pyramid = [corr.reshape(bsz * h * w, 1, h, w)]
        for _ in range(1, self.cfg.levels):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2, 2))
        grid4 = pixel_grid(h, w, 4, img_a)
        for _ in range(gi):
            delta = delta.detach()
            R = corners_to_h(delta, W, H)
            p = to_feature_px(apply_h(R, grid4.expand(bsz, -1, -1)), 4)  # (B, hw, 2) stride-4 px
            flow = (p - to_feature_px(grid4, 4)).transpose(1, 2).reshape(bsz, 2, h, w)
            look = self._lookup(pyramid, p, h, w)
            upd = self.global_update(torch.cat([look, flow.to(look.dtype)], 1))
            delta = delta + 4.0 * upd.float()
            preds.append(delta)

        # local stage: warp B's stride-2 features, correlate in a (2r+1)^2 window
        if self.local_update is not None and li > 0:
            h2, w2 = f2a.shape[-2:]
            grid2 = pixel_grid(h2, w2, 2, img_a)
            r = self.cfg.radius
            fa2 = f2a.float()
            for _ in range(li):
                delta = delta.detach()
                R = corners_to_h(delta, W, H)
                p = to_feature_px(apply_h(R, grid2.expand(bsz, -1, -1)), 2)
                gx = 2.0 * p[..., 0] / max(w2 - 1, 1) - 1.0
                gy = 2.0 * p[..., 1] / max(h2 - 1, 1) - 1.0
                fbw = F.grid_sample(f2b.float(), torch.stack([gx, gy], -1).reshape(bsz, h2, w2, 2),
                                    mode="bilinear", padding_mode="zeros", align_corners=True)
                pad = F.pad(fbw.contiguous(), (r, r, r, r))
                rows = []
                for dy in range(2 * r + 1):  # one op per row of offsets: (B, C, h2, w2, 2r+1) -> (B, h2, w2, 2r+1)
                    win = pad[:, :, dy:dy + h2, :].unfold(3, 2 * r + 1, 1)
                    rows.append((win * fa2.unsqueeze(-1)).sum(1))
                look = torch.cat(rows, -1).permute(0, 3, 1, 2) / math.sqrt(fa2.shape[1])
                flow = (p - to_feature_px(grid2, 2)).transpose(1, 2).reshape(bsz, 2, h2, w2)
                x = F.avg_pool2d(torch.cat([look, flow], 1), 2)  # to stride 4: the update CNN stays cheap
                upd = self.local_update(x)
                delta = delta + 2.0 * upd.float()
                preds.append(delta)
        return preds

    @torch.no_grad()
    def predict(self, img_a: Tensor, mask_a: Tensor, img_b: Tensor, mask_b: Tensor, rounds: int = 1,
                global_iters: int | None = None, local_iters: int | None = None) -> Tensor:
        """Final corner offsets (B, 4, 2) after ``rounds`` passes; A is re-warped (kornia) between passes."""
        _, _, H, W = img_a.shape
        total = torch.zeros(img_a.shape[0], 4, 2, device=img_a.device, dtype=torch.float32)
        a, ma = img_a, mask_a
        for k in range(max(1, int(rounds))):
            d = self(a, ma, img_b, mask_b, global_iters, local_iters)[-1]
            total = h_to_corners(corners_to_h(d, W, H) @ corners_to_h(total, W, H), W, H)
            if k + 1 < rounds:  # A_k(u) = A_0(R_total^-1 u) ~ B(R R_total^-1 u): residual left for the next pass
                Rt = corners_to_h(total, W, H).to(img_a.dtype)
                a = warp_perspective(img_a, Rt, (H, W), align_corners=True)
                ma = (warp_perspective(mask_a, Rt, (H, W), align_corners=True) > 0.999).to(mask_a.dtype)
        return total


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sequence_loss(preds: list[Tensor], target: Tensor, gamma: float = 0.85) -> Tensor:
    """sum_i gamma^(N-1-i) * mean |pred_i - target| (L1 over the 8 corner coordinates, px)."""
    n = len(preds)
    loss = target.new_zeros(())
    for i, p in enumerate(preds):
        loss = loss + gamma ** (n - 1 - i) * (p.float() - target.float()).abs().mean()
    return loss


def mace(pred: Tensor, target: Tensor) -> Tensor:
    """Mean average corner error per sample (B,): mean over the 4 corners of ||pred - target|| px."""
    return (pred.float() - target.float()).norm(dim=-1).mean(-1)
