"""Our spiking graph as a network of Lava processes (Dense, Conv, LIF, RingBuffer in and out).

Layouts: our tensors are (C, H, W); Lava's Conv and its neurons use (W, H, C), so Conv weights,
neuron parameters and flattened Dense columns are permuted here.
Numbers: a ``loihi2-fixed`` program passes its integers (Dense ``weights = W_q / 2^e`` with
``weight_exp = e``; Conv ``weight = W_q``, since Lava's Conv model applies no exponent; LIF
``du, dv, vth, bias_mant, bias_exp`` from ``fixed_point.lif_params``, the conversion the torch
fixed-point program uses, du = 4095 unless the neuron has a synaptic current); a float program
passes floats with ``du = 1 − syn_decay`` (1 without a current), ``dv = 1 − decay``, gains
(× syn_gain) folded into the incoming weights and ``bias_mant`` = its bias plus the synaptic
biases (``bias_exp = 0``; a CubaLIF's at their steady state, as ``quantize`` does).
Both reset v to 0 (Loihi's LIF). Pooling is folded into the layer it feeds before this.
Output: a RingBuffer sink records the output port (spikes, or a read-out Dense's current) each
step; a non-spiking read-out (LI, CubaLI, I: a LIF that never reaches its vth) is recorded by
Lava's ``io.sink.Read``, which reads the LIF's v through a RefPort after every step.
Recurrence: all LIFs exist before any Dense or Conv is connected, so a Dense may read a LIF
that it feeds (its one-step delivery is the recurrent edge's previous step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable
from ganglion.models.spiking.fixed_point import effective_bias, lif_params
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Flatten, Neuron
from ganglion.models.spiking.loihi_layout import LoihiConfig, unsupported_reason


def to_lava_layout(a: np.ndarray) -> np.ndarray:
    """(C, H, W, ...) -> (W, H, C, ...); other ranks unchanged."""
    return a.transpose(2, 1, 0, *range(3, a.ndim)) if a.ndim >= 3 else a


def from_lava_layout(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Lava's (W, H, C, ...) back to (C, H, W, ...) when ``shape`` is 3-D."""
    return a.transpose(2, 1, 0, *range(3, a.ndim)) if len(shape) == 3 else a


@dataclass
class LavaNetwork:
    """The processes of one program; ``source`` feeds the input, ``sink`` records the output."""

    source: Any
    sink: Any
    neurons: dict[str, Any] = field(default_factory=dict)
    synapses: dict[str, Any] = field(default_factory=dict)
    v_init: dict[str, np.ndarray] = field(default_factory=dict)


def check_mappable(graph: SpikingGraph, fixed: bool) -> None:
    """BackendUnavailable naming the node when the program cannot run on Lava."""
    reason = unsupported_reason(graph)
    if reason:
        raise BackendUnavailable(f"lava backend: {reason}")
    for name, n in graph.neurons().items():
        if not n.spiking:
            continue
        if n.reset != "zero" or bool(n.v_reset.any()):
            raise BackendUnavailable(
                f"lava backend: neuron node {name!r} resets by subtraction, Loihi's LIF resets to "
                f"0: quantize it (ganglion quantize --target loihi2) or convert with --reset zero"
            )
        if not fixed and n.threshold.unique().numel() > 1:
            raise BackendUnavailable(
                f"lava backend: neuron node {name!r} has one threshold per neuron, Lava's LIF "
                f"takes one per layer: quantize it (ganglion quantize --target loihi2)"
            )


def build_network(
    graph: SpikingGraph, config: LoihiConfig | None, first_input: np.ndarray
) -> LavaNetwork:
    """Lava processes for ``graph`` (``config`` given: fixed point), fed ``first_input``
    [*input_shape, steps]; the sink records the output node over the same steps."""
    from lava.proc.io.source import RingBuffer as Source

    fixed = config is not None
    source = Source(data=to_lava_layout(first_input))
    ports: dict[str, Any] = {INPUT: source.s_out}
    net = LavaNetwork(source=source, sink=None)
    graded = not fixed or config.input_bits > 0
    for name, layer in graph.neurons().items():
        net.neurons[name], net.v_init[name] = _lif(name, layer, graph, fixed)
        ports[name] = net.neurons[name].s_out
    for name, layer in graph.nodes.items():
        if isinstance(layer, Flatten):
            ports[name] = _flattened(graph, name, ports)
    for name, layer in graph.neurons().items():
        gain = np.ones(layer.shape) if fixed else _input_gain(layer)
        for p in graph.predecessors(name):
            net.synapses[p] = _synapse(p, graph, ports, config, gain, graded)
            net.synapses[p].a_out.connect(net.neurons[name].a_in)
    outputs = graph.predecessors(OUTPUT)
    for p in outputs:
        if p not in net.synapses and p in graph.nodes and not isinstance(graph.nodes[p], Neuron):
            net.synapses[p] = _synapse(p, graph, ports, config, np.ones(1), graded)
            ports[p] = net.synapses[p].a_out
    net.sink = _sink(graph, ports, net, first_input.shape[-1])
    return net


def _flattened(graph: SpikingGraph, name: str, ports: dict[str, Any]) -> Any:
    """The flattened port of Flatten node ``name`` (made once, reading through Flatten chains)."""
    if name not in ports:
        (src,) = graph.predecessors(name)
        ports[name] = (ports[src] if src in ports else _flattened(graph, src, ports)).flatten()
    return ports[name]


def _sink(graph: SpikingGraph, ports: dict[str, Any], net: LavaNetwork, steps: int) -> Any:
    """The process recording the output over ``steps`` steps (its ``data`` [*out, steps]): a
    non-spiking read-out's v through ``Read``, else the output port into a RingBuffer."""
    from lava.proc.io.sink import Read
    from lava.proc.io.sink import RingBuffer as Sink

    outputs = graph.predecessors(OUTPUT)
    readout = graph.nodes.get(outputs[0])
    if isinstance(readout, Neuron) and not readout.spiking:
        sink = Read(buffer=steps)
        sink.connect_var(net.neurons[outputs[0]].v)
        return sink
    sink = Sink(shape=tuple(to_lava_layout(np.zeros(graph.output_shape)).shape), buffer=steps)
    for p in outputs:
        ports[p].connect(sink.a_in)
    return sink


def _input_gain(neuron: Neuron) -> np.ndarray:
    """What a float neuron multiplies its input by (gain, × syn_gain with a current)."""
    gain = neuron.gain if neuron.syn_gain is None else neuron.gain * neuron.syn_gain
    return gain.double().numpy()


def _reads_input(graph: SpikingGraph, name: str) -> bool:
    src = graph.predecessors(name)[0]
    while src != INPUT and isinstance(graph.nodes[src], Flatten):
        src = graph.predecessors(src)[0]
    return src == INPUT


def _synapse(
    name: str,
    graph: SpikingGraph,
    ports: dict[str, Any],
    config: LoihiConfig | None,
    gain: np.ndarray,
    graded_input: bool,
) -> Any:
    """Dense or Conv process for synaptic node ``name`` (connected to its source port)."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense

    layer = graph.nodes[name]
    src = graph.predecessors(name)[0]
    graded = graded_input and _reads_input(graph, name)
    bits = (config.input_bits if config else 24) if graded else 0
    w = layer.weight.double().numpy()
    if isinstance(layer, Affine):
        w = w * gain.reshape(-1, 1)
        in_shape = graph.shapes[
            graph.predecessors(src)[0]
            if src != INPUT and isinstance(graph.nodes[src], Flatten)
            else src
        ]
        if len(in_shape) == 3:  # columns in Lava's flattened (W, H, C) order
            w = w.reshape(w.shape[0], *in_shape).transpose(0, 3, 2, 1).reshape(w.shape[0], -1)
        kwargs: dict[str, Any] = {"num_message_bits": bits}
        if config is not None:
            exp = config.weight_exp[name]
            w, kwargs["weight_exp"] = np.rint(w / 2.0**exp).astype(np.int32), exp
        proc = Dense(weights=w, name=name, **kwargs)
    else:
        w = w * gain.reshape(gain.shape[0], -1)[:, :1].reshape(-1, 1, 1, 1)
        w = w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)  # Lava convolves: flip, (O, W, H, I)
        w = np.ascontiguousarray(np.rint(w).astype(np.int32) if config is not None else w)
        proc = Conv(
            weight=w,
            input_shape=tuple(reversed(graph.shapes[src])),
            padding=tuple(reversed(layer.padding)),
            stride=tuple(reversed(layer.stride)),
            dilation=tuple(reversed(layer.dilation)),
            groups=layer.groups,
            num_message_bits=bits,
            name=name,
        )
    ports[src].connect(proc.s_in)
    return proc


def _lif(name: str, neuron: Neuron, graph: SpikingGraph, fixed: bool) -> tuple[Any, np.ndarray]:
    """LIF process for a neuron node; returns it and its initial v (Lava layout). A non-spiking
    neuron's float vth is infinite (its fixed-point vth comes from the quantized graph)."""
    from lava.proc.lif.process import LIF

    shape = tuple(to_lava_layout(np.zeros(neuron.shape)).shape)
    v0 = to_lava_layout(neuron.v_init.double().numpy())
    if fixed:  # Lava's LIF takes one du, dv and vth per layer (the quantizer makes them one)
        du, dv, mant, exp, vth = lif_params(graph, name)
        lif = LIF(
            shape=shape,
            du=int(du[0]),
            dv=int(dv[0]),
            vth=int(vth[0]),
            bias_mant=to_lava_layout(mant.reshape(neuron.shape).numpy()),
            bias_exp=to_lava_layout(exp.reshape(neuron.shape).numpy()),
            v=np.rint(v0).astype(np.int32),
            name=name,
        )
        return lif, np.rint(v0)
    bias = effective_bias(graph, name)
    du = 1.0
    if neuron.synaptic:  # synaptic biases at their steady state, as quantize does
        du = 1.0 - float(neuron.syn_decay.reshape(-1)[0])
        bias = neuron.bias + (bias - neuron.bias) * neuron.syn_gain / du
    lif = LIF(
        shape=shape,
        du=du,
        dv=1.0 - float(neuron.decay.reshape(-1)[0]),
        vth=float(neuron.threshold.reshape(-1)[0]) if neuron.spiking else np.inf,
        bias_mant=to_lava_layout(bias.numpy()),
        bias_exp=0,
        v=v0,
        name=name,
    )
    return lif, v0
