"""GLA's ONNX graphs with the standard ``LinearAttention`` op (and the plain-op control) on
ONNX Runtime against the torch backend, and what this ONNX Runtime does with the opset-27
stateful ops.

Tolerances: logits within 1e-4 (the sequence kind's parity tolerance), states within 1e-5
(the parity suite's state tolerance); measured differences are ~3e-7. Forget-gate biases are
spread over [-4, 4] so the per-key decays differ (a per-head or mis-signed decay would fail).

Recorded behaviour of ONNX Runtime 1.32: it has no kernel of its own for ``LinearAttention``
or ``CausalConvWithState``; it expands their ONNX function bodies at load time, which works
when the shapes the body reads are declared (a convolution weight's kernel size, the state's
dims) and fails otherwise (``CausalConvWithState``: NOT_IMPLEMENTED at load;
``LinearAttention``: a ``Scan`` without output shapes at run time).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from ganglion.models.errors import BundleError
from ganglion.models.sequence.gla import GLALM, GLAConfig
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.generation import Sampling, generate
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import export_graph
from ganglion.runtime.onnx_export.gla_linear_attention import gla_prefill_graph, gla_step_graph

LOGITS_ATOL, STATE_ATOL = 1e-4, 1e-5
VOCAB = 64


@pytest.fixture(scope="module")
def model() -> GLALM:
    torch.manual_seed(0)
    lm = GLALM(GLAConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4)).eval()
    with torch.no_grad():
        for block in lm.blocks:
            block.mixer.gk_up.bias.uniform_(-4.0, 4.0)
    return lm


def _session(graph: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(ids: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"ids": ids, **{naming.state_input(n): v for n, v in state.items()}}


def _assert_close(got: list[np.ndarray], logits: torch.Tensor, state: dict) -> None:
    np.testing.assert_allclose(got[0], logits.numpy(), atol=LOGITS_ATOL, rtol=0)
    for got_state, name in zip(got[1:], state, strict=True):
        np.testing.assert_allclose(got_state, state[name].numpy(), atol=STATE_ATOL, rtol=0)


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("recurrence", ["linear_attention", "matmul"])
def test_step_graph_reproduces_torch_steps_and_states(model, recurrence, batch):
    session = _session(gla_step_graph(model, recurrence=recurrence))
    rng = np.random.default_rng(batch)
    state = model.init_state(batch)
    ours = {n: s.numpy() for n, s in state.items()}
    for _ in range(6):
        ids = rng.integers(0, VOCAB, batch)
        with torch.no_grad():
            logits, state = model.step(torch.from_numpy(ids), state)
        got = session.run(None, _feeds(ids, ours))
        _assert_close(got, logits, state)
        ours = dict(zip(state, got[1:], strict=True))


def test_prefill_graph_continues_from_a_state_like_torch(model):
    session = _session(gla_prefill_graph(model))
    ids = np.random.default_rng(5).integers(0, VOCAB, (2, 11))
    with torch.no_grad():
        _, state = model(torch.from_numpy(ids[:, :4]))
        logits, final = model(torch.from_numpy(ids[:, 4:]), state)
    got = session.run(None, _feeds(ids[:, 4:], {n: s.numpy() for n, s in state.items()}))
    _assert_close(got, logits, final)


def test_greedy_generation_gives_the_torch_backends_tokens(model):
    prompt, sampling = [3, 14, 15, 9, 26], Sampling(max_tokens=16)
    expected = list(generate(load(sequence_deployable(model)), prompt, sampling))
    prefill, step = _session(gla_prefill_graph(model)), _session(gla_step_graph(model))
    state = {n: s.numpy() for n, s in model.init_state(1).items()}
    logits, *values = prefill.run(None, _feeds(np.array([prompt]), state))
    logits, tokens = logits[:, -1], []
    for _ in range(sampling.max_tokens):
        tokens.append(int(np.argmax(logits[0])))
        state = dict(zip(state, values, strict=True))
        logits, *values = step.run(None, _feeds(np.array([tokens[-1]]), state))
    assert tokens == expected


def test_opset_27_export_writes_one_linear_attention_per_layer(model):
    graph = export_graph(sequence_deployable(model), "step", 27)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("LinearAttention") == model.config.n_layers
    assert [i.name for i in graph.graph.input] == ["ids", "state_in.l0.S", "state_in.l1.S"]
    assert [o.name for o in graph.graph.output] == ["logits", "state_out.l0.S", "state_out.l1.S"]


def test_linear_attention_graphs_refuse_older_opsets_and_unknown_recurrences(model):
    with pytest.raises(BundleError, match="opset >= 27, got 17"):
        gla_step_graph(model, 17)
    with pytest.raises(BundleError, match="recurrence must be one of"):
        gla_step_graph(model, recurrence="scan")


def _causal_conv(channels: int, kernel: int, declared: bool) -> onnx.ModelProto:
    """CausalConvWithState(input [B, C, T], weight [C, 1, k], bias [C], past [B, C, k-1])."""
    dims = {
        "x": ["batch", channels, "length"],
        "weight": [channels, 1, kernel],
        "bias": [channels],
        "past": ["batch", channels, kernel - 1],
    }
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, d if declared else None)
        for n, d in dims.items()
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "present")]
    node = helper.make_node("CausalConvWithState", list(dims), ["y", "present"])
    graph = helper.make_graph([node], "causal_conv", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 27)])


@pytest.mark.parametrize("length", [1, 5], ids=lambda t: f"T{t}")
def test_causal_conv_with_state_runs_when_its_shapes_are_declared(length):
    """GAM's convolution (depthwise, k = 3, bias) against torch's Conv1d on window + input."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(8, 8, 3, groups=8)
    x, past = torch.randn(2, 8, length), torch.randn(2, 8, 2)
    feeds = {"x": x, "weight": conv.weight, "bias": conv.bias, "past": past}
    y, present = _session(_causal_conv(8, 3, declared=True)).run(
        None, {n: t.detach().numpy() for n, t in feeds.items()}
    )
    window = torch.cat([past, x], -1)
    with torch.no_grad():
        np.testing.assert_allclose(y, conv(window).numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(present, window[..., -2:].numpy())


def test_causal_conv_with_state_is_not_implemented_without_shapes():
    """The audit's NOT_IMPLEMENTED: what ONNX Runtime says when the shapes are unknown."""
    try:
        _session(_causal_conv(8, 3, declared=False))
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types
        assert "NOT_IMPLEMENTED" in str(exc) and "CausalConvWithState" in str(exc)
    else:
        pytest.skip(f"onnxruntime {ort.__version__} loads CausalConvWithState without shapes")
