"""A GLA language model as ONNX graphs built on the standard ``LinearAttention`` op (opset 27).

Op mapping, per layer (``models/sequence/gla.py``)::

    LinearAttention(query=x W_q, key=x W_k, value=x W_v, past_state=state_in.l{i}.S,
                    decay=logsigmoid(x W_1 W_2 + b) / tau,
                    update_rule="gated", q_num_heads=kv_num_heads=H, scale=(d_k/H)^-1/2)
      -> (o, state_out.l{i}.S)

The op's 3-D packed ``[B, T, H*D]`` inputs are our ``[B, T, H, D]`` heads flattened, its state
``[B, H, d_k/H, d_v/H]`` is our ``l{i}.S``, its per-key log decay is our gate ``g``, and its
gated rule ``S_t = exp(g_t) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t`` is GLA's recurrence.
The rest is standard ops: Gather (embedding), LayerNormalization, MatMul, Softplus (the
log-sigmoid as ``-softplus(-x)``), RMSNormalization per head, Sigmoid (swish), Gelu, and the
tied head as a MatMul by the embedding's transpose.

ONNX Runtime 1.32 has no kernel of its own for ``LinearAttention``: it expands the op's
function body (a ``Scan`` over the tokens) when it loads the graph, which needs every shape
the body reads to be known then. This builder declares them (inputs with symbolic ``batch``
and ``length`` axes, weights as initializers), so the graph loads and runs. The same holds for
``CausalConvWithState``: it runs when its weight's shape is known and fails to load with
NOT_IMPLEMENTED when it is not (tests/sequence/test_gla_onnx_forms.py records both).

``recurrence="matmul"`` writes the same step graph with the recurrence as plain ops instead
(``S' = S * Exp(g) + MatMul(k^T, v)``, ``o = MatMul(scale q, S')``, one token only): the
control that tells the op's own cost from the rest of the graph (benchmarks/gla_step_forms.py).

The step graph has the plain step graph's names (``ids``, ``state_in.*`` -> ``logits``,
``state_out.*``); the prefill graph takes ``ids`` ``[batch, length]`` and a state, and gives
``logits`` ``[batch, length, vocab]`` and the state after the last token.
"""

from __future__ import annotations

import numpy as np
import onnx

from ganglion.models.errors import BundleError
from ganglion.models.sequence.gla import GLALM, GatedLinearAttention, GLABlock
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.builder import GraphBuilder, make_model
from ganglion.runtime.onnx_export.torch_layers import layer_norm, linear, prenorm_block, weights

LINEAR_ATTENTION_OPSET = 27  # the first opset with LinearAttention
RECURRENCES = ("linear_attention", "matmul")
BATCH, LENGTH = "batch", "length"


class _GLAGraph:
    """Writes one GLA LM's layers into a GraphBuilder, activations ``[batch, T, d]``."""

    def __init__(self, model: GLALM, b: GraphBuilder, recurrence: str) -> None:
        self.model, self.b, self.recurrence = model, b, recurrence
        self.heads = model.config.n_heads
        self.key_dim = model.config.key_dim // self.heads  # d_k / H
        self.value_dim = model.config.d_model // self.heads  # d_v / H

    def heads_split(self, x: str) -> str:
        """``[batch, T, H*D]`` -> ``[batch, T, H, D]``."""
        return self.b.op("Reshape", [x, self.b.const("heads", np.array([0, 0, self.heads, -1]))])

    def attention(self, x: str, mixer: GatedLinearAttention, state: str) -> tuple[str, str]:
        """The GLA layer on normalized ``x``: (y ``[batch, T, d]``, new state)."""
        b = self.b
        q, k, v = (
            linear(self.b, x, p, n)
            for p, n in ((mixer.q_proj, "q"), (mixer.k_proj, "k"), (mixer.v_proj, "v"))
        )
        logit = linear(self.b, linear(self.b, x, mixer.gk_down, "gk_down"), mixer.gk_up, "gk_up")
        softplus = b.op("Softplus", [b.op("Neg", [logit])])
        tau = b.const("gate_normalizer", np.array(-mixer.gate_normalizer, np.float32))
        decay = b.op("Div", [softplus, tau], "decay")  # logsigmoid(z) / tau = -softplus(-z) / tau
        if self.recurrence == "linear_attention":
            o, new_state = b.ops(
                "LinearAttention",
                [q, k, v, state, decay],
                2,
                update_rule="gated",
                q_num_heads=self.heads,
                kv_num_heads=self.heads,
                scale=float(self.key_dim**-0.5),
            )
        else:
            o, new_state = self.matmul_step(q, k, v, decay, state)
        norm = mixer.g_norm
        normed = b.op(
            "RMSNormalization",
            [self.heads_split(o), b.const("g_norm", weights(norm.weight))],
            "g_norm",
            axis=-1,
            epsilon=norm.eps,
        )
        gate = linear(self.b, x, mixer.g_proj, "g")
        swish = b.op("Mul", [gate, b.op("Sigmoid", [gate])])
        gated = b.op("Mul", [normed, self.heads_split(swish)])
        flat = b.op("Reshape", [gated, b.const("flat", np.array([0, 0, -1]))])
        return linear(self.b, flat, mixer.o_proj, "o"), new_state

    def matmul_step(self, q: str, k: str, v: str, decay: str, state: str) -> tuple[str, str]:
        """GLA's recurrence for one token in plain ops: (o ``[batch, 1, d]``, new state)."""
        b, heads = self.b, self.heads
        column = b.const("column", np.array([-1, heads, self.key_dim, 1]))
        k_col, decay_col = (b.op("Reshape", [t, column]) for t in (k, decay))  # [B, H, K, 1]
        v_row = b.op("Reshape", [v, b.const("row", np.array([-1, heads, 1, self.value_dim]))])
        q_row = b.op("Reshape", [q, b.const("row", np.array([-1, heads, 1, self.key_dim]))])
        decayed = b.op("Mul", [state, b.op("Exp", [decay_col])])
        new_state = b.op("Add", [decayed, b.op("MatMul", [k_col, v_row])])  # [B, H, K, V]
        scale = b.const("scale", np.array(self.key_dim**-0.5, np.float32))
        o = b.op("MatMul", [b.op("Mul", [q_row, scale]), new_state])  # [B, H, 1, V]
        token = b.const("token", np.array([-1, 1, heads * self.value_dim]))
        return b.op("Reshape", [o, token]), new_state

    def block(self, x: str, block: GLABlock, state: str) -> tuple[str, str]:
        """``x + GLA(LN(x))``, then ``x + FFN(LN(x))``: (x, the layer's new state)."""
        return prenorm_block(self.b, x, block, lambda h: self.attention(h, block.mixer, state))

    def language_model(self, ids: str) -> tuple[str, list[str]]:
        """ids ``[batch, T]`` -> (logits ``[batch, T, V]``, new states in layer order)."""
        m, b = self.model, self.b
        embedding = b.const("embed", weights(m.embed.weight))
        x = b.op("Gather", [embedding, ids], "embedded")
        states = []
        for spec, block in zip(m.state_specs(), m.blocks, strict=True):
            x, new_state = self.block(x, block, naming.state_input(spec.name))
            states.append(new_state)
        head = b.op("Transpose", [embedding], "head", perm=[1, 0])
        return b.op("MatMul", [layer_norm(self.b, x, m.norm, "ln"), head], "logits"), states


def _graph(model: GLALM, opset: int, step: bool, recurrence: str) -> onnx.ModelProto:
    if recurrence not in RECURRENCES:
        raise BundleError(f"recurrence must be one of {RECURRENCES}, got {recurrence!r}")
    if opset < LINEAR_ATTENTION_OPSET:
        raise BundleError(
            f"GLA's LinearAttention graphs need opset >= {LINEAR_ATTENTION_OPSET}, got {opset}"
        )
    b = GraphBuilder(f"gla_{'step' if step else 'prefill'}_{recurrence}")
    tokens = [BATCH] if step else [BATCH, LENGTH]
    ids = b.input("ids", "int64", tokens)
    specs = model.state_specs()
    for spec in specs:
        b.input(naming.state_input(spec.name), "float32", [BATCH, *spec.shape[1:]])
    if step:
        ids = b.op("Unsqueeze", [ids, b.const("token_axis", np.array([1]))])
    logits, states = _GLAGraph(model, b, recurrence).language_model(ids)
    if step:
        logits = b.op("Squeeze", [logits, b.const("token_axis", np.array([1]))])
    b.output("logits", logits, "float32", [*tokens, model.vocab_size])
    for spec, state in zip(specs, states, strict=True):
        b.output(naming.state_output(spec.name), state, "float32", [BATCH, *spec.shape[1:]])
    form = "one token" if step else "a run of tokens from a state"
    return make_model(b.graph(), opset, f"GLA LM, {form}, recurrence: {recurrence}")


def gla_step_graph(
    model: GLALM, opset: int = LINEAR_ATTENTION_OPSET, recurrence: str = "linear_attention"
) -> onnx.ModelProto:
    """The step graph of ``model``: ``ids`` ``[batch]`` and ``state_in.l{i}.S``
    ``[batch, H, K, V]`` -> ``logits`` ``[batch, vocab]`` and ``state_out.l{i}.S``, its
    recurrence one ``LinearAttention`` node per layer or (``"matmul"``) plain ops; BundleError
    for an opset below 27 or another ``recurrence``."""
    return _graph(model, opset, True, recurrence)


def gla_prefill_graph(model: GLALM, opset: int = LINEAR_ATTENTION_OPSET) -> onnx.ModelProto:
    """The prefill graph of ``model`` with ``LinearAttention``: ``ids`` ``[batch, length]`` and
    ``state_in.l{i}.S`` -> ``logits`` ``[batch, length, vocab]`` and the state after the last
    token (``state_out.l{i}.S``); BundleError for an opset below 27."""
    return _graph(model, opset, False, "linear_attention")
