"""Shared fixtures: the digits networks trained once per test session (seconds on a CPU).

Kernel tests run Triton kernels on CPU tensors through the Triton interpreter."""

from __future__ import annotations

import os

# Triton decides at import time whether its own library functions (tl.cumsum, ...) run under
# the interpreter, so the flag must be set before anything imports triton (torch may).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# The suite's tensors are tiny: one thread is faster than two and makes timings repeatable.
torch.set_num_threads(1)

from ganglion.models.recipes.digits import DigitsData  # noqa: E402
from ganglion.runtime.demo import train_network  # noqa: E402


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[torch.nn.Module, DigitsData]:
    """The demo's digits MLP, trained (seed 0), with its data split."""
    return train_network("mlp")


@pytest.fixture(scope="session")
def digits_cnn() -> tuple[torch.nn.Module, DigitsData]:
    """The demo's digits CNN, trained (seed 0), with its data split."""
    return train_network("cnn")


def _lava_missing_reason() -> str | None:
    """None when Lava imports (with our 3.11 patch), else the skip reason."""
    from ganglion.models.errors import BackendUnavailable
    from ganglion.runtime.backends.lava_backend import import_lava

    try:
        import_lava()
    except BackendUnavailable:
        return "lava-nc not installed"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Skip ``lava``-marked tests (and those under tests/lava) when Lava cannot be imported;
    Lava is imported only when such a test was collected."""
    marked = [item for item in items if "lava" in item.keywords]
    reason = _lava_missing_reason() if marked else None
    if reason is None:
        return
    for item in marked:
        item.add_marker(pytest.mark.skip(reason=reason))
