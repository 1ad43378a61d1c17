"""Fixtures of the Lava tests: the digits MLP quantized for Loihi 2. The hand-written programs
(``leaky``, ``cuba``, ``conv``) and the skip of ``lava``-marked tests where Lava does not import
are in the root conftest."""

from __future__ import annotations

import pytest

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking


@pytest.fixture(scope="session")
def quantized_mlp(digits_mlp):
    """The digits MLP converted at T=32 and quantized for Loihi 2 (calibrated on train data)."""
    model, data = digits_mlp
    spiking = convert_spiking(model, data.x_train, data.y_train, SpikingOptions(timesteps=32))
    return quantize_loihi2(spiking, data.x_train, data.y_train)
