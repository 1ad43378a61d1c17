"""What a spiking graph must look like to map onto Loihi 2 (through Lava), and its number formats.

Mappable graphs hold only Affine (Lava ``Dense``), Conv2d (Lava ``Conv``), Flatten (a port
reshape), AvgPool2d/SumPool2d and Neuron (Lava ``LIF``) nodes. Lava's LIF is current-based:
its u is a CubaLIF's synaptic current (``du`` from ``syn_decay``), or just this step's input
(du = 4095) for IF/LIF; a layer shares one decay and one syn_decay. Every synaptic node reads one
spike source (a neuron layer or the graph input) and feeds exactly one neuron layer or the graph
output; every neuron layer reads synaptic nodes only. A non-spiking neuron (LI, CubaLI, I) is a
LIF whose threshold (``NONSPIKING_VTH``) its membrane never reaches; Lava's LIF sends spikes
only, so it must be the graph's only output, read as its v every step. A pooling node is a
fixed-weight depthwise convolution: it is folded into the one Dense or Conv layer it feeds
(``fold_pooling``), so it costs no neurons and no timestep.

Timing (``lava_shifts``): every Dense and Conv delivers one step late, so a node's output on Lava
is the program's output some steps later. A mappable graph gives each node one such shift: a
recurrent edge (the previous step's output) maps when its loop passes through exactly one Dense
or Conv, whose own delay then is the recurrent step (snnTorch ``RLeaky``, the NIR paper's Braille
RNN); paths that would reach a node with different shifts are refused, naming the edge.

Loihi 2 formats used here (Lava ``PyLifModelBitAcc``, ``PyDenseModelBitAcc``): weight mantissa
8-bit signed, shared per-layer exponent; u, v 24-bit; du, dv 12-bit unsigned; bias mantissa
13-bit signed with a 3-bit exponent; vth 17-bit unsigned (compared as vth << 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ganglion.models.errors import ShapeError
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, AvgPool2d, Conv2d, Flatten, Neuron, SumPool2d

SYNAPTIC = (Affine, Conv2d)
POOLS = (AvgPool2d, SumPool2d)  # SumPool2d subclasses AvgPool2d
MAPPABLE = (Affine, Conv2d, Flatten, AvgPool2d, Neuron)
WEIGHT_MANT_MAX = 127  # 8-bit signed mantissa, used symmetric: [-127, 127]
BIAS_MANT_MAX = 4095  # 13-bit signed: [-4096, 4095]
BIAS_EXP_MAX = 7  # 3-bit unsigned
VTH_MAX = 2**17 - 1
NONSPIKING_VTH = VTH_MAX  # a non-spiking neuron's vth: quantize keeps |v| ≤ vth << 6 below it
UV_LIMIT = 2**23  # u wraps and v clips at 24 bits
ACT_SHIFT = 6  # a_in and vth are MSB-aligned by << 6
DECAY_UNITY = 4096
DU_PLAIN = 4095  # with Lava's +1 offset, u = a_in << 6 each step (no current memory)


@dataclass
class LoihiConfig:
    """The fixed-point program's numbers that are not in its graph (config.json ``loihi``).

    The graph holds effective integers: synaptic weights ``W_q`` (a spike of value s adds
    ``W_q · s`` to a_in), neuron ``threshold = vth << 6``, ``bias = bias_mant << bias_exp``,
    ``decay = (4096 − dv) / 4096``, ``gain = 64`` and integer ``v_init``.
    """

    input_scale: float = 1.0  # graded input spike = round(x · input_scale)
    input_bits: int = 0  # 0: binary input spikes; else graded, |x_q| ≤ 2**input_bits − 1
    readout_scale: float = 1.0  # output current = a / readout_scale + readout_bias
    readout_bias: list[float] = field(default_factory=list)  # per output feature (flattened)
    weight_exp: dict[str, int] = field(default_factory=dict)  # synaptic node -> Lava exponent


def unsupported_reason(graph: SpikingGraph) -> str | None:
    """Why ``graph`` cannot map onto Loihi 2 through Lava, naming the node or edge; None if it can.

    The one test of "mappable": the chip-fit report, ``ganglion quantize --target loihi2`` and
    the Lava backend all ask it."""
    supported = ", ".join(t.__name__ for t in MAPPABLE)
    for name, layer in graph.nodes.items():
        kind = type(layer).__name__
        if not isinstance(layer, MAPPABLE):
            return f"node {name!r} ({kind}) has no Loihi 2 / Lava process (supported: {supported})"
        sources = [_spike_source(graph, p) for p in graph.predecessors(name)]
        consumers = _consumers(graph, name)
        if isinstance(layer, Neuron):
            reason = _neuron_problem(graph, name, layer, sources, consumers)
            if reason:
                return reason
        if isinstance(layer, Flatten) and not layer.full:
            return f"Flatten node {name!r} keeps several axes; only a full flatten is mapped"
        if isinstance(layer, POOLS):
            reason = _pool_problem(graph, name)
            if reason:
                return reason
        if isinstance(layer, SYNAPTIC):
            if len(sources) != 1:
                return (
                    f"synaptic node {name!r} reads {len(sources)} sources; a Lava Dense reads one"
                )
            if sources[0] != INPUT and not _spiking(graph, sources[0]):
                return f"synaptic node {name!r} must read spikes (a neuron layer or the input)"
            if len(consumers) != 1 or not _feeds_neuron_or_output(graph, consumers[0]):
                return f"synaptic node {name!r} must feed exactly one neuron layer or the output"
    return lava_shifts(graph)[1]


def _spiking(graph: SpikingGraph, name: str) -> bool:
    layer = graph.nodes[name]
    return isinstance(layer, Neuron) and layer.spiking


def _neuron_problem(
    graph: SpikingGraph, name: str, neuron: Neuron, sources: list[str], consumers: list[str]
) -> str | None:
    """Why a neuron node has no Lava LIF form (CUBA: u is the synaptic current); None if it has."""
    if any(not _is_synaptic(graph, s) for s in sources):
        return f"neuron node {name!r} must read synaptic layers only (Dense/Conv)"
    if not neuron.spiking:
        if consumers != [OUTPUT] or graph.predecessors(OUTPUT) != [name]:
            return (
                f"neuron node {name!r} ({neuron.model}) is non-spiking: Lava's LIF sends only "
                f"spikes, so its membrane is read as the program's only output and can feed "
                f"nothing else"
            )
        if neuron.v_min is not None:
            return f"neuron node {name!r} has a lower bound on v: Lava's LIF has none"
    elif (
        neuron.fire != "gt"
        or neuron.spikes != "one"
        or neuron.reset_delay
        or neuron.v_min is not None
    ):
        return (
            f"neuron node {name!r} ({neuron.model}, fire {neuron.fire}, spikes {neuron.spikes}, "
            f"reset delay {neuron.reset_delay}) has no Loihi 2 LIF form here: Lava's LIF "
            f"fires one spike on v > vth and resets at once"
        )
    if neuron.spiking and not bool((neuron.threshold > 0).all()):
        index = tuple(int(i) for i in (neuron.threshold <= 0).nonzero()[0])
        return (
            f"neuron node {name!r} has threshold {float(neuron.threshold[index]):g} at index "
            f"{index}: Loihi 2 folds each threshold into the neuron's weights, so every one "
            "must be positive"
        )
    for what in ("decay", "syn_decay"):
        value = getattr(neuron, what)
        if value is not None and value.unique().numel() > 1:
            return (
                f"neuron node {name!r} has {value.unique().numel()} values of {what}: "
                f"Lava's LIF takes one per layer"
            )
    if any(isinstance(graph.nodes[s], Conv2d) for s in sources) and not _per_channel(neuron):
        return (
            f"neuron node {name!r} reads a Conv but its gain / threshold differ within a "
            f"channel: Lava's Conv shares its weights over a channel"
        )
    return None


def _per_channel(neuron: Neuron) -> bool:
    """True when gain (· syn_gain) / threshold (spiking neurons) is one number per channel
    (axis 0)."""
    ratio = neuron.gain / neuron.threshold if neuron.spiking else neuron.gain
    if neuron.syn_gain is not None:
        ratio = ratio * neuron.syn_gain
    channel = ratio.reshape(ratio.shape[0], -1)
    return bool(torch.allclose(channel, channel[:, :1].expand_as(channel)))


def _consumers(graph: SpikingGraph, name: str) -> list[str]:
    return [b for a, b in graph.edges if a == name]


def _spike_source(graph: SpikingGraph, name: str) -> str:
    """The node whose output reaches ``name`` through Flatten and pooling nodes."""
    while name != INPUT and isinstance(graph.nodes[name], (Flatten, *POOLS)):
        name = graph.predecessors(name)[0]
    return name


def _is_synaptic(graph: SpikingGraph, name: str) -> bool:
    return name != INPUT and isinstance(graph.nodes[name], SYNAPTIC)


def _feeds_neuron_or_output(graph: SpikingGraph, name: str) -> bool:
    return name == OUTPUT or isinstance(graph.nodes[name], Neuron)


def _pool_target(graph: SpikingGraph, name: str) -> str | None:
    """The synaptic node a pooling node folds into (through pooling and Flatten nodes that
    each feed one node), or None when there is no such single node."""
    while True:
        consumers = _consumers(graph, name)
        if len(consumers) != 1 or consumers[0] == OUTPUT:
            return None
        name = consumers[0]
        if isinstance(graph.nodes[name], SYNAPTIC):
            return name
        if not isinstance(graph.nodes[name], (Flatten, *POOLS)):
            return None


def _pool_problem(graph: SpikingGraph, name: str) -> str | None:
    """Why pooling node ``name`` cannot be folded into the layer it feeds; None if it can."""
    target = _pool_target(graph, name)
    if target is None:
        return (
            f"pooling node {name!r} must feed one Dense or Conv layer (it is folded into that "
            f"layer's weights as a fixed-weight convolution)"
        )
    if isinstance(graph.nodes[target], Conv2d) and not _conv_fold_exact(graph, target):
        return (
            f"pooling node {name!r} cannot be folded into Conv node {target!r}: the pooled "
            f"map's edges do not line up with the convolution's padding"
        )
    return None


def _fold_chain(graph: SpikingGraph, syn: str) -> list[str]:
    """The pooling and Flatten nodes between ``syn`` and the spikes it reads, source first."""
    chain: list[str] = []
    name = graph.predecessors(syn)[0]
    while name != INPUT and isinstance(graph.nodes[name], (Flatten, *POOLS)):
        chain.insert(0, name)
        name = graph.predecessors(name)[0]
    return chain


def _pool_kernel(pool: AvgPool2d) -> float:
    """The fixed weight of every tap: 1 / area (average, zero padding counted) or 1 (sum)."""
    return 1.0 if isinstance(pool, SumPool2d) else 1.0 / (pool.kernel_size[0] * pool.kernel_size[1])


def _folded_conv(conv: Conv2d, pools: list[AvgPool2d]) -> Conv2d:
    """conv ∘ pools[-1] ∘ … ∘ pools[0] as one Conv2d (a pool is a depthwise convolution with
    ``_pool_kernel`` taps): each pool spreads every tap over its window and scales the stride."""
    weight = conv.weight.double()
    stride, padding, dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
    for pool in reversed(pools):
        kp, sp, pp = pool.kernel_size, pool.stride, pool.padding
        kh, kw = weight.shape[2:]
        size = [(k - 1) * d * s + p for k, d, s, p in zip((kh, kw), dilation, sp, kp, strict=True)]
        spread = weight.new_zeros(*weight.shape[:2], *size)
        for i in range(kh):
            for j in range(kw):
                y, x = i * dilation[0] * sp[0], j * dilation[1] * sp[1]
                tap = weight[:, :, i, j, None, None] * _pool_kernel(pool)
                spread[:, :, y : y + kp[0], x : x + kp[1]] += tap
        weight = spread
        padding = [c * s + p for c, s, p in zip(padding, sp, pp, strict=True)]
        stride = [c * s for c, s in zip(stride, sp, strict=True)]
        dilation = [1, 1]
    return Conv2d(
        weight.to(conv.weight.dtype),
        conv.bias.clone(),
        tuple(stride),
        tuple(padding),
        (1, 1),
        conv.groups,
    )


def _conv_fold_exact(graph: SpikingGraph, syn: str) -> bool:
    """True when the folded Conv equals pooling then convolving on a random probe (float64):
    it differs where a pooled map's edge holds real pixels that the Conv reads as padding."""
    chain = _fold_chain(graph, syn)
    source = graph.predecessors(chain[0])[0]
    probe = torch.rand(1, *graph.shapes[source], generator=torch.Generator().manual_seed(0))
    x = probe.double()
    for name in chain:
        x = graph.nodes[name].forward(x)
    conv = graph.nodes[syn]
    conv = replace(conv, weight=conv.weight.double(), bias=torch.zeros_like(conv.bias).double())
    folded = _folded_conv(conv, [graph.nodes[n] for n in chain])
    expected, got = conv.forward(x), folded.forward(probe.double())
    return expected.shape == got.shape and torch.allclose(expected, got, rtol=1e-9, atol=1e-9)


def _folded_affine(graph: SpikingGraph, chain: list[str], layer: Affine) -> Affine:
    """affine ∘ chain as one Affine over the flattened source: W' = W · P, with P the chain's
    linear map, found as the gradient of (W · chain(x)) for each row of W."""
    source = graph.predecessors(chain[0])[0]
    rows = layer.weight.shape[0]
    x = torch.zeros(rows, *graph.shapes[source], dtype=torch.float64, requires_grad=True)
    y = x
    for name in chain:
        y = graph.nodes[name].forward(y)
    (grad,) = torch.autograd.grad((y.reshape(rows, -1) * layer.weight.double()).sum(), x)
    return Affine(grad.reshape(rows, -1).float(), layer.bias.clone())


def fold_pooling(graph: SpikingGraph) -> SpikingGraph:
    """The same program with every pooling node folded into the Dense or Conv layer it feeds.

    Call on a graph ``unsupported_reason`` accepts. A Conv after pooling becomes one Conv with
    a larger kernel and stride; an Affine after pooling and Flatten reads the flattened spikes
    through ``W · P``. The program's function and timing are unchanged (pooling holds no state
    and no synaptic delay)."""
    if not any(isinstance(layer, POOLS) for layer in graph.nodes.values()):
        return graph
    nodes, removed, rewire = dict(graph.nodes), set(), {}
    delays = dict(graph.delays)  # a delay along a folded chain moves onto its new first edge
    for name, layer in graph.nodes.items():
        chain = _fold_chain(graph, name) if isinstance(layer, SYNAPTIC) else []
        if not any(isinstance(graph.nodes[n], POOLS) for n in chain):
            continue
        source = graph.predecessors(chain[0])[0]
        path = [source, *chain, name]
        delay = sum(graph.delay(a, b) for a, b in zip(path, path[1:], strict=False))
        if isinstance(layer, Conv2d):
            nodes[name] = _folded_conv(layer, [graph.nodes[n] for n in chain])
            rewire[(chain[-1], name)] = [(source, name)]
            removed.update(chain)
        else:
            flat = next(n for n in reversed(chain) if isinstance(graph.nodes[n], Flatten))
            nodes[name] = _folded_affine(graph, chain, layer)
            nodes[flat] = Flatten()
            rewire[(chain[-1], name)] = [(source, flat), (flat, name)]
            removed.update(n for n in chain if n != flat)
        delays[rewire[(chain[-1], name)][0]] = delay
    edges: list[tuple[str, str]] = []
    for edge in graph.edges:
        if edge in rewire:
            edges += rewire[edge]
        elif removed.isdisjoint(edge) and edge not in edges:
            edges.append(edge)
    kept = {n: layer for n, layer in nodes.items() if n not in removed}
    edges = list(dict.fromkeys(edges))
    kept_delays = {e: d for e, d in delays.items() if e in edges}
    return SpikingGraph(kept, edges, graph.input_shape, delays=kept_delays)


def lava_shifts(graph: SpikingGraph) -> tuple[dict[str, int], str | None]:
    """Steps by which each node's output on Lava lags the program's (``OUTPUT``: the program's
    delay D), and why they conflict (None when every node has one shift).

    Along edge a -> b the shift is a's, minus the edge's delay, plus one when b is a Dense or
    Conv (Lava delivers its output one step late); a recurrent loop keeps one shift when it holds
    as many synaptic layers as delayed edges."""
    successors: dict[str, list[str]] = {}
    for a, b in graph.edges:
        successors.setdefault(a, []).append(b)
    shift, queue = {INPUT: 0}, [INPUT]
    while queue:
        a = queue.pop(0)
        for b in successors.get(a, []):
            step = 1 if b != OUTPUT and isinstance(graph.nodes[b], SYNAPTIC) else 0
            s = shift[a] - graph.delay(a, b) + step
            if b not in shift and s < 0:
                return shift, (
                    f"edge {a} -> {b} is delayed {-s} step(s) more than Lava's Dense and Conv "
                    f"layers before it delay {b!r}"
                )
            if b not in shift:
                shift[b] = s
                queue.append(b)
            elif s != shift[b]:
                return shift, (
                    f"edge {a} -> {b} would reach {b!r} {abs(s - shift[b])} step(s) "
                    f"{'later' if s > shift[b] else 'earlier'} on Lava than in the program: "
                    f"Lava's Dense and Conv each deliver one step late, so the paths into a "
                    f"node must cross as many of them (a recurrent loop: exactly one)"
                )
    return shift, None


def synaptic_depth(graph: SpikingGraph) -> int:
    """D: the steps by which the program's output appears later on Lava (the synaptic layers on
    each input -> output path, less the path's delayed edges)."""
    return lava_shifts(graph)[0][OUTPUT]


def lava_order(graph: SpikingGraph) -> list[str]:
    """The non-synaptic nodes in the order one Lava step computes them.

    A Dense or Conv delivers what it received the step before, so only edges between the other
    nodes order them (a mappable graph has no loop without a synaptic node)."""
    rest = [n for n, layer in graph.nodes.items() if not isinstance(layer, SYNAPTIC)]
    needs = {n: {p for p in graph.predecessors(n) if p in rest} for n in rest}
    order: list[str] = []
    while len(order) < len(rest):
        ready = [n for n in rest if n not in order and needs[n] <= set(order)]
        if not ready:
            raise ShapeError(f"nodes {sorted(set(rest) - set(order))} loop without a Dense/Conv")
        order.append(ready[0])
    return order


def split_bias(bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective integer bias [N] -> (13-bit mantissa, smallest 3-bit exponent) with
    ``mant << exp`` equal to the nearest representable value (equal to ``bias`` when it is)."""
    b = bias.double()
    exp = torch.zeros_like(b, dtype=torch.int64)
    for e in range(BIAS_EXP_MAX + 1):
        exp = torch.where((b / 2**e).round().abs() <= BIAS_MANT_MAX, exp, exp + 1)
    exp = exp.clamp(max=BIAS_EXP_MAX)
    mant = (b / 2.0**exp).round().clamp(-BIAS_MANT_MAX - 1, BIAS_MANT_MAX).long()
    return mant, exp


def neuron_du(neuron: Neuron) -> torch.Tensor:
    """Loihi's 12-bit ``du`` per flattened neuron: u keeps (4095 − du)/4096 each step (Lava adds
    1 to du), so ``syn_decay`` c gives du = 4095 − round(4096·c); no synaptic current: 4095."""
    n = neuron.threshold.numel()
    if neuron.syn_decay is None:
        return torch.full((n,), DU_PLAIN, dtype=torch.int64)
    kept = (neuron.syn_decay.reshape(-1).double() * DECAY_UNITY).round().long()
    return (DU_PLAIN - kept).clamp(0, DU_PLAIN)


def du_to_syn_decay(du: torch.Tensor) -> torch.Tensor:
    """The current's decay factor that Loihi's ``du`` applies: (4095 − du) / 4096."""
    return (DU_PLAIN - du.double()) / DECAY_UNITY


def decay_to_dv(decay: torch.Tensor) -> torch.Tensor:
    """Neuron ``decay`` (1 = no leak) -> Loihi's 12-bit ``dv`` (v keeps (4096 − dv)/4096)."""
    return (DECAY_UNITY - (decay.double() * DECAY_UNITY).round()).long().clamp(0, DECAY_UNITY - 1)
