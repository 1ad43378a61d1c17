"""The parity suite's registry of programs and its parametrization over ``session.BACKENDS``.

A ``ProgramCase`` builds a small Deployable (untrained weights: parity needs no accuracy) and,
where the kind's example inputs do not suit it, its own sample input. Backends come from
``ganglion.runtime.session.BACKENDS`` alone, on CPU and on CUDA; a backend that cannot run a
program here says why (``BackendUnavailable``) and the case is skipped with that reason.

Tolerances are the kind's (``ProgramKind.parity_atol``): spiking outputs equal spike for spike,
membrane (float) outputs and float state within 1e-5, since ONNX Runtime's GEMM/convolution
may sum in another order than PyTorch's.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.nir_graph import read_nir
from ganglion.converters.nir_program import import_nir_program
from ganglion.converters.nir_semantics import semantics_for
from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import (
    Conv2d,
    Neuron,
    Scale,
    SpikingGraph,
    SpikingNetwork,
    SumPool2d,
)
from ganglion.runtime.session import BACKENDS


@dataclass
class ProgramCase:
    """One program of one kind, with an optional sample input (default: the kind's)."""

    name: str
    build: Callable[[], Deployable]
    sample: Callable[[Deployable], dict[str, np.ndarray]] | None = None


@dataclass(frozen=True)
class BackendCase:
    """A backend of ``session.BACKENDS`` on a device."""

    name: str
    device: str


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
    time = SpikingTime(timesteps=10, encoding="direct", decoding="none")
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
    time = SpikingTime(timesteps=1, dt=dt, encoding="none", decoding="none")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _imported(nodes: dict, edges: list, like: str, **knobs: Any) -> Deployable:
    """An NIR graph imported under a framework's conventions (``import-nir --like``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "graph.nir"
        nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))
        return import_nir_program(path, semantics=semantics_for(like, **knobs))


def _every_nir_node() -> Deployable:
    """Partial Flatten, Conv1d, CubaLIF, Delay, Threshold, LI, I, CubaLI; Sinabs' rules (exact
    decay, several spikes per step, v >= threshold, subtract reset). The read-outs' membranes
    sum into a Threshold, so the output is spikes (compared exactly)."""
    rng = np.random.default_rng(4)
    ones = np.ones
    nodes = {
        "input": nir.Input(input_type=np.array([2, 4, 4])),
        "rows": nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=1, end_dim=2),
        "conv": nir.Conv1d(
            input_shape=16, weight=rng.normal(0, 1, (3, 2, 3)), stride=1, padding=1,
            dilation=1, groups=1, bias=rng.normal(0, 0.1, 3),
        ),
        "cuba": nir.CubaLIF(
            tau_syn=ones((3, 16)) * 2.0, tau_mem=ones((3, 16)) * 4.0, r=ones((3, 16)) * 2.0,
            v_leak=np.zeros((3, 16)), v_threshold=ones((3, 16)) * 0.5, v_reset=np.zeros((3, 16)),
            w_in=ones((3, 16)),
        ),
        "delay": nir.Delay(delay=rng.integers(0, 3, (3, 16)).astype(float)),
        "flat": nir.Flatten(input_type={"input": np.array([3, 16])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.3, (10, 48)), bias=np.zeros(10)),
        "spike": nir.Threshold(threshold=np.full(10, 0.2)),
        "head": nir.Linear(weight=rng.normal(0, 1, (6, 10))),
        "li": nir.LI(tau=np.full(6, 3.0), r=np.ones(6), v_leak=np.full(6, 0.1)),
        "int": nir.I(r=np.full(6, 0.5)),
        "cubali": nir.CubaLI(
            tau_syn=np.full(6, 2.0), tau_mem=np.full(6, 5.0), r=np.ones(6),
            v_leak=np.zeros(6), w_in=np.ones(6),
        ),
        "readout": nir.Threshold(threshold=np.full(6, 0.1)),
        "output": nir.Output(output_type=np.array([6])),
    }  # fmt: skip
    chain = ["input", "rows", "conv", "cuba", "delay", "flat", "fc", "spike", "head"]
    edges = [*zip(chain, chain[1:], strict=False), ("readout", "output")]
    edges += [("head", n) for n in ("li", "int", "cubali")]
    edges += [(n, "readout") for n in ("li", "int", "cubali")]
    return _imported(nodes, edges, "sinabs")


def _recurrent_cuba() -> Deployable:
    """A Braille-style RNN: Affine -> nested graph (CubaLIF with a recurrent Linear) -> Affine
    -> LIF; snnTorch's rules (reset by subtraction, one step late)."""
    rng = np.random.default_rng(5)
    dt, n = 1e-4, 12
    inner = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([n])),
            "lif": nir.CubaLIF(
                tau_syn=np.full(n, dt / 0.3), tau_mem=np.full(n, dt / 0.1),
                r=np.full(n, 1 / 0.9), v_leak=np.zeros(n), v_threshold=np.ones(n),
                v_reset=np.zeros(n), w_in=np.full(n, 1 / 0.7),
            ),
            "w_rec": nir.Affine(weight=rng.normal(0, 0.4, (n, n)), bias=rng.normal(0, 0.1, n)),
            "output": nir.Output(output_type=np.array([n])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )  # fmt: skip
    nodes = {
        "input": nir.Input(input_type=np.array([6])),
        "fc1": nir.Affine(weight=rng.normal(0, 1, (n, 6)), bias=np.zeros(n)),
        "rnn": inner,
        "fc2": nir.Affine(weight=rng.normal(0, 1, (3, n)), bias=np.zeros(3)),
        "out": nir.LIF(
            tau=np.full(3, 5e-4), r=np.full(3, 5.0), v_leak=np.zeros(3),
            v_threshold=np.ones(3), v_reset=np.zeros(3),
        ),
        "output": nir.Output(output_type=np.array([3])),
    }  # fmt: skip
    edges = [("input", "fc1"), ("fc1", "rnn"), ("rnn", "fc2"), ("fc2", "out"), ("out", "output")]
    return _imported(nodes, edges, "snntorch")


def _lava_delayed() -> Deployable:
    """The imported LIF MLP under Lava's rules: each weighted connection one step late."""
    rng = np.random.default_rng(6)
    tau = np.full(8, 5e-4)
    nodes = {
        "input": nir.Input(input_type=np.array([6])),
        "fc1": nir.Affine(weight=rng.normal(0, 1, (8, 6)), bias=rng.normal(0, 0.1, 8)),
        "lif1": nir.LIF(
            tau=tau, r=tau / 1e-4, v_leak=np.zeros(8), v_threshold=np.ones(8), v_reset=np.zeros(8)
        ),
        "fc2": nir.Affine(weight=rng.normal(0, 1, (3, 8)), bias=np.zeros(3)),
        "lif2": nir.IF(r=np.full(3, 1e4), v_threshold=np.ones(3), v_reset=np.zeros(3)),
        "output": nir.Output(output_type=np.array([3])),
    }
    edges = [
        ("input", "fc1"),
        ("fc1", "lif1"),
        ("lif1", "fc2"),
        ("fc2", "lif2"),
        ("lif2", "output"),
    ]
    return _imported(nodes, edges, "lava")


def _time_major_sample(deployable: Deployable) -> dict[str, np.ndarray]:
    shape = (15, 4, *deployable.module.graph.input_shape)  # T = 15 for a program without T
    return {"input": np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)}


def _quantized() -> Deployable:
    """The converted MLP on Loihi 2's fixed-point formats (architecture loihi2_fixed_graph)."""
    return quantize_loihi2(_converted(_mlp, (12,), reset="zero"), _calibration((12,)))


def _spiking(name: str, build: Callable[[], Deployable], sample=None) -> ProgramCase:
    return ProgramCase(name, functools.cache(build), sample)


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
    _spiking("spiking-imported-nir", _imported_nir, _time_major_sample),
    _spiking("spiking-loihi2-fixed", _quantized),
    _spiking("spiking-nir-every-node-sinabs-rules", _every_nir_node, _time_major_sample),
    _spiking("spiking-nir-recurrent-cubalif-snntorch-rules", _recurrent_cuba, _time_major_sample),
    _spiking("spiking-nir-lava-synaptic-delay", _lava_delayed, _time_major_sample),
]


# ---- dense, sequence and ensemble programs --------------------------------------------------


class _Encoder(nn.Module):
    """A small Transformer encoder with two named inputs and two named outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(2, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.layer(self.emb(ids) * scale.unsqueeze(-1))
        return {"logits": self.head(hidden.mean(1)), "hidden": hidden}


def _exported(model: nn.Module, *args: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(model.eval(), args, dynamic_shapes=tuple({0: batch} for _ in args))


def _dense_encoder() -> Deployable:
    from ganglion.converters.dense import convert_dense

    torch.manual_seed(0)
    return convert_dense(
        _exported(_Encoder(), torch.zeros(2, 6, dtype=torch.int64), torch.ones(2, 6))
    )


def _dense_cnn() -> Deployable:
    from ganglion.converters.dense import convert_dense

    torch.manual_seed(0)
    return convert_dense(_exported(_cnn(), torch.zeros(2, 1, 8, 8)))


def _sequence(architecture: str) -> Callable[[], Deployable]:
    def build() -> Deployable:
        from ganglion.models.sequence import sequence_model_class
        from ganglion.models.sequence.program import sequence_deployable

        torch.manual_seed(0)
        cls = sequence_model_class(architecture)
        return sequence_deployable(
            cls.from_config({**cls().to_config(), "d_model": 32, "n_layers": 2})
        )

    return build


def _ensemble() -> Deployable:
    from ganglion.converters.ensemble import convert_ensemble
    from ganglion.runtime.ensemble_calibration import all_expert_probabilities

    calib = _calibration((12,))
    labels = np.random.default_rng(5).integers(0, 5, len(calib))
    members = {"dense": _dense_mlp(), "spiking": _converted(_mlp, (12,), decoding="count")}
    probs = all_expert_probabilities(members, {"x": calib})
    return convert_ensemble(members, {"x": calib}, labels, probs, top_k=1, epochs=20)


def _vision(architecture: str) -> Callable[[], Deployable]:
    def build() -> Deployable:
        from ganglion.models.vision import vision_model_class
        from ganglion.models.vision.program import vision_deployable

        torch.manual_seed(0)
        cls = vision_model_class(architecture)
        return vision_deployable(
            cls.from_config({**cls().to_config(), "d_model": 16, "n_layers": 1})
        )

    return build


def _token_ensemble() -> Deployable:
    from ganglion.converters.ensemble import convert_lm_ensemble
    from ganglion.runtime.ensemble_calibration import token_expert_probabilities

    members = {"rwkv": _sequence("rwkv")(), "gla": _sequence("gla")()}
    windows = np.random.default_rng(6).integers(0, 256, (4, 17))
    probs = token_expert_probabilities(members, windows)
    return convert_lm_ensemble(members, windows, probs, epochs=5)


def _dense_mlp() -> Deployable:
    from ganglion.converters.dense import convert_dense

    torch.manual_seed(1)
    return convert_dense(_exported(_mlp(), torch.zeros(2, 12)))


def _dense_onnx() -> Deployable:
    """A user's ONNX model (architecture ``onnx``: no torch face): Gemm -> Relu -> Gemm, with a
    dynamic batch, written with onnx.helper as another tool would."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ganglion.converters.dense import convert_dense

    rng = np.random.default_rng(7)
    weights = {
        "w1": rng.normal(0, 0.5, (16, 12)), "b1": rng.normal(0, 0.1, 16),
        "w2": rng.normal(0, 0.5, (5, 16)), "b2": rng.normal(0, 0.1, 5),
    }  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return convert_dense(model)


PROGRAMS += [
    ProgramCase("dense-encoder-two-inputs", functools.cache(_dense_encoder)),
    ProgramCase("dense-cnn", functools.cache(_dense_cnn)),
    ProgramCase("dense-onnx", functools.cache(_dense_onnx)),
    *(
        ProgramCase(f"sequence-{a}", functools.cache(_sequence(a)))
        for a in ("rwkv", "spikegpt", "gla", "gam", "gpt")
    ),
    ProgramCase("dense-vig", functools.cache(_vision("vig"))),
    ProgramCase("dense-vit", functools.cache(_vision("vit"))),
    ProgramCase("ensemble-dense-and-spiking", functools.cache(_ensemble)),
    ProgramCase("ensemble-token-models", functools.cache(_token_ensemble)),
]


# ---- backends ------------------------------------------------------------------------------

BACKEND_CASES = [BackendCase(name, device) for name in BACKENDS for device in ("cpu", "cuda")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``program`` and ``backend`` arguments take every registered case."""
    if "program" in metafunc.fixturenames:
        metafunc.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
    if "backend" in metafunc.fixturenames:
        ids = [f"{b.name}-{b.device}" for b in BACKEND_CASES]
        metafunc.parametrize("backend", BACKEND_CASES, ids=ids)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Callable[[ProgramCase], Path]:
    """``bundles(case)``: the case's program saved once as a bundle folder."""
    from ganglion.runtime.bundle import save_bundle

    root = tmp_path_factory.mktemp("parity-bundles")
    saved: dict[str, Path] = {}

    def get(case: ProgramCase) -> Path:
        if case.name not in saved:
            saved[case.name] = save_bundle(case.build(), root / case.name)
        return saved[case.name]

    return get


@pytest.fixture(scope="session")
def all_programs() -> list[ProgramCase]:
    """Every registered program case."""
    return PROGRAMS
