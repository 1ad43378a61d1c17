"""Shared fixtures: the digits networks trained once per test session (seconds on a CPU),
hand-written spiking programs (``leaky``, ``cuba``, ``conv``), a hostile user's tampered copy
of a bundle (``tampered``) and the one-line error check (``one_line_error``); tests marked
``lava`` skip where Lava does not import.

Kernel tests run Triton kernels on CPU tensors through the Triton interpreter."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Triton decides at import time whether its own library functions (tl.cumsum, ...) run under
# the interpreter, so the flag must be set before anything imports triton (torch may).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# The suite's tensors are tiny: one thread is faster than two and makes timings repeatable.
torch.set_num_threads(1)

from ganglion.converters.spiking import spiking_manifest  # noqa: E402
from ganglion.models.deployable import Deployable  # noqa: E402
from ganglion.models.manifest import SpikingTime  # noqa: E402
from ganglion.models.recipes.digits import DigitsData  # noqa: E402
from ganglion.models.spiking import (  # noqa: E402
    Affine,
    Conv2d,
    Flatten,
    Neuron,
    SpikingGraph,
    SpikingNetwork,
)
from ganglion.models.spiking.graph import INPUT, OUTPUT  # noqa: E402
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
        return "lava-nc not installed (bash scripts/setup.sh installs it)"
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


# ---- hand-written spiking programs (Lava tests, and the node serving one on Lava) ----------


def _neuron(
    shape: tuple[int, ...], decay: float, bias: float, threshold: float, syn_decay: float = 0.0
) -> Neuron:
    """LIF, or CubaLIF (syn_gain 0.5) when ``syn_decay`` is given."""
    current = {}
    if syn_decay:
        current = {"syn_decay": torch.full(shape, syn_decay), "syn_gain": torch.full(shape, 0.5)}
    return Neuron(
        decay=torch.full(shape, decay),
        gain=torch.ones(shape),
        bias=torch.full(shape, bias),
        threshold=torch.full(shape, threshold),
        v_reset=torch.zeros(shape),
        v_init=torch.zeros(shape),
        reset="zero",
        model="cubalif" if syn_decay else "lif",
        **current,
    )


def leaky_program(timesteps: int = 12) -> Deployable:
    """Hand-written 6 -> 5 -> 4 LIF program with leak and bias; time-major spikes in and out."""
    gen = torch.Generator().manual_seed(3)
    nodes = {
        "fc1": Affine(torch.randn(5, 6, generator=gen), 0.1 * torch.randn(5, generator=gen)),
        "lif1": _neuron((5,), decay=0.9, bias=0.05, threshold=1.0),
        "fc2": Affine(torch.randn(4, 5, generator=gen), torch.zeros(4)),
        "lif2": _neuron((4,), decay=0.8, bias=0.1, threshold=0.8),
    }
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", OUTPUT)]
    graph = SpikingGraph(nodes, edges, (6,))
    time = SpikingTime(timesteps=timesteps)
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def cuba_program(timesteps: int = 12) -> Deployable:
    """Hand-written 6 -> 5 -> 4 CubaLIF program (synaptic current decays 0.75 and 0.5 per step),
    membrane leak and neuron bias, no synaptic bias; time-major spikes in and out."""
    gen = torch.Generator().manual_seed(9)
    nodes = {
        "fc1": Affine(torch.randn(5, 6, generator=gen) + 0.3, torch.zeros(5)),
        "lif1": _neuron((5,), decay=0.9, bias=0.05, threshold=1.0, syn_decay=0.75),
        "fc2": Affine(torch.randn(4, 5, generator=gen) + 0.3, torch.zeros(4)),
        "lif2": _neuron((4,), decay=0.8, bias=0.0, threshold=0.8, syn_decay=0.5),
    }
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", OUTPUT)]
    graph = SpikingGraph(nodes, edges, (6,))
    time = SpikingTime(timesteps=timesteps)
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def conv_program(timesteps: int = 8) -> Deployable:
    """Hand-written Conv2d (stride 1, padding 1) -> LIF -> Flatten -> Affine readout."""
    gen = torch.Generator().manual_seed(5)
    nodes = {
        "conv": Conv2d(
            torch.randn(3, 2, 3, 3, generator=gen),
            0.1 * torch.randn(3, generator=gen),
            padding=(1, 1),
        ),
        "lif": _neuron((3, 4, 5), decay=0.95, bias=0.0, threshold=1.0),
        "flat": Flatten(),
        "fc": Affine(torch.randn(7, 60, generator=gen), torch.randn(7, generator=gen)),
    }
    edges = [(INPUT, "conv"), ("conv", "lif"), ("lif", "flat"), ("flat", "fc"), ("fc", OUTPUT)]
    graph = SpikingGraph(nodes, edges, (2, 4, 5))
    time = SpikingTime(timesteps=timesteps, encoding="direct", decoding="none")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


@pytest.fixture
def leaky():
    """Builder of the hand-written LIF program with leak and bias."""
    return leaky_program


@pytest.fixture
def cuba():
    """Builder of the hand-written CubaLIF program."""
    return cuba_program


@pytest.fixture
def conv():
    """Builder of the hand-written Conv program."""
    return conv_program


def _tampered(
    bundle: Path,
    folder: Path,
    *,
    config: dict[str, Any] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    edit: Callable[[Path], None] | None = None,
) -> Path:
    copy = folder / f"tampered-{len(list(folder.glob('tampered-*')))}"
    shutil.copytree(bundle, copy)
    if config is not None:
        edited = {**json.loads((copy / "config.json").read_text()), **config}
        (copy / "config.json").write_text(json.dumps(edited))
    if edit is not None:
        edit(copy)
    data = json.loads((copy / "manifest.json").read_text())
    if manifest is not None:
        manifest(data)
    for name in data["artifacts"]:
        data["artifacts"][name] = hashlib.sha256((copy / name).read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


@pytest.fixture(scope="session")
def tampered() -> Callable[..., Path]:
    """``tampered(bundle, folder, config=, manifest=, edit=)``: a copy of a bundle folder in
    ``folder`` with ``config`` merged into config.json, ``edit(copy)`` applied to its files and
    ``manifest(data)`` to its manifest, every checksum redone: what a hostile user hands over
    (checksums only catch accidents)."""
    return _tampered


def _one_line_error(code: int, err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], err


@pytest.fixture(scope="session")
def one_line_error() -> Callable[..., None]:
    """``one_line_error(code, err, *words)``: a failed command said one line, ``error: ...``,
    holding every word, and no traceback."""
    return _one_line_error
