"""Training data for the refiner: pairs generated on the fly from a folder of photographs.

Every sample is a pure function of (seed, global sample index): sample k is drawn with
``np.random.default_rng([seed, k])``. So the data do not depend on the number of DataLoader workers,
on which worker drew a sample, or on the epoch they were drawn in, and a resumed run sees exactly the
samples the uninterrupted run would have seen (the sampler just starts at the right index).

Images: every image file under ``root`` (recursively). The *set* of a file is the first folder under
``root`` (e.g. ``budapest`` for ``root/budapest/b1.jpg``). ``train_sets`` / ``val_sets`` pick sets
by name; without them a stable hash of the relative path sends ``val_fraction`` of the files to
validation. Validation samples come from validation images only, with their own index space.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from stitch.deep.pairs import (
    DETONE_RHO,
    DETONE_SIZE,
    Photometric,
    corner_h,
    detone_pair,
    list_image_files,
    random_view_pair,
    residual_deltas,
    set_name,
    uniform_deltas,
    warp_with_mask,
)
from stitch.errors import ConfigError
from stitch.io import read_image

VAL_STREAM = 1_000_003  # validation samples use rng([seed, VAL_STREAM, k]): disjoint from training draws


@dataclass(frozen=True)
class DataConfig:
    """Where the photographs are and how pairs are drawn from them (the ``[data]`` section)."""

    root: str = "data/samples"
    train_sets: tuple[str, ...] = ()
    val_sets: tuple[str, ...] = ()
    exclude_sets: tuple[str, ...] = ()
    val_fraction: float = 0.2          # used when train_sets / val_sets are empty
    max_side: int = 640                # images are shrunk to this longer side when loaded
    patch: int = 128
    detone_fraction: float = 0.5       # share of samples in the DeTone regime (identity start, rho = 32)
    detone_rho: float = DETONE_RHO
    detone_view_aug: float = 0.5       # share of DeTone-regime samples drawn from a random scaled/rotated view
    detone_photometric: float = 0.25   # per-effect probability of a photometric change (DeTone regime)
    refine_rho: float = 10.0           # residual corner offsets of the refiner regime: up to this many px
    refine_true_rho: float = 32.0      # the true homography of the refiner regime: any rho up to this
    refine_photometric: float = 0.5    # per-effect probability of a photometric change (refiner regime)
    window_mask: float = 0.0           # share of samples whose B window sticks out of dst (bands masked)
    window_mask_max: float = 0.45      # at most this share of the window's side is masked
    val_samples: int = 256             # per regime
    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 4

    def __post_init__(self) -> None:
        if self.patch < 32 or self.patch % 16:
            raise ConfigError(f"data.patch={self.patch}: must be a multiple of 16, at least 32")
        for f in ("val_fraction", "detone_fraction", "detone_view_aug", "detone_photometric", "refine_photometric",
                  "window_mask", "window_mask_max"):
            v = getattr(self, f)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"data.{f}={v}: must be in [0, 1]")
        if self.detone_rho < 0 or self.refine_rho < 0 or self.refine_true_rho < 0:
            raise ConfigError("data.detone_rho, data.refine_rho and data.refine_true_rho must be >= 0")
        if self.val_samples < 1:
            raise ConfigError(f"data.val_samples={self.val_samples}: must be >= 1")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ConfigError("data.num_workers must be >= 0 and data.prefetch_factor >= 1")
        if self.max_side < 2 * self.patch:
            raise ConfigError(f"data.max_side={self.max_side}: must be at least twice data.patch")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"data: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        d = dict(d)
        for k in ("train_sets", "val_sets", "exclude_sets"):
            if k in d:
                d[k] = tuple(str(s) for s in d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("train_sets", "val_sets", "exclude_sets"):
            d[k] = list(d[k])
        return d


# --- files and splits ------------------------------------------------------------------------------


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0 ** 64


@dataclass
class Split:
    """Image files for training and validation, and how they were chosen."""

    train: list[Path]
    val: list[Path]
    how: str
    train_sets: list[str] = field(default_factory=list)
    val_sets: list[str] = field(default_factory=list)


def split_files(cfg: DataConfig) -> Split:
    """Split the images of ``cfg.root`` by set names, or by a stable hash when no sets are named."""
    root = Path(cfg.root)
    try:
        listed = list_image_files(root)
    except ConfigError as exc:
        raise ConfigError(f"data.root: {exc}") from None
    files = [p for p in listed if set_name(p, root) not in cfg.exclude_sets]
    by_set: dict[str, list[Path]] = {}
    for p in files:
        by_set.setdefault(set_name(p, root), []).append(p)
    if cfg.train_sets or cfg.val_sets:
        missing = sorted((set(cfg.train_sets) | set(cfg.val_sets)) - set(by_set))
        if missing:
            raise ConfigError(f"data: set(s) {', '.join(missing)} not found under {root} "
                              f"(found: {', '.join(sorted(by_set)) or 'none'})")
        overlap = sorted(set(cfg.train_sets) & set(cfg.val_sets))
        if overlap:
            raise ConfigError(f"data: set(s) {', '.join(overlap)} are in both train_sets and val_sets")
        train_sets = list(cfg.train_sets) or sorted(set(by_set) - set(cfg.val_sets))
        val_sets = list(cfg.val_sets)
        train = [p for s in train_sets for p in by_set[s]]
        val = [p for s in val_sets for p in by_set[s]]
        how = "by set name"
    else:
        train, val = [], []
        for p in files:
            (val if _hash01(p.relative_to(root).as_posix()) < cfg.val_fraction else train).append(p)
        if not val and len(train) > 1:
            val.append(train.pop())
        train_sets, val_sets = [], []
        how = f"by hash of the relative path (val_fraction={cfg.val_fraction})"
    if not train:
        raise ConfigError(f"data: no training images under {root}")
    if not val:
        raise ConfigError(f"data: no validation images under {root} (name val_sets or raise val_fraction)")
    return Split(train, val, how, train_sets, val_sets)


# --- images and samples ----------------------------------------------------------------------------


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img


@dataclass
class BankImage:
    name: str
    view: np.ndarray    # gray uint8, longer side <= max_side (random views are drawn from this)
    detone: np.ndarray  # gray uint8 at 320 x 240 (the DeTone protocol)


class ImageBank:
    """Gray uint8 copies of a list of image files, loaded on first use (once per DataLoader worker)."""

    def __init__(self, files: Sequence[Path | str], max_side: int) -> None:
        self.files = [Path(f) for f in files]
        self.max_side = int(max_side)
        self._images: list[BankImage] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def images(self) -> list[BankImage]:
        if self._images is None:
            out = []
            for f in self.files:
                g = _gray(read_image(f))
                s = min(1.0, self.max_side / float(max(g.shape)))
                view = cv2.resize(g, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else g
                out.append(BankImage(f.name, view, cv2.resize(g, DETONE_SIZE, interpolation=cv2.INTER_AREA)))
            self._images = out
        return self._images

    def __getstate__(self) -> dict[str, Any]:  # workers load their own copy; don't pickle pixels
        return {"files": self.files, "max_side": self.max_side, "_images": None}


@dataclass
class Example:
    """One training sample: A (src warped by the start matrix) with its mask, B (dst), the target offsets."""

    a: np.ndarray        # (P, P) float32 in [0, 1]
    mask_a: np.ndarray   # (P, P) float32 0/1
    b: np.ndarray        # (P, P) float32 in [0, 1]
    target: np.ndarray   # (4, 2) float32: corner offsets of R, A(u) = B(R u)
    regime: int          # 0 = DeTone (identity start), 1 = refiner (small residual)
    mask_b: np.ndarray | None = None  # (P, P) float32 0/1; None = all valid


def band_mask(rng: np.random.Generator, size: int, max_share: float) -> np.ndarray:
    """(P, P) float32 0/1: a square working window sticking out of a non-square image.

    ``infer.working_frame`` centres a square window on the overlap; on a landscape image it sticks out at the
    top and bottom (portrait: left and right), by up to ``max_share`` of the side in all, split unevenly when
    the overlap sits near an edge. Like ``infer.warp_into``, the valid area is eroded by one pixel.
    """
    total = float(rng.uniform(0.05, max_share)) * size
    first = total * float(rng.uniform(0.0, 1.0))
    lo, hi = round(first), size - round(total - first)
    m = np.zeros((size, size), np.float32)
    if rng.random() < 0.5:
        m[lo:hi, :] = 1.0
    else:
        m[:, lo:hi] = 1.0
    return cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)


def with_window_masks(ex: Example, rng: np.random.Generator, cfg: DataConfig) -> Example:
    """``ex`` with, in ``cfg.window_mask`` of the samples, B (and half the time A too) seen through a window
    that sticks out of its image: the masks inference feeds for full-size, non-square pairs."""
    if cfg.window_mask <= 0 or rng.random() >= cfg.window_mask:
        return ex
    P = ex.b.shape[0]
    mb = band_mask(rng, P, cfg.window_mask_max)
    a, ma = ex.a, ex.mask_a
    if rng.random() < 0.5:
        ma = ma * band_mask(rng, P, cfg.window_mask_max)
        a = a * ma
    return Example(a, ma, ex.b * mb, ex.target, ex.regime, mb)


def make_example(bank: ImageBank, rng: np.random.Generator, cfg: DataConfig, regime: int | None = None) -> Example:
    """Draw one sample (see the module docstring of ``stitch.deep.pairs`` for the two regimes), then its window
    masks (``with_window_masks``, drawn after the pair so that samples without them are unchanged)."""
    return with_window_masks(_draw_pair(bank, rng, cfg, regime), rng, cfg)


def _draw_pair(bank: ImageBank, rng: np.random.Generator, cfg: DataConfig, regime: int | None) -> Example:
    """One sample of a regime, all of B valid."""
    images = bank.images
    img = images[int(rng.integers(len(images)))]
    P = cfg.patch
    if regime is None:
        regime = 0 if rng.random() < cfg.detone_fraction else 1
    if regime == 0:
        photo = Photometric(p=cfg.detone_photometric)
        if rng.random() < cfg.detone_view_aug:
            src, dst, H_gt = random_view_pair(img.view, rng, P, cfg.detone_rho, photo=photo)
        else:
            pair = detone_pair(img.detone, rng, P, cfg.detone_rho, DETONE_SIZE, photo)
            src, dst, H_gt = pair.src, pair.dst, pair.H_gt
        ones = np.ones((P, P), np.float32)
        target = residual_deltas(H_gt, np.eye(3), P)
        return Example(src.astype(np.float32) / 255.0, ones, dst.astype(np.float32) / 255.0,
                       target.astype(np.float32), 0)
    rho = float(rng.uniform(0.0, cfg.refine_true_rho))
    photo = Photometric(p=cfg.refine_photometric)
    src, dst, H_gt = random_view_pair(img.view, rng, P, rho, photo=photo,
                                      photo_dst=Photometric(p=0.5 * cfg.refine_photometric))
    eps = uniform_deltas(rng, 1.0) * cfg.refine_rho * float(rng.random()) ** 1.5  # many tiny residuals
    R = corner_h(P, eps)
    H_start = np.linalg.inv(R) @ H_gt
    a, m = warp_with_mask(src, H_start, P)
    return Example(a.astype(np.float32) / 255.0, m.astype(np.float32), dst.astype(np.float32) / 255.0,
                   eps.astype(np.float32), 1)


def _to_tensors(ex: Example) -> dict[str, torch.Tensor]:
    mb = ex.mask_b if ex.mask_b is not None else np.ones_like(ex.b)
    return {"a": torch.from_numpy(ex.a)[None], "mask_a": torch.from_numpy(ex.mask_a)[None],
            "b": torch.from_numpy(ex.b)[None], "mask_b": torch.from_numpy(mb)[None],
            "target": torch.from_numpy(ex.target), "regime": torch.tensor(ex.regime)}


class PairDataset(Dataset):
    """Sample k = ``make_example(rng([seed, k]))``; indexable by any non-negative integer."""

    def __init__(self, files: Sequence[Path | str], cfg: DataConfig, seed: int, length: int) -> None:
        self.bank = ImageBank(files, cfg.max_side)
        self.cfg = cfg
        self.seed = int(seed)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(k)])
        return _to_tensors(make_example(self.bank, rng, self.cfg))


class EpochSampler(Sampler[int]):
    """Global sample indices of one epoch: [epoch * n + skip, (epoch + 1) * n).

    It lives in the main process (workers only receive indices), so ``set_epoch`` works with
    persistent workers too; ``skip`` resumes in the middle of an epoch.
    """

    def __init__(self, samples_per_epoch: int) -> None:
        self.n = int(samples_per_epoch)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.n:
            raise ValueError(f"skip={skip}: must be in [0, {self.n}]")
        self.epoch, self.skip = int(epoch), int(skip)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.n
        return iter(range(start + self.skip, start + self.n))

    def __len__(self) -> int:
        return self.n - self.skip


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's global RNGs from the worker's torch seed.

    The samples themselves never use global RNGs (see the module docstring); this keeps any library
    code that does deterministic too. torch gives each worker ``base_seed + worker_id``, where the base
    seed comes from the loader's seeded ``generator``.
    """
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def build_loader(dataset: PairDataset, sampler: EpochSampler, batch_size: int, cfg: DataConfig, seed: int,
                 device: torch.device) -> DataLoader:
    """A DataLoader with pinned memory on CUDA, persistent workers and prefetching when workers are used."""
    workers = cfg.num_workers
    g = torch.Generator()
    g.manual_seed(int(seed))
    kw: dict[str, Any] = {}
    if workers > 0:
        kw.update(persistent_workers=cfg.persistent_workers, prefetch_factor=cfg.prefetch_factor,
                  worker_init_fn=seed_worker)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=False,
                      pin_memory=cfg.pin_memory and device.type == "cuda", generator=g, **kw)


def make_val_set(files: Sequence[Path | str], cfg: DataConfig, seed: int) -> dict[str, torch.Tensor]:
    """The fixed validation set: ``cfg.val_samples`` samples per regime from the validation images."""
    bank = ImageBank(files, cfg.max_side)
    items = []
    for regime in (0, 1):
        for k in range(cfg.val_samples):
            rng = np.random.default_rng([int(seed), VAL_STREAM, regime, k])
            items.append(_to_tensors(make_example(bank, rng, cfg, regime)))
    return {key: torch.stack([it[key] for it in items]) for key in items[0]}


def samples_per_epoch(steps_per_epoch: int, batch_size: int, accum_steps: int) -> int:
    return int(steps_per_epoch) * int(batch_size) * int(accum_steps)


def epoch_position(step: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, optimizer steps already done in that epoch) at global optimizer step ``step``."""
    return step // steps_per_epoch, step % steps_per_epoch

