"""Shared fixtures: the digits networks trained once per test session (seconds on a CPU)."""

from __future__ import annotations

import pytest
import torch

from ganglion.models.recipes.digits import DigitsData
from ganglion.runtime.demo import train_network


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[torch.nn.Module, DigitsData]:
    """The demo's digits MLP, trained (seed 0), with its data split."""
    return train_network("mlp")


@pytest.fixture(scope="session")
def digits_cnn() -> tuple[torch.nn.Module, DigitsData]:
    """The demo's digits CNN, trained (seed 0), with its data split."""
    return train_network("cnn")
