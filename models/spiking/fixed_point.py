"""A Loihi 2 fixed-point spiking program in PyTorch: Lava ``fixed_pt``'s integer arithmetic,
timing included, so it predicts Lava spike for spike without Lava.

Timestep alignment (Lava's rule, reproduced here):
  every synaptic layer (Dense, Conv) delivers its input one timestep late — the current a
  neuron integrates at step t comes from spikes sent at step t − 1. A program whose output lags
  by D steps (``loihi_layout.synaptic_depth``: the synaptic layers on the input -> output path)
  answers input step t at step t + D. ``run`` executes T + D steps (the encoded input continues
  for the extra D steps: the same current for "direct", further seeded draws for "rate", zeros
  for time-major input) and keeps the last T output steps, which line up with input steps
  0..T−1. ``step`` is one Lava step; its decoded output sums only steps t ≥ D. So ``run(x)``
  equals T + D calls of ``step``.
Recurrent edges: the graph's edge delays are not applied here; Lava's one-step synaptic delay
is all there is, and on a loop through one Dense it is the recurrent edge's previous step
(``loihi_layout.lava_shifts`` accepts only graphs where that holds). ``run`` steps such a loop one
timestep at a time (the rest stays batched over time), as ``step`` does.

Arithmetic per step: synaptic ``a = floor(W_q · s)`` (exact), neurons through
``lif_fixed_scan`` (Lava ``PyLifModelBitAcc``: u decays by (4095 − du) / 4096 and adds a << 6
(du = 4095 without a synaptic current, so u = a << 6; a CubaLIF's du comes from its syn_decay),
v decays by (4096 − dv) >> 12 truncated toward zero, 24-bit clip, spike on v > vth << 6, v ← 0).
A non-spiking neuron (LI, CubaLI, I) is the same LIF with vth = ``NONSPIKING_VTH``; its output
is its v after each step, read out as v / ``readout_scale``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ganglion.kernels.lif import cpu_scan_available, lif_fixed_scan
from ganglion.models.manifest import Manifest, SpikingTime, TensorSpec
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.encoding import encode, encode_step
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Neuron
from ganglion.models.spiking.loihi_layout import (
    ACT_SHIFT,
    SYNAPTIC,
    UV_LIMIT,
    LoihiConfig,
    decay_to_dv,
    lava_order,
    neuron_du,
    split_bias,
    synaptic_depth,
)
from ganglion.models.spiking.network import MEMBRANE, state_name

State = dict[str, torch.Tensor]
ARCHITECTURE = "loihi2_fixed_graph"
SYNAPTIC_INPUT, DELIVERED = "u", "a"  # state kinds besides the membrane ``v``


def fixed_state_names(name: str, layer: Any) -> list[str]:
    """The int64 state tensors node ``name`` carries between Lava steps: a neuron's ``u.<name>``
    (synaptic input) and ``v.<name>`` (membrane), a synaptic layer's ``a.<name>`` (the input it
    delivers next step, Lava's one-step delay); none for other nodes."""
    if isinstance(layer, Neuron):
        kinds = [SYNAPTIC_INPUT, MEMBRANE]
    elif isinstance(layer, SYNAPTIC):
        kinds = [DELIVERED]
    else:
        kinds = []
    return [state_name(kind, name) for kind in kinds]


def quantize_input(x: torch.Tensor, config: LoihiConfig) -> torch.Tensor:
    """Encoded input (float) -> the integer spikes Lava receives (graded or binary), int64."""
    if config.input_bits == 0:
        return x.round().long()
    limit = 2**config.input_bits - 1
    return (x.double() * config.input_scale).round().clamp(-limit, limit).long()


def encoded_sequence(x: torch.Tensor, time: SpikingTime, steps: int) -> torch.Tensor:
    """Float input of ``steps`` Lava timesteps: [steps, B, ...].

    x: [B, ...] raw features when the program declares an encoding (encoded for every step),
    else time-major [T, B, ...] (padded with zero steps up to ``steps``).
    """
    if time.encoding != "none":
        return encode(x, steps, time.encoding, time.seed)
    pad = x.new_zeros(max(steps - x.shape[0], 0), *x.shape[1:])
    return torch.cat([x, pad])[:steps]


def input_sequence(
    x: torch.Tensor, time: SpikingTime, config: LoihiConfig, steps: int
) -> torch.Tensor:
    """Integer input spikes for ``steps`` Lava timesteps: [steps, B, ...] int64."""
    return quantize_input(encoded_sequence(x, time, steps), config)


class FixedPointNetwork(torch.nn.Module):
    """Integer spiking program with Lava's one-step synaptic delay (see module docstring)."""

    def __init__(self, graph: SpikingGraph, time: SpikingTime, config: LoihiConfig) -> None:
        super().__init__()
        self.graph, self.time, self.config = graph, time, config
        self.depth = synaptic_depth(graph)
        self.activity: dict[str, torch.Tensor] = {}
        self._order = lava_order(graph)
        self._lif = {name: lif_params(graph, name) for name in graph.neurons()}
        self._cpu_lif: dict[str, tuple] = {}  # ``_lif`` as the compiled CPU scan takes them
        self._readout_bias = torch.tensor(config.readout_bias, dtype=torch.float64)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch.nn.Module's signature
        """``to``/``cuda`` also move the graph's node tensors and the derived LIF parameters."""
        self.graph.apply_to_tensors(fn)
        self._lif = {name: lif_params(self.graph, name) for name in self.graph.neurons()}
        self._cpu_lif = {}
        return super()._apply(fn, recurse)

    def _scan(
        self, name: str, a: torch.Tensor, u0: torch.Tensor, v0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lif_fixed_scan`` of neuron layer ``name`` (a [T, B, N] int64, u0/v0 [B, N] int64);
        on the CPU with numba the compiled scan, its parameters converted once per network."""
        if a.is_cuda or not cpu_scan_available():
            return lif_fixed_scan(a, u0, v0, *self._lif[name])
        from ganglion.kernels.lif import cpu

        params = self._cpu_lif.get(name)
        if params is None:
            params = self._cpu_lif[name] = cpu.fixed_params(*self._lif[name])
        return cpu.fixed_scan(a, u0, v0, params)

    def _neuron(
        self, name: str, a: torch.Tensor, u: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Neuron layer ``name`` over a [T, B, N] from u, v [B, N] -> (output [T, B, N], u, v):
        spikes, or a non-spiking neuron's v after every step."""
        if self.graph.nodes[name].spiking:
            return self._scan(name, a, u, v)
        membranes = []
        for a_t in a:
            _, u, v = self._scan(name, a_t.unsqueeze(0), u, v)
            membranes.append(v)
        return torch.stack(membranes), u, v

    @property
    def graded_output(self) -> bool:
        """True when the output is graded: a synaptic layer's current or a non-spiking neuron's
        membrane (read out as value / ``readout_scale`` + bias)."""
        return any(
            isinstance(layer, SYNAPTIC) or (isinstance(layer, Neuron) and not layer.spiking)
            for layer in (self.graph.nodes.get(p) for p in self.graph.predecessors(OUTPUT))
        )

    def init_state(self, batch: int) -> State:
        """Fresh state: t, u/v per neuron layer, delay buffer per synaptic layer, decode."""
        state: State = {"t": torch.zeros(1, dtype=torch.int64)}
        state.update(self._node_state(self.graph.nodes, batch))
        if self.time.decoding != "none":
            state["decode"] = torch.zeros(batch, *self.graph.output_shape, dtype=torch.int64)
        return state

    def _node_state(self, names: Iterable[str], batch: int) -> State:
        """The Lava state of nodes ``names`` at step 0: v at v_init, u and buffers zero."""
        state: State = {}
        for name in names:
            layer, shape = self.graph.nodes[name], self.graph.shapes[name]
            for state_key in fixed_state_names(name, layer):
                state[state_key] = torch.zeros(batch, *shape, dtype=torch.int64)
            if isinstance(layer, Neuron):
                v = state_name(MEMBRANE, name)
                state[v] = layer.v_init.long().expand(batch, *shape).clone()
        return state

    def run(self, x: torch.Tensor, record: bool = False) -> torch.Tensor:
        """Whole input -> output, shapes as ``SpikingNetwork.run`` (T + D Lava steps inside;
        T is the input's first axis when it is time-major)."""
        steps = (x.shape[0] if self.time.time_major else self.time.timesteps) + self.depth
        seq = input_sequence(x, self.time, self.config, steps)
        values: dict[str, torch.Tensor] = {INPUT: seq}  # every value time-major [S, B, ...]
        for cyclic, group in ((self.graph.cyclic(g), g) for g in self.graph.groups):
            if cyclic:
                values.update(self._run_loop(group, values))
            else:
                values[group[0]] = self._run_node(group[0], values)
        self.activity = {}
        if record:
            for name, layer in self.graph.neurons().items():
                if layer.spiking:
                    counts = values[name][self.depth :].sum(dim=(0, 1))
                    self.activity[name] = counts.reshape(-1).float()
        return self.decode(self.graph.input_of(OUTPUT, values)[self.depth :])

    def _run_node(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Node ``name`` outside any loop, over all steps at once: [S, B, *out]."""
        layer, inp = self.graph.nodes[name], self.graph.input_of(name, values)
        steps, batch = inp.shape[:2]
        if isinstance(layer, Neuron):
            a = inp.reshape(steps, batch, -1)
            u0 = a.new_zeros(batch, a.shape[-1], dtype=torch.int64)
            v0 = layer.v_init.long().reshape(1, -1).expand(batch, -1).contiguous()
            return self._neuron(name, a, u0, v0)[0].reshape(steps, batch, *layer.shape)
        rows = inp.reshape(steps * batch, *inp.shape[2:])
        if not isinstance(layer, SYNAPTIC):
            y = layer.forward(rows)
            return y.reshape(steps, batch, *y.shape[1:])
        a = _synapse(layer, rows).reshape(steps, batch, *self.graph.shapes[name])
        return torch.cat([torch.zeros_like(a[:1]), a[:-1]])  # delivered one step late

    def _run_loop(self, group: list[str], values: dict[str, torch.Tensor]) -> dict:
        """A recurrent group, one Lava step at a time -> its nodes' values [S, B, *out]."""
        steps, batch = values[INPUT].shape[:2]
        state = self._node_state(group, batch)
        outside = {p for n in group for p in self.graph.predecessors(n) if p not in group}
        outs: dict[str, list[torch.Tensor]] = {n: [] for n in group}
        for t in range(steps):
            now, state = self._advance(group, {p: values[p][t] for p in outside}, state)
            for name in group:
                outs[name].append(now[name])
        return {name: torch.stack(out) for name, out in outs.items()}

    def _advance(
        self, names: list[str], values: dict[str, torch.Tensor], state: State
    ) -> tuple[dict[str, torch.Tensor], State]:
        """One Lava step of nodes ``names``, reading ``values`` [B, ...] of this step for the
        other nodes: every synaptic layer delivers what it received last step, the neurons and
        Flatten nodes follow in Lava's order, then the synaptic layers take this step's input.
        Returns the step's values and the nodes' new state."""
        values, new = dict(values), {}
        synapses = [n for n in names if isinstance(self.graph.nodes[n], SYNAPTIC)]
        for name in synapses:
            values[name] = state[fixed_state_names(name, self.graph.nodes[name])[0]]
        for name in (n for n in self._order if n in names):
            layer, inp = self.graph.nodes[name], self.graph.input_of(name, values)
            if isinstance(layer, Neuron):
                batch = inp.shape[0]
                u_key, v_key = fixed_state_names(name, layer)
                flat = (
                    inp.reshape(1, batch, -1),
                    state[u_key].reshape(batch, -1),
                    state[v_key].reshape(batch, -1),
                )
                out, u, v = self._neuron(name, *flat)
                values[name] = out[0].reshape(inp.shape)
                new[u_key], new[v_key] = u.reshape(inp.shape), v.reshape(inp.shape)
            else:
                values[name] = layer.forward(inp)
        for name in synapses:
            layer = self.graph.nodes[name]
            new[fixed_state_names(name, layer)[0]] = _synapse(
                layer, self.graph.input_of(name, values)
            )
        return values, new

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One Lava timestep. Returns this step's output, or the running decoded output."""
        t = int(state["t"].item())
        if self.time.encoding != "none":
            x_t = encode_step(x_t, t, self.time.encoding, self.time.seed)
        inputs = {INPUT: quantize_input(x_t, self.config)}
        values, nodes = self._advance(list(self.graph.nodes), inputs, state)
        new: State = {"t": state["t"] + 1, **nodes}
        out = self.graph.input_of(OUTPUT, values)
        if self.time.decoding == "none":
            return self.readout(out), new
        counted = out if t >= self.depth else torch.zeros_like(out)
        new["decode"] = state["decode"] + counted
        return self._decoded(new["decode"], max(t + 1 - self.depth, 0)), new

    def readout(self, out: torch.Tensor) -> torch.Tensor:
        """[..., *out] integer output -> float: spikes as they are, currents scaled back."""
        return self._scaled(out.double(), 1).float()

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        """Integer output of the T aligned steps [T, B, ...] -> the program's output.

        Sums integers first (exact, in any order), so every backend decodes identically.
        """
        if self.time.decoding == "none":
            return self.readout(out)
        return self._decoded(out.sum(dim=0), out.shape[0])

    def _decoded(self, total: torch.Tensor, counted: int) -> torch.Tensor:
        y = self._scaled(total.double(), counted)
        return scale_decoded(y, self.time).float()

    def _scaled(self, total: torch.Tensor, counted: int) -> torch.Tensor:
        """Sum of ``counted`` steps' raw outputs in float units (currents: a / scale + bias)."""
        if not self.graded_output:
            return total
        bias = self._readout_bias.to(total.device)
        return total / self.config.readout_scale + counted * bias.reshape(self.graph.output_shape)


def _synapse(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """floor(W_q · x), int64: W_q are dyadic (mantissa · 2^k, k ≥ −8), so float64 holds the sum
    exactly and the floor is Lava's right shift for a negative exponent; bias is zero here."""
    w = layer.weight.double()
    if isinstance(layer, Affine):
        y = F.linear(x.double(), w)
    else:  # Lava's fixed-point Conv clamps its output to signed 24 bits
        y = F.conv2d(
            x.double(), w, None, layer.stride, layer.padding, layer.dilation, layer.groups
        ).clamp(-UV_LIMIT, UV_LIMIT - 1)
    return y.floor().long()


def effective_bias(graph: SpikingGraph, name: str) -> torch.Tensor:
    """A neuron layer's constant input per step: its bias plus gain × its synapses' biases
    (the quantizer keeps a layer's bias on its synapse so the graph exports to NIR)."""
    neuron = graph.nodes[name]
    total = neuron.bias.double()
    for p in graph.predecessors(name):
        b = graph.nodes[p].bias.double()
        total = total + neuron.gain.double() * (
            b if b.shape == neuron.shape else b.reshape(-1, 1, 1).expand(neuron.shape)
        )
    return total


def lif_params(graph: SpikingGraph, name: str) -> tuple[torch.Tensor, ...]:
    """(du, dv, bias_mant, bias_exp, vth) per flattened neuron, from the graph's integers."""
    neuron = graph.nodes[name]
    mant, exp = split_bias(effective_bias(graph, name).reshape(-1))
    vth = (neuron.threshold.reshape(-1).double() / 2**ACT_SHIFT).round().long()
    return (
        neuron_du(neuron),
        decay_to_dv(neuron.decay.reshape(-1)),
        mant,
        exp,
        vth,
    )


def fixed_point_manifest(graph: SpikingGraph, time: SpikingTime, report: dict) -> Manifest:
    """Manifest of a fixed-point program (numerics ``loihi2-fixed``)."""
    state = [TensorSpec("t", [1], "int64")]
    for name, layer in graph.nodes.items():
        shape = [-1, *graph.shapes[name]]
        state += [TensorSpec(key, shape, "int64") for key in fixed_state_names(name, layer)]
    if time.decoding != "none":
        state.append(TensorSpec("decode", [-1, *graph.output_shape], "int64"))
    return Manifest(
        kind="spiking",
        architecture=ARCHITECTURE,
        inputs=[TensorSpec("input", [-1, *graph.input_shape])],
        outputs=[TensorSpec("output", [-1, *graph.output_shape])],
        time=dataclasses.replace(time, delay=synaptic_depth(graph)),
        state=state,
        numerics="loihi2-fixed",
        report=report,
    )


def fixed_point_config(graph: SpikingGraph, config: LoihiConfig) -> dict[str, Any]:
    """config.json of a fixed-point program: its graph plus the ``loihi`` numbers."""
    return {"architecture": ARCHITECTURE, "graph": graph.to_config(), "loihi": vars(config)}


def build_fixed_point(
    config: dict, tensors: dict[str, torch.Tensor], manifest: Manifest
) -> FixedPointNetwork:
    """Registry builder: rebuild a FixedPointNetwork from config.json and its tensors."""
    graph = SpikingGraph.from_config(config["graph"], tensors)
    return FixedPointNetwork(graph, manifest.time, LoihiConfig(**config["loihi"]))
