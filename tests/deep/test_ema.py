"""stitch.deep.ema: the EMA and SWA averages against their formulas."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import torch
from torch import nn

from stitch.deep.ema import SWA, ModelEMA


def net_with(value: float) -> nn.Linear:
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(-value)
    return m


def set_value(m: nn.Linear, value: float) -> None:
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(-value)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_formula(warmup):
    model = net_with(0.0)
    ema = ModelEMA(model, decay=0.9, warmup=warmup)
    expected = 0.0
    for n, w in enumerate([1.0, 2.0, 4.0, -1.0, 3.0], start=1):
        set_value(model, w)
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        expected = d * expected + (1 - d) * w
        assert ema.module.weight.detach().numpy() == pytest.approx(expected, rel=1e-6)
        assert ema.module.bias.item() == pytest.approx(-expected, rel=1e-6)
    assert ema.updates == 5


def test_ema_state_roundtrip():
    model = net_with(1.0)
    a = ModelEMA(model, decay=0.5)
    set_value(model, 3.0)
    a.update(model)
    b = ModelEMA(net_with(7.0), decay=0.9, warmup=False)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and b.decay == 0.5 and b.warmup
    assert torch.equal(b.module.weight, a.module.weight)


def test_swa_equal_mean():
    """Snapshots at steps start, start + every, ...: their plain mean."""
    model = net_with(0.0)
    swa = SWA(model, start=3, every=2)
    taken = []
    for step in range(1, 10):
        set_value(model, float(step * step))
        if swa.maybe_update(model, step):
            taken.append(step * step)
    assert taken == [9, 25, 49, 81]
    assert swa.count == 4
    assert swa.module.weight.detach().numpy() == pytest.approx(sum(taken) / len(taken))
    assert swa.module.bias.item() == pytest.approx(-sum(taken) / len(taken))


def test_exception():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(net_with(0.0), decay=1.0)
    with pytest.raises(ValueError, match="start"):
        SWA(net_with(0.0), start=0)
