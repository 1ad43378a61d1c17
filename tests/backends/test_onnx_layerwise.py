"""The layer-wise ONNX Runtime run (``runtime/backends/onnx_layerwise.py``) against the torch
backend's ``run`` and the ONNX Runtime session's sequence graph, and the programs it refuses.

Its segments are ONNX Runtime's kernels, as in the sequence graph, so it equals that graph's
output bit for bit; against torch it is compared within float rounding (the digits networks'
read-out Gemm rounds differently in ONNX Runtime than in torch), with every prediction equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.recipes.digits import DigitsData
from ganglion.models.spiking import (
    Affine,
    Conv2d,
    Neuron,
    Scale,
    SpikingGraph,
    SpikingNetwork,
    SumPool2d,
)
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.runtime.backends.onnx_layerwise import LayerwiseRun
from ganglion.runtime.bundle import open_bundle, save_bundle
from ganglion.runtime.program import Program
from ganglion.runtime.session import load

CPU_ONLY = ["CPUExecutionProvider"]
ATOL = 1e-5  # decoded outputs against torch: the spiking kind's parity tolerance


def _options() -> ort.SessionOptions:
    """The ONNX Runtime backend's session options, one thread."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return options


def _layerwise(folder: Path) -> LayerwiseRun | None:
    with open_bundle(folder) as program:
        return LayerwiseRun.build(program, _options(), CPU_ONLY)


def _compare(deployable: Deployable, folder: Path, inputs: list[np.ndarray]) -> None:
    """Layer-wise == the sequence graph bit for bit, and torch's run within ATOL (spikes
    exactly, predictions equal where the output is decoded)."""
    bundle = save_bundle(deployable, folder)
    fast = _layerwise(bundle)
    assert fast is not None
    with load(bundle) as torch_s, load(bundle, "onnxruntime", threads=1) as ort_s:
        for x in inputs:
            ours = fast.run({"input": x})
            assert ours is not None
            out = ours["output"]
            assert out.dtype == np.float32
            np.testing.assert_array_equal(out, ort_s.run(x))
            reference = torch_s.run(x)
            assert out.shape == reference.shape
            if deployable.manifest.time.decoding == "none" and not np.any(out % 1):
                np.testing.assert_array_equal(out, reference)  # spikes
            else:
                np.testing.assert_allclose(out, reference, rtol=0, atol=ATOL)
            if deployable.manifest.time.decoding != "none":
                np.testing.assert_array_equal(out.argmax(-1), reference.argmax(-1))


def _batches(data: DigitsData, sizes: tuple[int, ...]) -> list[np.ndarray]:
    x = np.ascontiguousarray(data.x_test, dtype=np.float32)
    return [np.ascontiguousarray(np.resize(x, (n, *x.shape[1:]))) for n in sizes]


@pytest.mark.parametrize("decoding", ["membrane", "count"])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_digits_networks_match_sequence_graph_and_torch(
    net: str,
    decoding: str,
    digits_mlp: tuple[torch.nn.Module, DigitsData],
    digits_cnn: tuple[torch.nn.Module, DigitsData],
    tmp_path: Path,
) -> None:
    """The demo's MLP and CNN as converted; batch 600 runs in several chunks of time."""
    model, data = digits_mlp if net == "mlp" else digits_cnn
    options = SpikingOptions(timesteps=8, decoding=decoding)
    program = convert_spiking(model, data.x_train, None, options)
    _compare(program, tmp_path / net, _batches(data, (1, 16, 600)))


def test_the_digits_cnns_neurons_pool_their_own_spikes(
    digits_cnn: tuple[torch.nn.Module, DigitsData], tmp_path: Path
) -> None:
    """Both of the CNN's neurons feed a 2x2 average pool alone: each scan pools, and the next
    segment starts after the pool; the second convolution, over the first pool's spikes, runs
    in the second neuron's pass (its bits: the comparisons with the sequence graph above)."""
    model, data = digits_cnn
    program = convert_spiking(model, data.x_train, None, SpikingOptions(timesteps=8))
    fast = _layerwise(save_bundle(program, tmp_path / "cnn"))
    assert fast is not None and [n.pool for n in fast.neurons] == [True, True]
    assert [n.out_shape for n in fast.neurons] == [(16, 4, 4), (32, 2, 2)]
    assert [c is not None for c in fast._fused] == [False, True]
    assert fast._fused[1].in_shape == (16, 4, 4) and fast._fused[1].out_hw == (4, 4)


def _conv_segment(
    weight: np.ndarray, bias: np.ndarray, out_hw: tuple[int, int], **attributes: object
):  # noqa: ANN202
    """A one-Conv graph on [N, C, 4, 4] (output sides ``out_hw``) and an ONNX Runtime session
    of it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    channels = weight.shape[1]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)
    given = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 4, 4])
    graph = helper.make_graph(
        [node], "conv", [given],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weight.shape[0], *out_hw])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return graph, ort.InferenceSession(model.SerializeToString(), _options(), providers=CPU_ONLY)


def test_a_convolution_segment_runs_in_the_loop_only_where_it_gives_its_bits() -> None:
    from ganglion.runtime.backends.onnx_layerwise import _lone_conv

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    graph, session = _conv_segment(weight, bias, (4, 4), pads=[1, 1, 1, 1])
    conv = _lone_conv(graph, session, (16, 4, 4))
    assert conv is not None and conv.pads == (1, 1) and conv.in_shape == (16, 4, 4)
    narrow, session = _conv_segment(weight[:, :8].copy(), bias, (4, 4), pads=[1, 1, 1, 1])
    assert _lone_conv(narrow, session, (16, 4, 4)) is None  # MLAS rounds otherwise here
    _, other = _conv_segment(weight * np.float32(1.0001), bias, (4, 4), pads=[1, 1, 1, 1])
    assert _lone_conv(graph, other, (16, 4, 4)) is None  # a session whose bits differ
    strided, session = _conv_segment(weight, bias, (2, 2), pads=[1, 1, 1, 1], strides=[2, 2])
    assert _lone_conv(strided, session, (16, 2, 2)) is None
    lopsided, session = _conv_segment(weight, bias, (3, 3), pads=[1, 1, 0, 0])
    assert _lone_conv(lopsided, session, (16, 3, 3)) is None


def test_a_convolution_segment_too_large_to_probe_keeps_onnx_runtime(monkeypatch) -> None:
    """The shapes come from the file: a probe past ``PROBE_MAX_VALUES`` is not allocated."""
    from ganglion.kernels.conv import cpu
    from ganglion.runtime.backends.onnx_layerwise import _lone_conv

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    graph, session = _conv_segment(weight, np.zeros(16, np.float32), (4, 4), pads=[1, 1, 1, 1])
    assert _lone_conv(graph, session, (16, 4, 4)) is not None
    monkeypatch.setattr(cpu, "PROBE_MAX_VALUES", 67 * 2 * 256 - 1)  # one value short
    assert _lone_conv(graph, session, (16, 4, 4)) is None


def test_digits_cnn_at_more_timesteps(
    digits_cnn: tuple[torch.nn.Module, DigitsData], tmp_path: Path
) -> None:
    model, data = digits_cnn
    program = convert_spiking(model, data.x_train, None, SpikingOptions(timesteps=32))
    _compare(program, tmp_path / "cnn32", _batches(data, (3, 100)))


def test_zero_reset_lif_converted(
    digits_mlp: tuple[torch.nn.Module, DigitsData], tmp_path: Path
) -> None:
    model, data = digits_mlp
    options = SpikingOptions(timesteps=8, neuron="lif", reset="zero")
    program = convert_spiking(model, data.x_train, None, options)
    _compare(program, tmp_path / "lif", _batches(data, (2, 300)))


def test_time_major_program_of_any_length(leaky: Callable[..., Deployable], tmp_path: Path) -> None:
    """Time-major spikes in, a neuron's spikes out (no decoding, no layer after the last
    neuron): T from the input, shorter and longer than the manifest's."""
    rng = np.random.default_rng(0)
    inputs = [(rng.random((steps, batch, 6)) < 0.5).astype(np.float32)
              for steps, batch in ((12, 1), (5, 3), (40, 70))]  # fmt: skip
    _compare(leaky(12), tmp_path / "leaky", inputs)


def test_direct_input_without_decoding(conv: Callable[..., Deployable], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.random((batch, 2, 4, 5), dtype=np.float32) for batch in (1, 4, 300)]
    _compare(conv(8), tmp_path / "conv", inputs)


def _pooled_program() -> Deployable:
    """Conv, LIF with gain, bias and a zero reset to v_reset, SumPool2d, Scale, IF neuron."""
    g = torch.Generator().manual_seed(1)
    conv = Conv2d(
        torch.randn(3, 1, 3, 3, generator=g), torch.randn(3, generator=g) * 0.1, padding=(1, 1)
    )
    shape, pooled = (3, 6, 6), (3, 3, 3)
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
    nodes = {
        "conv": conv,
        "lif": lif,
        "pool": SumPool2d((2, 2), (2, 2)),
        "scale": Scale(torch.full(pooled, 0.7)),
        "out": Neuron.integrate_and_fire(torch.full(pooled, 1.0)),
    }
    names = [INPUT, *nodes, OUTPUT]
    graph = SpikingGraph(nodes, list(zip(names, names[1:], strict=False)), (1, 6, 6))
    time = SpikingTime(timesteps=10, encoding="direct", decoding="count")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def test_pooling_scale_and_zero_reset(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    inputs = [rng.random((batch, 1, 6, 6), dtype=np.float32) for batch in (1, 9)]
    _compare(_pooled_program(), tmp_path / "pooled", inputs)


def test_in_memory_program_equals_bundle(
    program: Deployable, x: np.ndarray, tmp_path: Path
) -> None:
    """A program without a bundle: the sequence graph is exported in memory."""
    fast = LayerwiseRun.build(Program.in_memory(program), _options(), CPU_ONLY)
    from_bundle = _layerwise(save_bundle(program, tmp_path / "b"))
    assert fast is not None and from_bundle is not None
    ours = fast.run({"input": x})
    assert ours is not None
    with load(program, "onnxruntime", threads=1) as session:
        np.testing.assert_array_equal(ours["output"], session.run(x))
    np.testing.assert_array_equal(ours["output"], from_bundle.run({"input": x})["output"])


def test_kernels_off_gives_none(
    program: Deployable, x: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GANGLION_KERNELS=0`` (checked per call): the caller runs the sequence graph."""
    fast = LayerwiseRun.build(Program.in_memory(program), _options(), CPU_ONLY)
    assert fast is not None
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    assert fast.run({"input": x}) is None
    monkeypatch.setenv("GANGLION_KERNELS", "1")
    assert fast.run({"input": x}) is not None


# ---- programs it refuses -----------------------------------------------------------------------


def _branched(delays: dict[tuple[str, str], int] | None = None, skip: bool = False) -> Deployable:
    """fc1 -> lif1 -> fc2 -> lif2; ``skip`` adds lif1 -> lif2 (two edges into lif2)."""
    g = torch.Generator().manual_seed(4)
    nodes = {
        "fc1": Affine(torch.randn(5, 6, generator=g), torch.zeros(5)),
        "lif1": Neuron.integrate_and_fire(torch.ones(5)),
        "fc2": Affine(torch.randn(5, 5, generator=g), torch.zeros(5)),
        "lif2": Neuron.integrate_and_fire(torch.ones(5)),
    }
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", OUTPUT)]
    if skip:
        edges.append(("lif1", "lif2"))
    graph = SpikingGraph(nodes, edges, (6,), delays=delays or {})
    time = SpikingTime(timesteps=4)
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


@pytest.mark.parametrize(
    "case", ["rate", "burst", "synaptic", "skip", "delay", "not_cpu", "plain_chain"]
)
def test_build_refuses_what_does_not_suit(
    case: str, make_program: Callable[..., Deployable], cuba: Callable[..., Deployable]
) -> None:
    providers = CPU_ONLY
    if case == "rate":
        program = make_program(encoding="rate")
    elif case == "burst":  # several spikes per step
        program = make_program(method="burst")
    elif case == "synaptic":
        program = cuba()
    elif case == "skip":
        program = _branched(skip=True)
    elif case == "delay":
        program = _branched(delays={("lif1", "fc2"): 1})
    elif case == "not_cpu":
        program, providers = make_program(), ["CUDAExecutionProvider", *CPU_ONLY]
    else:  # the control: the same chain without the skip or the delay is taken
        program = _branched()
    fast = LayerwiseRun.build(Program.in_memory(program), _options(), providers)
    assert (fast is not None) == (case == "plain_chain")


def test_a_node_without_torch_runs_it(program: Deployable, tmp_path: Path) -> None:
    """Nothing on the path imports torch: with torch unimportable, an ONNX Runtime session of
    the bundle takes the layer-wise run and gives the sequence graph's bits."""
    bundle = save_bundle(program, tmp_path / "b")
    (tmp_path / "blocker" / "torch").mkdir(parents=True)
    (tmp_path / "blocker" / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is not installed on this device')\n"
    )
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ganglion.runtime.session import load
        bundle = {str(bundle)!r}
        x = np.random.default_rng(0).uniform(0, 1, (5, 12)).astype(np.float32)
        with load(bundle, backend="onnxruntime", threads=1) as session:
            assert session._layerwise is not None
            got = session.run(x)
            session._layerwise = None  # the sequence graph itself
            want = session.run(x)
        assert np.array_equal(got, want), float(np.abs(got - want).max())
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print("ok")
    """)
    env = {"PYTHONPATH": str(tmp_path / "blocker"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def _fire_below_threshold(folder: Path) -> None:
    """The first neuron's Scan body fires on threshold > v instead of v > threshold."""
    import onnx

    model = onnx.load(folder / "model.sequence.onnx")
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    greater = next(n for n in body.node if n.op_type == "Greater")
    greater.input[:] = list(reversed(greater.input))
    onnx.save(model, folder / "model.sequence.onnx")


@pytest.mark.parametrize(
    "change",
    ["decoding in the manifest", "the firing rule in the graph", "config.json malformed"],
)
def test_a_bundle_whose_parts_disagree_keeps_the_sequence_graph(
    program: Deployable, x: np.ndarray, tmp_path: Path, tampered: Callable[..., Path], change: str
) -> None:
    """A checksum-valid bundle whose manifest, config.json and sequence graph disagree (what
    a hostile user can hand over) opens, and ``run`` is the sequence graph's own answer: the
    layer-wise run is checked against it on a probe input at load, and a config.json it
    cannot read leaves it out."""
    bundle = save_bundle(program, tmp_path / "b")
    if change == "decoding in the manifest":
        folder = tampered(bundle, tmp_path, manifest=lambda m: m["time"].update(decoding="count"))
    elif change == "the firing rule in the graph":
        folder = tampered(bundle, tmp_path, edit=_fire_below_threshold)
    else:
        nodes = json.loads((bundle / "config.json").read_text())["nodes"]
        bad = [{**n, "reset_delay": "x"} if n.get("type") == "Neuron" else n for n in nodes]
        folder = tampered(bundle, tmp_path, config={"nodes": bad})
    with load(folder, "onnxruntime", threads=1) as session:
        assert session._layerwise is None
        got = session.run(x)
    assert np.isfinite(got).all() and got.shape == (3, 4)
    with load(bundle, "onnxruntime", threads=1) as session:  # the control: the untouched bundle
        assert session._layerwise is not None
