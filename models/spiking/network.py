"""SpikingNetwork: runs a SpikingGraph over time, as a whole sequence or one step at a time.

``run`` walks the graph's groups (``SpikingGraph.groups``) once per chunk of timesteps (about
CHUNK_ROWS rows, so large batches stay in cache). A feed-forward node sees all the chunk's
timesteps at once: a synaptic layer as one tensor op, a neuron as one scan over time. A
recurrent group (a cycle through a delay-1 edge) is stepped one timestep at a time, each step
evaluating its nodes in order. ``step`` is the same walk for one timestep without the time
axis: every node in that order on [B, ...] values (a delay-1 edge reads the carried ``prev``),
a neuron through ``neuron_update``, so ``run`` equals repeated ``step`` (tests prove it).

Input constant over time: with ``direct`` encoding every timestep sees the same input, so the
stateless nodes that read only it (the first synaptic layer, say) are computed once per call
on [B, ...] rows, exactly as ``step`` computes them, and the rest of the graph reads that value
as a view expanded over time. The decoding sum runs in time order (compiled on the CPU).

State names, shared by every backend and the ONNX step graph (``state_name`` spells one,
``node_state_names`` lists a node's):
  ``v.<neuron>`` membrane [B, *shape] · ``i.<neuron>`` synaptic current (CubaLIF, CubaLI) ·
  ``d.<delay node>`` its last D inputs [B, D, *shape] · ``prev.<node>`` the node's output of
  the previous step, read by its delay-1 edges · ``t`` timestep counter [1] (int64) ·
  ``decode`` running decoded output [B, *out] (only when the program declares a decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ganglion.kernels.lif import cpu_scan_available
from ganglion.models.errors import ShapeError
from ganglion.models.manifest import SpikingTime, TensorSpec
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.encoding import encode, encode_step
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import STATELESS, Affine, Delay, tensor_fields
from ganglion.models.spiking.neuron import Neuron, neuron_scan, neuron_update

State = dict[str, torch.Tensor]
CHUNK_ROWS = 1024  # ``run`` batches up to this many (timestep, sample) rows per layer call
MEMBRANE, CURRENT, DELAY_BUFFER, PREVIOUS = "v", "i", "d", "prev"  # state kinds (docstring)


def state_name(kind: str, node: str) -> str:
    """The name of node ``node``'s state tensor of ``kind``: ``v.<node>``, ``prev.<node>``..."""
    return f"{kind}.{node}"


def node_state_names(name: str, layer: object) -> list[str]:
    """The state tensors node ``name`` carries from step to step: a neuron's membrane (and
    synaptic current), a delay's buffer; none for a stateless node."""
    if isinstance(layer, Neuron):
        kinds = [MEMBRANE, CURRENT] if layer.synaptic else [MEMBRANE]
    elif isinstance(layer, Delay) and layer.depth:
        kinds = [DELAY_BUFFER]
    else:
        kinds = []
    return [state_name(kind, name) for kind in kinds]


def state_shapes(graph: SpikingGraph) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every node state tensor (batch axis excluded), in graph order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, layer in graph.nodes.items():
        if isinstance(layer, Neuron):
            shapes.update(dict.fromkeys(node_state_names(name, layer), layer.shape))
        elif isinstance(layer, Delay):
            depth = (layer.depth, *graph.shapes[name])
            shapes.update(dict.fromkeys(node_state_names(name, layer), depth))
    for source in graph.delayed_sources():
        shapes[state_name(PREVIOUS, source)] = graph.shapes[source]
    return shapes


def state_specs(graph: SpikingGraph, time: SpikingTime) -> list[TensorSpec]:
    """The manifest's state tensors of a float spiking program (names: module docstring)."""
    specs = [TensorSpec("t", [1], "int64")]
    specs += [TensorSpec(n, [-1, *shape]) for n, shape in state_shapes(graph).items()]
    if time.decoding != "none":
        specs.append(TensorSpec("decode", [-1, *graph.output_shape]))
    return specs


@dataclass
class _Plan:
    """What a walk over the graph needs, worked out once per graph and device."""

    groups: list[tuple[bool, list[str]]]  # (cyclic, nodes) in evaluation order
    constant: list[str]  # stateless nodes that see only the input (when it is constant)
    constant_read: list[str]  # the input and those nodes, where a time-varying node reads them
    delayed: list[str]  # ``prev.<node>`` sources
    spiking: list[str]  # spiking neurons (``record``)
    state_shapes: dict[str, tuple[int, ...]]
    device: torch.device
    order: list[str]  # every node in evaluation order (``step``'s walk)
    sources: dict[str, list[tuple[str, bool]]]  # node or OUTPUT -> (key, in carry) per edge
    state_keys: dict[str, list[str]]  # node -> its carried state names (``node_state_names``)


def _plan(graph: SpikingGraph) -> _Plan:
    constant: set[str] = {INPUT}
    for name, layer in graph.nodes.items():
        preds = graph.predecessors(name)
        if isinstance(layer, STATELESS) and all(
            p in constant and not graph.delay(p, name) for p in preds
        ):
            constant.add(name)
    read = {p for n in [*graph.nodes, OUTPUT] if n not in constant for p in graph.predecessors(n)}
    tensors = (t for layer in graph.nodes.values() for t in tensor_fields(layer).values())
    return _Plan(
        groups=[(graph.cyclic(g), g) for g in graph.groups],
        constant=[n for n in graph.nodes if n in constant],
        constant_read=[n for n in [INPUT, *graph.nodes] if n in constant and n in read],
        delayed=graph.delayed_sources(),
        spiking=[n for n, layer in graph.neurons().items() if layer.spiking],
        state_shapes=state_shapes(graph),
        device=next(tensors, torch.zeros(0)).device,
        order=[n for group in graph.groups for n in group],
        sources={n: _edge_sources(graph, n) for n in [*graph.nodes, OUTPUT]},
        state_keys={n: node_state_names(n, layer) for n, layer in graph.nodes.items()},
    )


def _edge_sources(graph: SpikingGraph, name: str) -> list[tuple[str, bool]]:
    """Where one step reads each incoming edge of ``name``, in edge order: the source's value
    this step, or (delay-1 edge) its carried ``prev`` state."""
    return [
        (state_name(PREVIOUS, p), True) if graph.delay(p, name) else (p, False)
        for p in graph.predecessors(name)
    ]


class SpikingNetwork(torch.nn.Module):
    """A spiking program: a graph plus its time semantics (timesteps, encoding, decoding)."""

    def __init__(self, graph: SpikingGraph, time: SpikingTime) -> None:
        super().__init__()
        self.graph = graph
        self.time = time
        self.activity: dict[str, torch.Tensor] = {}  # node -> spikes per neuron, last run
        self._walk: tuple[SpikingGraph, _Plan] | None = None
        self._divisors: dict[tuple[int, torch.dtype], torch.Tensor] = {}  # ``_step_decoded``

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch.nn.Module's signature
        """``to``/``cuda``/``double`` also move the graph's node tensors (plain dataclasses)."""
        self.graph.apply_to_tensors(fn)
        self._walk = None
        return super()._apply(fn, recurse)

    @property
    def plan(self) -> _Plan:
        """The graph's walk (made on first use, again when the graph or device changes)."""
        if self._walk is None or self._walk[0] is not self.graph:
            self._walk = (self.graph, _plan(self.graph))
        return self._walk[1]

    @property
    def takes_time_major_input(self) -> bool:
        """True when inputs are [T, B, ...] (no encoding declared, or frames of events)."""
        return self.time.time_major

    def _check_input(self, x: torch.Tensor, time_major: bool) -> None:
        expected = self.graph.input_shape
        got = tuple(x.shape[2:] if time_major else x.shape[1:])
        lead = "[T, batch, ...]" if time_major else "[batch, ...]"
        if got != expected or x.ndim != len(expected) + (2 if time_major else 1):
            raise ShapeError(
                f"input must be {lead} with features {expected}, got shape {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise ShapeError(f"input must be floating point, got {x.dtype}")

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        state: State = {"t": torch.zeros(1, dtype=torch.int64)}
        state.update(self._node_state(batch))
        if self.time.decoding != "none":
            state["decode"] = torch.zeros(batch, *self.graph.output_shape)
        return state

    def _node_state(self, batch: int) -> State:
        """The node states at t = 0: membranes at v_init, everything else zero."""
        plan = self.plan
        membranes = {state_name(MEMBRANE, n): layer for n, layer in self.graph.neurons().items()}
        state: State = {}
        for name, shape in plan.state_shapes.items():
            neuron = membranes.get(name)
            if neuron is not None:
                state[name] = neuron.v_init.expand(batch, *shape).clone()
            else:
                state[name] = torch.zeros(batch, *shape, device=plan.device)
        return state

    def _constants(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Values [B, ...] of the input and the stateless nodes that read only it, for an input
        that is the same at every timestep (``direct`` encoding); empty otherwise."""
        if self.time.encoding != "direct":
            return {}
        values = {INPUT: x}
        for name in self.plan.constant:
            values[name] = self.graph.nodes[name].forward(self.graph.input_of(name, values))
        return values

    def run(self, x: torch.Tensor, record: bool = False) -> torch.Tensor:
        """Whole input -> output (see module docstring for shapes).

        x: [B, ...] when the program declares an input encoding, else [T, B, ...].
        Returns [B, ...out] when it declares a decoding, else [T, B, ...out].
        With ``record`` the spike count of every spiking neuron is kept in ``self.activity``.
        """
        self._check_input(x, time_major=self.takes_time_major_input)
        constants = self._constants(x)
        if self.takes_time_major_input:
            seq: torch.Tensor | None = x
            steps, batch = x.shape[:2]
        else:
            seq = None if constants else encode(x, self.time.timesteps, self.time.encoding,
                                                self.time.seed)  # fmt: skip
            steps, batch = self.time.timesteps, x.shape[0]
        self.activity = {}
        carry = self._node_state(batch)
        chunk = max(1, CHUNK_ROWS // batch)
        total = None if self.time.decoding == "none" else torch.zeros(
            batch, *self.graph.output_shape, device=x.device
        )  # fmt: skip
        outs = []
        for t in range(0, steps, chunk):
            size = min(chunk, steps - t)
            part = None if seq is None else seq[t : t + size]
            out = self._run_chunk(part, size, constants, carry, record)
            if total is None:
                outs.append(out)
            else:
                _add_over_time(out, total)
        if total is not None:
            return scale_decoded(total, self.time)
        return outs[0].contiguous() if len(outs) == 1 else torch.cat(outs)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One timestep: x_t [B, ...] (raw features when an encoding is declared).

        Returns (output, new state): the output of this timestep, or the running decoded
        output (spike count so far, or output current summed so far / T) when a decoding is
        declared; state ``decode`` holds the running sum.
        """
        self._check_input(x_t, time_major=False)
        if self.time.encoding == "rate":
            x_t = encode_step(x_t, int(state["t"].item()), "rate", self.time.seed)
        carry = {k: v for k, v in state.items() if k not in ("t", "decode")}
        out = self._step_nodes(x_t, carry)
        new_state: State = {"t": state["t"] + 1, **carry}
        if self.time.decoding == "none":
            return out.contiguous(), new_state
        new_state["decode"] = state["decode"] + out
        return self._step_decoded(new_state["decode"]), new_state

    def _step_decoded(self, total: torch.Tensor) -> torch.Tensor:
        """``scale_decoded(total, self.time)``, with a mean's T as a 0-dim CPU tensor of the
        total's dtype: the Python number's division bit for bit (a CPU scalar, as that number
        is, so a GPU also multiplies by its reciprocal), without wrapping it every step."""
        if self.time.decoding != "membrane":
            return scale_decoded(total, self.time)
        key = (self.time.timesteps, total.dtype)
        divisor = self._divisors.get(key)
        if divisor is None:
            divisor = self._divisors[key] = torch.tensor(key[0], dtype=total.dtype)
        return total / divisor

    def _step_nodes(self, x: torch.Tensor, carry: State) -> torch.Tensor:
        """One timestep through every node: x [B, ...] -> output [B, ...out]; ``carry`` (the
        node states) updated. ``_run_chunk`` on a chunk of one step, without the time axis."""
        plan, nodes = self.plan, self.graph.nodes
        compiled = cpu_scan_available()
        values = {INPUT: x}
        for name in plan.order:
            inp = _edge_sum(plan.sources[name], values, carry)
            layer, keys = nodes[name], plan.state_keys[name]
            if isinstance(layer, Neuron):  # keys: v (and i)
                current = carry[keys[1]] if len(keys) > 1 else None
                out, carry[keys[0]], current = neuron_update(
                    layer, inp, carry[keys[0]], current, compiled
                )
                if current is not None:
                    carry[keys[1]] = current
            elif isinstance(layer, Delay):  # keys: its buffer, none for a depth of 0
                out = inp
                if keys:
                    delayed, carry[keys[0]] = layer.scan(inp.unsqueeze(0), carry[keys[0]])
                    out = delayed[0]
            else:
                out = layer.forward(inp)
            values[name] = out
        out = _edge_sum(plan.sources[OUTPUT], values, carry)
        for source in plan.delayed:
            carry[state_name(PREVIOUS, source)] = values[source]
        return out

    # ---- one chunk of timesteps --------------------------------------------------------------

    def _run_chunk(
        self,
        seq: torch.Tensor | None,
        steps: int,
        constants: dict[str, torch.Tensor],
        carry: State,
        record: bool,
    ) -> torch.Tensor:
        """``steps`` timesteps -> output [S, B, ...out]: the input is seq [S, B, ...], or the
        constant ``constants[INPUT]``; ``carry`` (the node states) enters at the chunk's first
        step and leaves at its last."""
        plan = self.plan
        values = {}  # every value time-major [S, B, ...]; constants expanded over time
        for name in plan.constant_read if constants else ():
            c = constants[name]
            values[name] = c.unsqueeze(0) if steps == 1 else c.unsqueeze(0).expand(steps, *c.shape)
        if seq is not None:
            values[INPUT] = seq
        compiled = cpu_scan_available()
        for cyclic, group in plan.groups:
            if cyclic:
                self._step_group(group, values, carry, steps)
            elif group[0] not in constants:
                name = group[0]
                x = self._input(name, values, carry)
                values[name] = self._node(name, x, carry, compiled)
        out = self._input(OUTPUT, values, carry)
        for source in plan.delayed:
            carry[state_name(PREVIOUS, source)] = values[source][-1]
        if record:
            for name in plan.spiking:
                counted = values[name].sum(dim=(0, 1))
                self.activity[name] = self.activity.get(name, 0) + counted
        return out

    def _input(self, name: str, values: dict[str, torch.Tensor], carry: State) -> torch.Tensor:
        """Sum of ``name``'s incoming edges over the chunk, in edge order; a delay-1 edge
        reads its source one step back (the carried ``prev`` at the chunk's first step)."""
        total: torch.Tensor | None = None
        for p in self.graph.predecessors(name):
            value = values[p]
            if self.graph.delay(p, name):
                value = torch.cat([carry[state_name(PREVIOUS, p)].unsqueeze(0), value[:-1]])
            total = value if total is None else total + value
        assert total is not None
        return total

    def _step_group(
        self, group: list[str], values: dict[str, torch.Tensor], carry: State, steps: int
    ) -> None:
        """A recurrent group, one timestep at a time (its nodes in order at each step)."""
        compiled = cpu_scan_available()
        outs: dict[str, list[torch.Tensor]] = {n: [] for n in group}
        for t in range(steps):
            for name in group:
                total: torch.Tensor | None = None
                for p in self.graph.predecessors(name):
                    if not self.graph.delay(p, name):
                        value = outs[p][t] if p in outs else values[p][t]
                    elif t == 0:
                        value = carry[state_name(PREVIOUS, p)]
                    else:
                        value = outs[p][t - 1] if p in outs else values[p][t - 1]
                    total = value if total is None else total + value
                assert total is not None
                outs[name].append(self._node(name, total.unsqueeze(0), carry, compiled)[0])
        for name in group:
            values[name] = torch.stack(outs[name])

    def _node(self, name: str, x: torch.Tensor, carry: State, compiled: bool) -> torch.Tensor:
        """One node over timesteps x [S, B, *in] -> [S, B, *out], updating its carried state;
        ``compiled``: plain neurons may use the compiled CPU scan."""
        layer = self.graph.nodes[name]
        if isinstance(layer, Affine):
            return layer.forward(x)  # F.linear takes [S, B, in] as [S·B, in]
        if isinstance(layer, Neuron):
            v, i = state_name(MEMBRANE, name), state_name(CURRENT, name)
            out, carry[v], current = neuron_scan(layer, x, carry[v], carry.get(i), compiled)
            if current is not None:
                carry[i] = current
            return out
        if isinstance(layer, Delay):
            if not layer.depth:
                return x
            d = state_name(DELAY_BUFFER, name)
            out, carry[d] = layer.scan(x, carry[d])
            return out
        steps, batch = x.shape[:2]
        y = layer.forward(x.reshape(steps * batch, *x.shape[2:]))
        return y.reshape(steps, batch, *y.shape[1:])


def _edge_sum(
    sources: list[tuple[str, bool]], values: dict[str, torch.Tensor], carry: State
) -> torch.Tensor:
    """A node's input in one step: its edges' values (``_edge_sources``) summed in edge order."""
    total: torch.Tensor | None = None
    for key, carried in sources:
        value = carry[key] if carried else values[key]
        total = value if total is None else total + value
    assert total is not None
    return total


def _add_over_time(out: torch.Tensor, total: torch.Tensor) -> None:
    """total [B, ...] += out[0] + out[1] + ... in time order (the order of repeated ``step``)."""
    if cpu_scan_available() and out.dtype == total.dtype == torch.float32 and not out.is_cuda:
        from ganglion.kernels.lif import cpu

        steps, batch = out.shape[:2]
        cpu.time_sum_into(out.reshape(steps, batch, -1), total.view(batch, -1))
        return
    for t in range(out.shape[0]):
        total.add_(out[t])
