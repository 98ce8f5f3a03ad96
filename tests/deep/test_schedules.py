"""stitch.deep.schedules: every scheduler's LR at chosen steps against its formula, with and without warmup."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import math

import torch

from stitch.deep.schedules import SCHEDULER_CHOICES, Schedule
from stitch.errors import ConfigError

BASE = 0.1


def make_opt(lr: float = BASE) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9, nesterov=True)


def curve(name: str, total: int = 100, warmup: int = 0, start_factor: float = 0.01, **opts) -> list[float]:
    """LR before each optimizer step t = 0 .. total-1, stepping in torch's order (optimizer, then schedule)."""
    opt = make_opt()
    sched = Schedule(opt, name, total_steps=total, warmup_steps=warmup, warmup_start_factor=start_factor, **opts)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def cos_anneal(start: float, end: float, frac: float) -> float:
    """Cosine from ``start`` (frac = 0) to ``end`` (frac = 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2


FORMULAS = {
    "constant": ({}, lambda t: BASE),
    "step": ({"step_size": 30, "gamma": 0.5}, lambda t: BASE * 0.5 ** (t // 30)),
    "multistep": ({"milestones": [20, 50, 70], "gamma": 0.1}, lambda t: BASE * 0.1 ** sum(t >= m for m in (20, 50, 70))),
    "exponential": ({"gamma": 0.97}, lambda t: BASE * 0.97 ** t),
    "cosine": ({"T_max": 100, "eta_min": 0.001}, lambda t: cos_anneal(BASE, 0.001, t / 100)),
    "cosine_restarts": ({"T_0": 25, "eta_min": 0.0}, lambda t: cos_anneal(BASE, 0.0, (t % 25) / 25)),
    "lambda": ({"lr_lambda": "poly", "power": 2.0}, lambda t: BASE * (1 - t / 100) ** 2),
}
STEPS = (0, 1, 19, 20, 29, 30, 49, 50, 60, 75, 99)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_formula(name):
    opts, f = FORMULAS[name]
    lrs = curve(name, **opts)
    for t in STEPS:
        assert lrs[t] == pytest.approx(f(t), rel=1e-9, abs=1e-12), (name, t)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_warmup(name):
    """lr(t) = main(0) (f + (1 - f) t / w) for t < w, main(t - w) after (main over total - w steps)."""
    opts, f = FORMULAS[name]
    w, sf, total = 10, 0.1, 110
    # the main phase has total - w = 100 steps: the same formulas (cosine T_max, poly horizon) apply
    lrs = curve(name, total=total, warmup=w, start_factor=sf, **opts)
    for t in range(w):
        assert lrs[t] == pytest.approx(f(0) * (sf + (1 - sf) * t / w), rel=1e-9), (name, t)
    for t in STEPS:
        assert lrs[t + w] == pytest.approx(f(t), rel=1e-9, abs=1e-12), (name, t)


def test_cosine_warm_restarts_tmult():
    """T_mult = 2: cycles of 10, 20, 40 steps."""
    lrs = curve("cosine_restarts", total=80, T_0=10, T_mult=2, eta_min=0.0)
    for t, (start, length) in [(0, (0, 10)), (9, (0, 10)), (10, (10, 20)), (25, (10, 20)), (30, (30, 40)), (69, (30, 40))]:
        assert lrs[t] == pytest.approx(cos_anneal(BASE, 0.0, (t - start) / length), rel=1e-9), t


def onecycle(t: int, total: int, hi: float, pct: float, div: float, final_div: float) -> float:
    lo0, lo1 = hi / div, hi / div / final_div
    up = pct * total - 1
    if t <= up:
        return cos_anneal(lo0, hi, t / up)  # from lo0 (t = 0) up to hi (t = up)
    return cos_anneal(hi, lo1, (t - up) / (total - 1 - up))


@pytest.mark.parametrize("warmup", [0, 10])
def test_onecycle(warmup):
    total, pct, div, fdiv = 100, 0.3, 25.0, 1e4
    lrs = curve("onecycle", total=total + warmup, warmup=warmup, start_factor=0.0, pct_start=pct, div_factor=div,
                final_div_factor=fdiv)
    for t in (0, 1, 10, 28, 29, 30, 50, 80, 99):
        assert lrs[t + warmup] == pytest.approx(onecycle(t, total, BASE, pct, div, fdiv), rel=1e-7), t
    if warmup:
        assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5 * BASE / div)


def test_plateau():
    """ReduceLROnPlateau: multiplied by factor once the metric has not improved for more than patience evals."""
    opt = make_opt()
    sched = Schedule(opt, "plateau", total_steps=100, warmup_steps=2, factor=0.5, patience=1, threshold=0.0)
    for _ in range(2):
        opt.step()
        sched.step()
    seen = []
    for value in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.5):
        sched.step_metric(value)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([BASE, BASE, BASE, BASE * 0.5, BASE * 0.5, BASE * 0.25, BASE * 0.25])


def test_plateau_ignores_metrics_during_warmup():
    opt = make_opt()
    sched = Schedule(opt, "plateau", total_steps=100, warmup_steps=5, warmup_start_factor=0.5, factor=0.5, patience=0)
    for value in (1.0, 2.0, 3.0):
        sched.step_metric(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * BASE)


def test_state_dict_roundtrip():
    a, b = make_opt(), make_opt()
    sa = Schedule(a, "cosine", total_steps=50, warmup_steps=5)
    for _ in range(20):
        a.step()
        sa.step()
    sb = Schedule(b, "cosine", total_steps=50, warmup_steps=5)
    b.load_state_dict(a.state_dict())
    sb.load_state_dict(sa.state_dict())
    for _ in range(20):
        a.step()
        sa.step()
        b.step()
        sb.step()
        assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"]


def test_every_name_builds():
    for name in SCHEDULER_CHOICES:
        Schedule(make_opt(), name, total_steps=20, warmup_steps=2)


def test_exception():
    with pytest.raises(ConfigError, match="schedule.name"):
        Schedule(make_opt(), "linear_warmup_cosine", total_steps=10)
    with pytest.raises(ConfigError, match="step_size"):
        Schedule(make_opt(), "cosine", total_steps=10, step_size=3)
    with pytest.raises(ConfigError, match="warmup_steps"):
        Schedule(make_opt(), "cosine", total_steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="lr_lambda"):
        Schedule(make_opt(), "lambda", total_steps=10, lr_lambda="nope")
