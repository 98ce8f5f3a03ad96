"""Learned matchers from registry packages: weights load fully, offline; cv2 stays the headless build."""

from __future__ import annotations

import socket
from importlib import metadata

import cv2
import pytest

from stitch.errors import ConfigError
from stitch.homography import learned


def test_cv2_is_headless():
    """The learned packages declare opencv-python; installed with --no-deps, cv2 stays headless."""
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("opencv-python")
    metadata.distribution("opencv-python-headless")
    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    assert gui and gui[0].split(":", 1)[1].strip() == "NONE"


@pytest.mark.parametrize("name", learned.LEARNED_CHOICES)
def test_offline_full_load(name, monkeypatch):
    """Every key of the shipped weight files loads, with the network closed (nothing downloads)."""
    if learned.unavailable(name):
        pytest.skip(learned.unavailable(name))

    def no_network(*args, **kwargs):
        raise AssertionError("network access while loading learned weights")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    import kornia.feature.disk.disk as kdisk
    import kornia.feature.lightglue as klg

    monkeypatch.setattr(klg, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(kdisk, "load_state_dict_from_url", no_network)
    learned.load_models.cache_clear()
    det, glue = learned.load_models(name)  # check_keys refuses a partial load
    assert not det.training and not glue.training
    assert glue.conf.input_dim == learned.LEARNED_MODELS[name].desc_dim


def test_partial_load_refused():
    """A weights file that leaves a parameter unloaded is a ConfigError, not a silently random model."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="do not fit"):
        learned.check_keys(model, {"weight": torch.zeros(2, 2)}, "toy")
