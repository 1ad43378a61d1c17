"""GAM's ONNX step graph with the standard ``CausalConvWithState`` op (and the plain-op
control) on ONNX Runtime against the torch backend.

Tolerances: logits within 1e-4 (the sequence kind's parity tolerance), states within 1e-5
(the parity suite's state tolerance); measured differences are ~1e-7 (logits) and ~1e-6
(windows: they hold LayerNorm outputs). Convolution and gate biases are drawn at random (the
model's initialization zeroes them, which would hide a dropped bias or swapped gate halves),
and every check starts from a state reached by torch over a different prompt per sequence, so
the windows are non-zero, the position is not 0 and sequences in a batch differ.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ganglion.models.errors import BundleError
from ganglion.models.sequence.gam import GAMLM, GAMConfig
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.generation import Sampling, generate
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import export_graph
from ganglion.runtime.onnx_export.gam_causal_conv import gam_step_graph

LOGITS_ATOL, STATE_ATOL = 1e-4, 1e-5
VOCAB = 64


def _gam(kernel_size: int = 3) -> GAMLM:
    torch.manual_seed(0)
    config = GAMConfig(
        vocab_size=VOCAB, d_model=32, n_layers=2, slots=16, kernel_size=kernel_size, context=64
    )
    lm = GAMLM(config).eval()
    with torch.no_grad():
        for block in lm.blocks:
            block.mixer.conv.bias.uniform_(-1.0, 1.0)
            block.mixer.gate.bias.uniform_(-2.0, 2.0)
    return lm


@pytest.fixture(scope="module")
def model() -> GAMLM:
    return _gam()


def _session(graph: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(ids: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"ids": ids, **{naming.state_input(n): v for n, v in state.items()}}


def _check_chained_steps(model: GAMLM, session: ort.InferenceSession, batch: int) -> None:
    """Six chained steps from a state torch reached over a 4-token prompt, against torch."""
    rng = np.random.default_rng(batch)
    with torch.no_grad():
        _, state = model(torch.from_numpy(rng.integers(0, VOCAB, (batch, 4))))
    ours = {n: s.numpy() for n, s in state.items()}
    for _ in range(6):
        ids = rng.integers(0, VOCAB, batch)
        with torch.no_grad():
            logits, state = model.step(torch.from_numpy(ids), state)
        got = session.run(None, _feeds(ids, ours))
        np.testing.assert_allclose(got[0], logits.numpy(), atol=LOGITS_ATOL, rtol=0)
        ours = dict(zip(state, got[1:], strict=True))
        for name, value in state.items():
            np.testing.assert_allclose(ours[name], value.numpy(), atol=STATE_ATOL, rtol=0)


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("convolution", ["causal_conv_with_state", "mul_sum"])
def test_step_graph_reproduces_torch_steps_and_states(model, convolution, batch):
    _check_chained_steps(model, _session(gam_step_graph(model, convolution=convolution)), batch)


@pytest.mark.parametrize("kernel_size", [1, 4], ids=lambda k: f"k{k}")
def test_causal_conv_graph_follows_other_kernel_sizes(kernel_size):
    """k = 1 (an empty window) and k = 4 (three positions carried)."""
    lm = _gam(kernel_size)
    _check_chained_steps(lm, _session(gam_step_graph(lm)), batch=2)


def test_greedy_generation_gives_the_torch_backends_tokens(model):
    prompt, sampling = [3, 14, 15, 9, 26], Sampling(max_tokens=16)
    expected = list(generate(load(sequence_deployable(model)), prompt, sampling))
    step = _session(gam_step_graph(model))
    state = {n: s.numpy() for n, s in model.init_state(1).items()}
    tokens: list[int] = []
    for token in prompt:
        logits, *values = step.run(None, _feeds(np.array([token]), state))
        state = dict(zip(state, values, strict=True))
    for _ in range(sampling.max_tokens):
        tokens.append(int(np.argmax(logits[0])))
        logits, *values = step.run(None, _feeds(np.array([tokens[-1]]), state))
        state = dict(zip(state, values, strict=True))
    assert tokens == expected


def test_opset_27_export_writes_one_causal_conv_per_layer_under_the_plain_graphs_names(model):
    deployable = sequence_deployable(model)
    graph, plain = export_graph(deployable, "step", 27), export_graph(deployable, "step")
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("CausalConvWithState") == model.config.n_layers
    assert "CausalConvWithState" not in [n.op_type for n in plain.graph.node]
    for ours, theirs in (
        (graph.graph.input, plain.graph.input),
        (graph.graph.output, plain.graph.output),
    ):
        assert [v.name for v in ours] == [v.name for v in theirs]
        assert [v.type for v in ours] == [v.type for v in theirs]


def test_causal_conv_graph_refuses_older_opsets_and_unknown_convolutions(model):
    with pytest.raises(BundleError, match="opset >= 27, got 17"):
        gam_step_graph(model, 17)
    with pytest.raises(BundleError, match="convolution must be one of"):
        gam_step_graph(model, convolution="conv")
