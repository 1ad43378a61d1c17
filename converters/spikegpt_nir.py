"""SpikeGPT's spiking parts as an NIR graph: each block's projections and LIF neurons as NIR
nodes, and every part NIR has no node for as the graph's boundary.

Exported per block ``i`` (node names ``block{i}.att.*`` / ``block{i}.ffn.*``, the tensor each
node holds in its metadata as ``ganglion_tensor``):
- the bias-free projections as ``Linear`` (``att.key``, ``att.value``, ``att.receptance``,
  ``att.output``, ``ffn.key``, ``ffn.receptance``, ``ffn.value``);
- the two LIF layers as ``LIF`` (``att.lif``, ``ffn.lif``), each followed by a ``Scale`` holding
  its spike amplitude (``att.amplitude``, ``ffn.amplitude``).

SpikeGPT's LIF, one step per token: ``V ← V·(1 − 1/τ) + X/τ``, spike ``V > θ``, ``V ← 0`` where
it spiked. With one NIR step ``dt = DEFAULT_DT`` seconds per token, it is NIR's
``τ_nir dv/dt = (v_leak − v) + r·I`` with ``τ_nir = τ·dt``, ``r = 1``, ``v_leak = 0``,
``v_threshold = θ``, ``v_reset = 0``: forward Euler at ``dt`` gives back SpikeGPT's update
(bit for bit at τ = 2: decay 0.5 and input gain 0.5 are exact). Each LIF's metadata records
that convention (dt, Euler, reset to zero at once, fire on ``v > θ``, ``v_init = 0``) as
``nir_nodes`` does.

Everything else (embedding, LayerNorm, token shift and mixing, the WKV recurrence, ReLU², the
gating products, the residual stream, the head) stays outside: where a part feeds NIR nodes the
graph has an ``Input`` node ``<part>.out.<port>``, where NIR nodes feed it an ``Output`` node
``<part>.in.<port>``; the graph's metadata (``ganglion_outside_nir``, JSON) lists every part with
what it computes, why NIR cannot hold it and its boundary nodes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from ganglion.converters.nir_nodes import neuron_to_nir, np64
from ganglion.models.errors import BundleError
from ganglion.models.manifest import DEFAULT_DT
from ganglion.models.sequence.base import SequenceModel
from ganglion.models.sequence.spikegpt import LIF, SpikeGPT, SpikingBlock
from ganglion.models.spiking.neuron import Neuron

OUTSIDE_KEY = "ganglion_outside_nir"  # graph metadata: the parts NIR has no node for (JSON)
TENSOR_KEY = "ganglion_tensor"  # node metadata: the model tensor the node holds
TIME_NOTE = (
    "one NIR step of dt seconds per token position; LIF membranes persist from token to token "
    "(the model's l{i}.att_lif_v / l{i}.ffn_lif_v state), starting at 0"
)
LIF_NOTE = (
    "SpikeGPT LIF: V <- V*(1 - 1/tau) + X/tau per token, spike V > threshold, hard reset to 0; "
    "here tau_nir = tau*dt, r = 1, v_leak = 0, v_reset = 0: Euler at dt gives it back "
    "(for tau = 2 exactly: decay 0.5, input gain 0.5)"
)
_NO_NODE = "NIR's nodes are linear maps, neurons, thresholds and sums of edges"


@dataclass
class OutsidePart:
    """A part of the model NIR has no node for; the graph meets it at its boundary nodes."""

    name: str
    ops: list[str]  # what it computes, in order
    reason: str  # why NIR cannot express it
    tensors: list[str]  # the model tensors it uses (every other tensor is in an NIR node)
    inputs: dict[str, str] = field(default_factory=dict)  # port -> Output node NIR nodes feed
    outputs: dict[str, str] = field(default_factory=dict)  # port -> Input node feeding NIR nodes


def _refusal(architecture: str) -> str:
    """The one-line reason a sequence architecture other than SpikeGPT has no NIR export."""
    if architecture == "rwkv":
        return (
            "--nir needs spiking neurons: this 'rwkv' sequence bundle has no LIF neurons "
            "(make it spiking with `ganglion convert spikegpt` first)"
        )
    return (
        f"--nir needs spiking neurons: this {architecture!r} sequence bundle has none "
        "(only 'spikegpt' sequence bundles export to NIR)"
    )


class _GraphBuilder:
    """Collects NIR nodes, edges and outside parts for one model."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.parts: dict[str, OutsidePart] = {}

    def part(
        self, name: str, ops: list[str], reason: str, tensors: list[str] | None = None
    ) -> None:
        """Declare an outside part (its boundary nodes are added by ``chain``)."""
        self.parts[name] = OutsidePart(name, ops, reason, tensors or [])

    def linear(self, name: str, layer: nn.Linear, tensor: str) -> str:
        """A bias-free projection as ``nir.Linear``; returns its node name."""
        self.nodes[name] = nir.Linear(weight=np64(layer.weight), metadata={TENSOR_KEY: tensor})
        return name

    def lif(self, name: str, lif: LIF, tensor: str) -> list[str]:
        """A SpikeGPT LIF layer as ``nir.LIF`` followed by its amplitude as ``nir.Scale``."""
        threshold = lif.threshold.detach().float().cpu()
        zeros = torch.zeros_like(threshold)
        neuron = Neuron(
            decay=torch.full_like(threshold, lif.decay),
            gain=torch.full_like(threshold, lif.gain),
            bias=zeros,
            threshold=threshold,
            v_reset=zeros,
            v_init=zeros,
            reset="zero",
            fire="gt",
            model="lif",
        )
        node = neuron_to_nir(name, neuron, self.dt, self.dt)
        node.metadata.update({TENSOR_KEY: f"{tensor}.threshold", "ganglion_lif": LIF_NOTE})
        amplitude = name.rsplit(".", 1)[0] + ".amplitude"
        self.nodes[name] = node
        self.nodes[amplitude] = nir.Scale(
            scale=np64(lif.amplitude), metadata={TENSOR_KEY: f"{tensor}.amplitude"}
        )
        return [name, amplitude]

    def chain(self, source: tuple[str, str], names: list[str], target: tuple[str, str]) -> None:
        """Edges from outside part ``source`` (part, port) through ``names`` into ``target``."""
        first, last = self.nodes[names[0]], self.nodes[names[-1]]
        start = f"{source[0]}.out.{source[1]}"
        end = f"{target[0]}.in.{target[1]}"
        self.nodes[start] = nir.Input(input_type={"input": np.array(first.input_type["input"])})
        self.nodes[end] = nir.Output(output_type={"output": np.array(last.output_type["output"])})
        self.parts[source[0]].outputs[source[1]] = start
        self.parts[target[0]].inputs[target[1]] = end
        path = [start, *names, end]
        self.edges += list(zip(path[:-1], path[1:], strict=True))


def _norm(name: str) -> list[str]:
    return [f"{name}.weight", f"{name}.bias"]


def _shift(g: _GraphBuilder, part: str, norm: str, mixes: list[str]) -> None:
    """Declare a block's LayerNorm + token shift + mix part, with its tensors."""
    ports = ", ".join(m.rsplit("_", 1)[1] for m in mixes)
    ops = [
        f"LayerNorm {norm.rsplit('.', 1)[1]} of the residual stream",
        "token shift (the previous token's normalized input)",
        f"per-channel mix x*mu + x_prev*(1 - mu) for {ports}",
    ]
    reason = (
        "LayerNorm divides by statistics over channels and the token shift reads the previous "
        f"token's value; {_NO_NODE}"
    )
    g.part(part, ops, reason, [*_norm(norm), *mixes])


def _residual(g: _GraphBuilder, part: str) -> None:
    reason = "the float residual stream is read only through LayerNorm, outside NIR"
    g.part(part, ["residual add x + amplitude*spikes"], reason)


def _time_mix(g: _GraphBuilder, block: SpikingBlock, p: str, src: str) -> None:
    """Block ``p``'s TimeMix: k, v, r projections, WKV and gate outside, output, LIF."""
    _shift(g, f"{p}.shift", f"{src}.ln1", [f"{src}.att.mix_{c}" for c in "kvr"])
    wkv_ops = [
        "WKV recurrence over k, v with w = -exp(time_decay), u = time_first "
        "(state wkv_a, wkv_b, wkv_p)",
        "gating product sigmoid(r) * wkv",
    ]
    reason = (
        "the WKV recurrence is a ratio of exponentially weighted sums with a running max, and "
        f"the gate multiplies two signals; {_NO_NODE}"
    )
    g.part(f"{p}.wkv", wkv_ops, reason, [f"{src}.att.time_decay", f"{src}.att.time_first"])
    _residual(g, f"{p}.residual")
    att = block.att
    for port, name in (("k", "key"), ("v", "value"), ("r", "receptance")):
        node = g.linear(f"{p}.{name}", getattr(att, name), f"{src}.att.{name}.weight")
        g.chain((f"{p}.shift", port), [node], (f"{p}.wkv", port))
    output = g.linear(f"{p}.output", att.output, f"{src}.att.output.weight")
    lif = g.lif(f"{p}.lif", block.att_lif, f"{src}.att_lif")
    g.chain((f"{p}.wkv", "y"), [output, *lif], (f"{p}.residual", "spikes"))


def _channel_mix(g: _GraphBuilder, block: SpikingBlock, p: str, src: str) -> None:
    """Block ``p``'s ChannelMix: key, ReLU² outside, value, receptance, gate outside, LIF."""
    _shift(g, f"{p}.shift", f"{src}.ln2", [f"{src}.ffn.mix_{c}" for c in "kr"])
    g.part(f"{p}.relu_square", ["relu(k)**2"], f"NIR has no ReLU or square; {_NO_NODE}")
    g.part(f"{p}.gate", ["gating product sigmoid(r) * v"], f"a product of two signals; {_NO_NODE}")
    _residual(g, f"{p}.residual")
    ffn = block.ffn
    key = g.linear(f"{p}.key", ffn.key, f"{src}.ffn.key.weight")
    g.chain((f"{p}.shift", "k"), [key], (f"{p}.relu_square", "k"))
    value = g.linear(f"{p}.value", ffn.value, f"{src}.ffn.value.weight")
    g.chain((f"{p}.relu_square", "h"), [value], (f"{p}.gate", "v"))
    receptance = g.linear(f"{p}.receptance", ffn.receptance, f"{src}.ffn.receptance.weight")
    g.chain((f"{p}.shift", "r"), [receptance], (f"{p}.gate", "r"))
    lif = g.lif(f"{p}.lif", block.ffn_lif, f"{src}.ffn_lif")
    g.chain((f"{p}.gate", "y"), lif, (f"{p}.residual", "spikes"))


def spikegpt_to_nir(model: SequenceModel) -> nir.NIRGraph:
    """The NIR graph of a SpikeGPT model's projections and LIF neurons (module docstring);
    BundleError (one line) for any other sequence architecture."""
    if not isinstance(model, SpikeGPT):
        raise BundleError(_refusal(model.architecture))
    g = _GraphBuilder(DEFAULT_DT)
    embedding = ["embedding lookup by token id"]
    if model.emb_spikes is not None:
        embedding.append("Heaviside spikes of the embedding (binary embedding)")
    g.part(
        "embedding",
        [*embedding, "LayerNorm ln0"],
        f"a table lookup by token id; {_NO_NODE}",
        ["emb.weight", *_norm("ln0")],
    )
    for i, block in enumerate(model.blocks):
        _time_mix(g, block, f"block{i}.att", f"blocks.{i}")
        _channel_mix(g, block, f"block{i}.ffn", f"blocks.{i}")
    tied = model.head is None
    projection = "head projection to logits" + (" (tied to emb.weight)" if tied else "")
    g.part(
        "head",
        ["LayerNorm ln_out of the residual stream", projection],
        "reads the LayerNorm of the residual stream (outside NIR); its logits go to sampling",
        [*_norm("ln_out"), *([] if tied else ["head.weight"])],
    )
    meta = {
        "ganglion_architecture": model.architecture,
        "ganglion_time": TIME_NOTE,
        "ganglion_dt": DEFAULT_DT,
        OUTSIDE_KEY: json.dumps([asdict(part) for part in g.parts.values()]),
    }
    return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=meta)


def outside_parts(graph: nir.NIRGraph) -> list[dict[str, Any]]:
    """The outside parts listed in a graph's metadata (as written or as read back by nir)."""
    stored = graph.metadata.get(OUTSIDE_KEY, "[]")
    return json.loads(stored.decode() if isinstance(stored, bytes) else stored)
