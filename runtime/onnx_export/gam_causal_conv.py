"""A GAM language model's ONNX step graph built on the standard ``CausalConvWithState`` op
(opset 27).

Op mapping, per layer (``models/sequence/gam.py``), on ``h = LN(x)`` ``[batch, d]``::

    CausalConvWithState(input=h as [batch, d, 1], weight=conv.weight [d, 1, k],
                        bias=conv.bias [d], past_state=state_in.l{i}.conv as [batch, d, k-1])
      -> (local as [batch, d, 1], present as [batch, d, k-1] -> state_out.l{i}.conv)

The op is depthwise, causal, channels-first: its weight is ``nn.Conv1d(d, d, k, groups=d)``'s
weight as it is, and its carry state is our window ``[batch, k-1, d]`` transposed. The bundle's
state layout stays ``[batch, k-1, d]`` (the torch backend and the plain graph use it, so a
session can switch backends mid-sequence); the graph transposes the window on the way in and
out (two Transposes of ``(k-1) d`` floats per layer). The token's own ``[batch, d]`` becomes
``[batch, d, 1]`` by Unsqueeze, no transpose needed for one position.

The rest is standard ops: Gather (token and position embeddings, the position from the state's
``t``), LayerNormalization, MatMul + Softmax + MatMul (memory-slot retrieval ``softmax(h M^T)
M``), MatMul + Split + Sigmoid (the two gates), Gelu (FFN), and the tied head as a MatMul by
the embedding's transpose; ``state_out.t = t + 1``.

``convolution="mul_sum"`` writes the same step graph with the convolution as plain ops in the
bundle's layout (``seq = Concat(window, h)``, ``local = ReduceSum(seq * W^T, 1) + b``, the new
window ``seq[:, 1:]``, as ``GatedAssociativeMemory.step`` does): the control that tells the
op's own cost from the rest of the graph (benchmarks/gam_step_forms.py).

ONNX Runtime 1.32 has no kernel of its own for ``CausalConvWithState``: it expands the op's
function body when it loads the graph, which needs the weight's and the state's shapes; this
builder declares them (weights as initializers, inputs with a symbolic ``batch`` axis). The
body is Concat + a grouped ``Conv`` (``group = d``) + Slice; that Conv is what makes this graph
slower than the plain one on ONNX Runtime 1.32's CPU (~1.15x at batch 1, ~2.7x at batch 16,
benchmarks/gam_step_forms.py), so the bundle keeps the plain graph and this one is written
only when asked for (``ganglion export --graph step --opset 27``). The step graph has the
plain step graph's names (``ids``, ``state_in.*`` -> ``logits``, ``state_out.*``).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

from ganglion.models.errors import BundleError
from ganglion.models.sequence.gam import GAMLM, GAMBlock, GatedAssociativeMemory
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.builder import GraphBuilder, make_model
from ganglion.runtime.onnx_export.torch_layers import layer_norm, linear, prenorm_block, weights

CAUSAL_CONV_OPSET = 27  # the first opset with CausalConvWithState
CONVOLUTIONS = ("causal_conv_with_state", "mul_sum")
BATCH = "batch"


class _GAMStepGraph:
    """Writes one GAM LM's step into a GraphBuilder, activations ``[batch, d]``."""

    def __init__(self, model: GAMLM, b: GraphBuilder, convolution: str) -> None:
        self.model, self.b, self.convolution = model, b, convolution
        self.kernel = model.config.kernel_size

    def causal_conv(self, h: str, conv: torch.nn.Conv1d, window: str) -> tuple[str, str]:
        """The op on ``h`` ``[batch, d]`` and the window ``[batch, k-1, d]``: (local, window)."""
        b = self.b
        length_axis = b.const("length_axis", np.array([2]))
        past = b.op("Transpose", [window], "past_state", perm=[0, 2, 1])  # [B, d, k-1]
        local, present = b.ops(
            "CausalConvWithState",
            [
                b.op("Unsqueeze", [h, length_axis]),  # [B, d, 1]
                b.const("conv_weight", weights(conv.weight)),  # [d, 1, k]
                b.const("conv_bias", weights(conv.bias)),
                past,
            ],
            2,
        )
        new_window = b.op("Transpose", [present], "window", perm=[0, 2, 1])  # [B, k-1, d]
        return b.op("Squeeze", [local, length_axis], "local"), new_window

    def mul_sum_conv(self, h: str, conv: torch.nn.Conv1d, window: str) -> tuple[str, str]:
        """The convolution in plain ops, bundle layout: (local ``[batch, d]``, new window)."""
        b = self.b
        token_axis = b.const("token_axis", np.array([1]))
        token = b.op("Unsqueeze", [h, token_axis])  # [B, 1, d]
        seq = b.op("Concat", [window, token], "seq", axis=1)  # [B, k, d]
        taps = b.const("conv_taps", weights(conv.weight[:, 0]).T)  # [k, d]
        summed = b.op("ReduceSum", [b.op("Mul", [seq, taps]), token_axis], keepdims=0)
        local = b.op("Add", [summed, b.const("conv_bias", weights(conv.bias))], "local")
        ends = b.const("kernel", np.array([self.kernel]))
        new_window = b.op("Slice", [seq, token_axis, ends, token_axis], "window")  # [B, k-1, d]
        return local, new_window

    def mixer(self, h: str, mixer: GatedAssociativeMemory, window: str) -> tuple[str, str]:
        """``sigmoid(g_l) * conv(h) + sigmoid(g_g) * softmax(h M^T) M``: (y, new window)."""
        b = self.b
        write = self.causal_conv if self.convolution == CONVOLUTIONS[0] else self.mul_sum_conv
        local, new_window = write(h, mixer.conv, window)
        memory = weights(mixer.memory)  # [slots, d]
        scores = b.op("MatMul", [h, b.const("memory_t", memory.T)], "scores")
        slot_weights = b.op("Softmax", [scores], "slot_weights", axis=-1)
        recalled = b.op("MatMul", [slot_weights, b.const("memory", memory)], "recalled")
        d = self.model.config.d_model
        g_local, g_global = b.ops(
            "Split",
            [linear(self.b, h, mixer.gate, "gate"), b.const("halves", np.array([d, d]))],
            2,
            axis=-1,
        )
        gated_local = b.op("Mul", [b.op("Sigmoid", [g_local]), local])
        gated_global = b.op("Mul", [b.op("Sigmoid", [g_global]), recalled])
        return b.op("Add", [gated_local, gated_global], "mixed"), new_window

    def block(self, x: str, block: GAMBlock, window: str) -> tuple[str, str]:
        """``x + GAM(LN(x))``, then ``x + FFN(LN(x))``: (x, the layer's new window)."""
        return prenorm_block(self.b, x, block, lambda h: self.mixer(h, block.mixer, window))

    def language_model(self, ids: str, state: dict[str, str]) -> tuple[str, dict[str, str]]:
        """ids ``[batch]`` and the state's values by name -> (logits ``[batch, V]``, new state)."""
        m, b = self.model, self.b
        embedding = b.const("embed", weights(m.embed.weight))
        positions = b.const("pos_embed", weights(m.pos_embed.weight))
        x = b.op(
            "Add",
            [b.op("Gather", [embedding, ids]), b.op("Gather", [positions, state["t"]])],
            "embedded",
        )
        new: dict[str, str] = {}
        for i, block in enumerate(m.blocks):
            x, new[f"l{i}.conv"] = self.block(x, block, state[f"l{i}.conv"])
        new["t"] = b.op("Add", [state["t"], b.const("one", np.array(1, np.int64))], "t")
        head = b.op("Transpose", [embedding], "head", perm=[1, 0])
        return b.op("MatMul", [layer_norm(self.b, x, m.norm, "ln"), head], "logits"), new


def gam_step_graph(
    model: GAMLM, opset: int = CAUSAL_CONV_OPSET, convolution: str = "causal_conv_with_state"
) -> onnx.ModelProto:
    """The step graph of ``model``: ``ids`` ``[batch]``, ``state_in.l{i}.conv``
    ``[batch, k-1, d]`` and ``state_in.t`` ``[batch]`` -> ``logits`` ``[batch, vocab]`` and
    ``state_out.*``, its convolution one ``CausalConvWithState`` node per layer or
    (``"mul_sum"``) plain ops; BundleError for an opset below 27 or another ``convolution``."""
    if convolution not in CONVOLUTIONS:
        raise BundleError(f"convolution must be one of {CONVOLUTIONS}, got {convolution!r}")
    if opset < CAUSAL_CONV_OPSET:
        raise BundleError(
            f"GAM's CausalConvWithState graph needs opset >= {CAUSAL_CONV_OPSET}, got {opset}"
        )
    b = GraphBuilder(f"gam_step_{convolution}")
    ids = b.input("ids", "int64", [BATCH])
    specs = model.state_specs()
    state = {
        s.name: b.input(naming.state_input(s.name), s.dtype, [BATCH, *s.shape[1:]]) for s in specs
    }
    logits, new = _GAMStepGraph(model, b, convolution).language_model(ids, state)
    b.output("logits", logits, "float32", [BATCH, model.vocab_size])
    for s in specs:
        b.output(naming.state_output(s.name), new[s.name], s.dtype, [BATCH, *s.shape[1:]])
    return make_model(b.graph(), opset, f"GAM LM, one token, convolution: {convolution}")
