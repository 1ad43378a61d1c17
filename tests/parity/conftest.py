"""The parity suite's registries (program kinds and backends) and its parametrization.

Later issues register their program kinds in ``PROGRAMS`` and their backends in ``BACKENDS``.

A ``ProgramCase`` builds a small Deployable (untrained weights: parity needs no accuracy)
plus an input shaped like ``Session.run``'s, and says how to compare two backends' outputs.
A ``BackendCase`` says how to load a backend and, when it cannot run here, why.

Tolerance (spiking programs): spikes and spike counts must be equal spike for spike;
float outputs (membrane decoding) and membrane states agree within ``FLOAT_ATOL``, because
ONNX Runtime's GEMM/convolution may sum in a different order than PyTorch's.
"""

from __future__ import annotations

import functools
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.nir_graph import read_nir
from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import TimeSemantics
from ganglion.models.spiking import (
    Conv2d,
    Neuron,
    Scale,
    SpikingGraph,
    SpikingNetwork,
    SumPool2d,
)

FLOAT_ATOL = 1e-5


def compare_spiking(reference: np.ndarray, got: np.ndarray, decoding: str) -> None:
    """Spike outputs (decoding none/count) equal exactly; membrane outputs within FLOAT_ATOL."""
    assert reference.shape == got.shape, (reference.shape, got.shape)
    if decoding == "membrane":
        np.testing.assert_allclose(got, reference, atol=FLOAT_ATOL, rtol=0)
    else:
        np.testing.assert_array_equal(got, reference)


@dataclass
class ProgramCase:
    """One program of one kind, with its sample input and comparison rule."""

    name: str
    build: Callable[[], Deployable]
    sample: Callable[[Deployable], np.ndarray]
    compare: Callable[[np.ndarray, np.ndarray, Deployable], None]
    state_atol: float = FLOAT_ATOL


@dataclass
class BackendCase:
    """A backend and device to run parity on; ``unavailable`` gives a reason or None."""

    name: str
    device: str
    unavailable: Callable[[], str | None]
    options: dict[str, Any] = field(default_factory=dict)


# ---- spiking programs --------------------------------------------------------------------


def _calibration(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (64, *shape)).astype(np.float32)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.a, self.b = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.b(torch.relu(h + self.a(h)))


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 5)
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5),
    )


def _converted(factory: Callable[[], nn.Module], shape: tuple[int, ...], **opts: Any) -> Deployable:
    torch.manual_seed(0)
    model = factory().eval()
    return convert_spiking(model, _calibration(shape), None, SpikingOptions(timesteps=12, **opts))


def _handbuilt() -> Deployable:
    """Conv, SumPool2d, Scale, LIF with bias and zero reset; direct input, no decoding."""
    g = torch.Generator().manual_seed(1)
    conv = Conv2d(
        torch.randn(3, 1, 3, 3, generator=g), torch.randn(3, generator=g) * 0.1, padding=(1, 1)
    )
    shape = (3, 6, 6)
    lif = Neuron(
        decay=torch.full(shape, 0.9),
        gain=torch.full(shape, 1.5),
        bias=torch.full(shape, 0.05),
        threshold=torch.full(shape, 0.8),
        v_reset=torch.full(shape, -0.1),
        v_init=torch.zeros(shape),
        reset="zero",
        model="lif",
    )
    pooled = (3, 3, 3)
    out = Neuron.integrate_and_fire(torch.full(pooled, 1.0))
    nodes = {
        "conv": conv,
        "lif": lif,
        "pool": SumPool2d((2, 2), (2, 2)),
        "scale": Scale(torch.full(pooled, 0.7)),
        "out": out,
    }
    edges = [
        ("input", "conv"),
        ("conv", "lif"),
        ("lif", "pool"),
        ("pool", "scale"),
        ("scale", "out"),
        ("out", "output"),
    ]
    graph = SpikingGraph(nodes, edges, (1, 6, 6))
    time = TimeSemantics(timesteps=10, encoding="direct", decoding="none")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _imported_nir() -> Deployable:
    """An NIR graph as other tools write it (Affine -> LIF -> Affine -> LIF), imported."""
    rng = np.random.default_rng(2)
    dt, tau = 1e-4, np.full(8, 5e-4)
    nodes = {
        "input": nir.Input(input_type=np.array([6])),
        "fc1": nir.Affine(weight=rng.normal(0, 1, (8, 6)), bias=rng.normal(0, 0.1, 8)),
        "lif1": nir.LIF(
            tau=tau, r=tau / dt, v_leak=np.zeros(8), v_threshold=np.ones(8), v_reset=np.zeros(8)
        ),
        "fc2": nir.Affine(weight=rng.normal(0, 1, (3, 8)), bias=np.zeros(3)),
        "lif2": nir.LIF(
            tau=tau[:3],
            r=tau[:3] / dt,
            v_leak=np.zeros(3),
            v_threshold=np.ones(3),
            v_reset=np.zeros(3),
        ),
        "output": nir.Output(output_type=np.array([3])),
    }
    edges = [
        ("input", "fc1"),
        ("fc1", "lif1"),
        ("lif1", "fc2"),
        ("fc2", "lif2"),
        ("lif2", "output"),
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.nir"
        nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))
        graph = read_nir(path, dt)
    time = TimeSemantics(timesteps=1, dt=dt, encoding="none", decoding="none")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _spiking_sample(deployable: Deployable) -> np.ndarray:
    network = deployable.module
    rng = np.random.default_rng(3)
    shape = (4, *network.graph.input_shape)
    if network.time.encoding == "none":
        return rng.uniform(0, 1, (15, *shape)).astype(np.float32)  # time-major, T = 15
    return rng.uniform(0, 1, shape).astype(np.float32)


def _spiking_compare(reference: np.ndarray, got: np.ndarray, deployable: Deployable) -> None:
    compare_spiking(reference, got, deployable.manifest.time.decoding)


def _spiking(name: str, build: Callable[[], Deployable]) -> ProgramCase:
    return ProgramCase(name, functools.cache(build), _spiking_sample, _spiking_compare)


PROGRAMS: list[ProgramCase] = [
    _spiking("spiking-mlp-if-direct-membrane", lambda: _converted(_mlp, (12,))),
    _spiking(
        "spiking-mlp-lif-rate-count",
        lambda: _converted(_mlp, (12,), neuron="lif", encoding="rate", decoding="count"),
    ),
    _spiking("spiking-cnn-if-direct-count", lambda: _converted(_cnn, (1, 8, 8), decoding="count")),
    _spiking(
        "spiking-residual-lif-direct-membrane", lambda: _converted(_Residual, (12,), neuron="lif")
    ),
    _spiking("spiking-handbuilt-conv-sumpool-scale-zero-reset", _handbuilt),
    _spiking("spiking-imported-nir", _imported_nir),
]


# ---- backends ------------------------------------------------------------------------------


def _needs(module: str, attribute: str | None = None) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    if attribute and not hasattr(importlib.import_module(module), attribute):
        return f"{module} is not installed (only type stubs)"
    return None


def _no_cuda() -> str | None:
    return None if torch.cuda.is_available() else "no CUDA GPU is visible"


def _tensorrt_unavailable() -> str | None:
    return _needs("tensorrt", "Builder") or _no_cuda()


BACKENDS: list[BackendCase] = [
    BackendCase("torch", "cpu", lambda: None),
    BackendCase("torch", "cuda", _no_cuda),  # the Triton LIF kernel, vs the CPU reference loop
    BackendCase("onnxruntime", "cpu", lambda: _needs("onnxruntime")),
    BackendCase("tensorrt", "cuda", _tensorrt_unavailable),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``program`` and ``backend`` arguments take every registered case."""
    if "program" in metafunc.fixturenames:
        metafunc.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, ids=[f"{b.name}-{b.device}" for b in BACKENDS])
