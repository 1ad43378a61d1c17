"""Fixtures of the backend tests: small spiking programs (untrained, built in a second)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.deployable import Deployable


def _small_program(**options: object) -> Deployable:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    calib = np.random.default_rng(0).uniform(0, 1, (32, 12)).astype(np.float32)
    return convert_spiking(model, calib, None, SpikingOptions(timesteps=8, **options))


@pytest.fixture
def make_program() -> Callable[..., Deployable]:
    """``make_program(**SpikingOptions)``: a converted 12-16-4 MLP at T = 8."""
    return _small_program


@pytest.fixture
def program() -> Deployable:
    """Direct encoding, membrane decoding."""
    return _small_program()


@pytest.fixture
def x() -> np.ndarray:
    """A batch of 3 inputs."""
    return np.random.default_rng(1).uniform(0, 1, (3, 12)).astype(np.float32)
