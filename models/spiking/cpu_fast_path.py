"""``SpikingNetwork.step`` and ``run`` on the CPU on numpy arrays: same arithmetic, glue cut.

At batch 1 a spiking MLP's arithmetic (a few small matmuls, a compiled neuron scan per layer)
takes a few tens of microseconds, and the torch path's per-call glue (tensor state, dictionaries
and checks per layer, tensor wrappers around the compiled loops) two to four times as much.
``CpuStep`` and ``CpuRun`` walk the same nodes on numpy arrays: each stateless node runs its own
``numpy_forward`` where it has one and takes the input (convolutions and pools: the same
compiled loops ``forward`` calls), else ``forward`` on a zero-copy tensor view; each neuron the
compiled loop the torch path calls (``kernels.scan_loops``: the single-step update, the scan over
time); the decoded output the same time-ordered sum and ``scale_decoded`` (numpy's float32
division is torch's, bit for bit). In ``run`` a neuron whose spikes only a 2x2 average pool
reads pools them in its scan, and a convolution over time-varying input that only such a
neuron reads runs in the same pass (``CpuConv2d.scan_pool``): the same values, never stored.
The network's torch ``step`` and ``run`` stay the spec:
equal bit for bit (``tests/spiking/test_cpu_fast_path.py``).

They take float32 CPU graphs where every node and the output read one node through a delay-0
edge (chains: MLPs and CNNs as converted), every neuron is ``plain`` (the compiled loops'
neuron) and the input is not rate-encoded; ``build`` gives None for any other network, and the
caller keeps the torch path. A call gives None where the torch path must take it: compiled
kernels turned off (``GANGLION_KERNELS=0``), the network's graph replaced, a neuron's parameters
replaced by ones the loops cannot take, or (``step``) a state of lists or other dtypes.
``run`` goes through time in the torch path's chunks, so its layer calls see the same shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch

from ganglion.kernels.lif import cpu_scan_available
from ganglion.kernels.scan_loops import (
    float_scan_loop,
    float_scan_pool_loop,
    float_step_loop,
    time_sum_loop,
)
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.graph_order import INPUT, OUTPUT
from ganglion.models.spiking.layers import Affine, AvgPool2d, Conv2d, Delay
from ganglion.models.spiking.neuron import Neuron

Arrays = dict[str, np.ndarray]
MEMBRANE_CACHE = 64  # initial membranes kept per run path ((neuron, batch size) pairs)
# a convolution, neuron and pool go through ``CpuConv2d.scan_pool`` at this many (step, sample)
# rows per call or more (it permutes the neurons' parameters per call). Measured on the digits
# CNN, the three apart / the one pass: 87 / 92 µs at 8 rows (T=8, batch 1), 103 / 108 at 16,
# 153 / 143 at 32, 389 / 330 at 128 (T=8, batch 16)
FUSED_CONV_MIN_ROWS = 32


@dataclass(frozen=True)
class _Node:
    name: str
    layer: object  # the graph's node object the chain was read from
    source: str  # the one node (or INPUT) it reads this step
    neuron: Neuron | None  # with its membrane ``state_key``; else a stateless ``forward``
    state_key: str
    forward: Callable[[torch.Tensor], torch.Tensor] | None
    time_major_forward: bool  # ``forward`` takes [T, B, ...] as it is (Affine)
    # the layer's own numpy form of ``forward`` (convolutions, pools), None where it has none
    numpy_forward: Callable[[np.ndarray], np.ndarray | None] | None = None

    def stateless(self, x: np.ndarray) -> np.ndarray:
        """``forward`` on a numpy batch: the layer's numpy form where it takes ``x``, else
        ``forward`` on a zero-copy tensor view."""
        if self.numpy_forward is not None:
            out = self.numpy_forward(np.ascontiguousarray(x))
            if out is not None:
                return out
        assert self.forward is not None
        return self.forward(torch.from_numpy(x)).numpy()


def _chain(network: torch.nn.Module) -> tuple[list[_Node], str] | None:
    """The nodes of a network the fast paths take (module docstring), in evaluation order, and
    the node the output reads; None for any other network."""
    plan, graph = network.plan, network.graph
    if network.time.encoding == "rate" or plan.delayed or plan.device.type != "cpu":
        return None
    single = {n: s[0][0] for n, s in plan.sources.items() if len(s) == 1 and not s[0][1]}
    if len(single) != len(plan.sources):  # a node or the output sums edges or reads a delay
        return None
    nodes = []
    for name in plan.order:
        layer, keys = graph.nodes[name], plan.state_keys[name]
        if isinstance(layer, Delay) or (isinstance(layer, Neuron) and not layer.plain):
            return None
        if isinstance(layer, Neuron):
            nodes.append(_Node(name, layer, single[name], layer, keys[0], None, False))
        else:
            time_major = isinstance(layer, Affine)
            numpy_forward = getattr(layer, "numpy_forward", None)
            nodes.append(
                _Node(name, layer, single[name], None, "", layer.forward, time_major, numpy_forward)
            )
    return nodes, single[OUTPUT]


def _as_stepped(state: Arrays) -> bool:
    """True when ``state`` holds arrays of the dtypes ``SpikingNetwork.step`` makes (int64
    ``t``, float32 else); other values (lists, other dtypes) take the torch path."""
    return all(
        type(v) is np.ndarray and v.dtype == (np.int64 if k == "t" else np.float32)
        for k, v in state.items()
    )


class _ChainPath:
    """What both fast paths hold: the network, its chain of nodes and the node the output reads."""

    def __init__(self, network: torch.nn.Module, nodes: list[_Node], output: str) -> None:
        self.network = network
        self.graph = network.graph  # the graph the chain was read from
        self.time = network.time
        self.nodes = nodes
        self.output = output
        self._names = [n.name for n in nodes]
        self._layers = [n.layer for n in nodes]  # compared by identity (no node defines __eq__)

    def _usable(self) -> bool:
        """Compiled kernels on, and the network still holds the graph the chain was read from,
        with the same node objects (a node replaced in ``graph.nodes`` takes the torch path)."""
        return (
            self.network.graph is self.graph
            and list(map(self.graph.nodes.get, self._names)) == self._layers
            and cpu_scan_available()
        )

    @classmethod
    def build(cls, network: torch.nn.Module) -> Self | None:
        """The fast path of ``network`` (a ``SpikingNetwork``), or None when it does not suit."""
        chain = _chain(network)
        return None if chain is None else cls(network, *chain)


class CpuStep(_ChainPath):
    """One timestep of a suitable ``SpikingNetwork`` (module docstring) on numpy arrays.
    ``CpuStep.build(network)`` makes one."""

    def __call__(self, x: np.ndarray, state: Arrays) -> tuple[np.ndarray, Arrays] | None:
        """(output, new state) for input ``x`` [B, ...] and ``state`` (the network's names, as
        arrays), as ``SpikingNetwork.step`` gives them; None when it cannot (module docstring).
        Call it under ``torch.inference_mode`` (the layers' weights may require grad)."""
        if not self._usable() or not _as_stepped(state):
            return None
        values = {INPUT: x}
        new: Arrays = {"t": state["t"] + 1}
        for node in self.nodes:
            inp = values[node.source]
            if node.neuron is None:
                values[node.name] = node.stateless(inp)
                continue
            params = node.neuron.cpu_scan_params()
            if params is None:
                return None
            values[node.name], new[node.state_key] = float_step_loop(
                np.ascontiguousarray(inp),
                np.ascontiguousarray(state[node.state_key]),
                *params,
                node.neuron.reset == "zero",
            )
        out = values[self.output]
        if self.time.decoding == "none":
            return np.ascontiguousarray(out), new
        new["decode"] = state["decode"] + out
        return scale_decoded(new["decode"], self.time), new


class CpuRun(_ChainPath):
    """The whole input of a suitable ``SpikingNetwork`` (module docstring) on numpy arrays.
    ``CpuRun.build(network)`` makes one."""

    def __init__(self, network: torch.nn.Module, nodes: list[_Node], output: str) -> None:
        super().__init__(network, nodes, output)
        # (node, batch) -> (v_init's bytes, v_init broadcast to [B, N])
        self._membranes: dict[tuple[str, int], tuple[bytes, np.ndarray]] = {}
        # neuron -> the node after it when that node is its only reader (a pool it may fuse)
        readers = [n.source for n in nodes] + [output]
        self._only_reader = {
            a.name: b
            for a, b in itertools.pairwise(nodes)
            if readers.count(a.name) == 1 and b.source == a.name
        }

    def __call__(self, x: np.ndarray, rows_per_chunk: int) -> np.ndarray | None:
        """``SpikingNetwork.run(x)`` without ``record``; None when it cannot (module docstring).
        Time goes in the torch path's chunks of ``rows_per_chunk`` (timestep, sample) rows (the
        network's chunk size), so every layer call has the torch path's shapes and bits. Call
        it under ``torch.inference_mode``."""
        network = self.network
        time_major = network.takes_time_major_input
        steps, batch = x.shape[:2] if time_major else (network.time.timesteps, x.shape[0])
        if not self._usable():
            return None
        if network.activity:  # a recorded run's counts; this run records none
            network.activity = {}  # (a module attribute: set only when there is one to drop)
        chunk = max(1, rows_per_chunk // batch)
        membranes: Arrays = {}  # each neuron's potential [B, N], carried from chunk to chunk
        constants: dict[str, np.ndarray] = {}  # stateless values of a direct input, computed once
        total = None
        if network.time.decoding != "none":
            total = np.zeros((batch, *network.graph.output_shape), np.float32)
        outs = []
        for t in range(0, steps, chunk):
            size = min(chunk, steps - t)
            out = self._chunk(x[t : t + size] if time_major else x, size, membranes, constants)
            if out is None:
                return None
            rows, t_step = out
            if total is None:  # constant over time: its one row, repeated (a writable copy)
                outs.append(np.repeat(rows, size, axis=0) if t_step == 0 else rows)
            else:
                flat = np.ascontiguousarray(rows).reshape(rows.shape[0], batch, -1)
                time_sum_loop(flat, t_step, size, total.reshape(batch, -1))
        if total is not None:
            return scale_decoded(total, network.time)
        return np.ascontiguousarray(outs[0]) if len(outs) == 1 else np.concatenate(outs)

    def _chunk(
        self, x: np.ndarray, steps: int, membranes: Arrays, constants: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, int] | None:
        """``steps`` timesteps of the chain -> (the output's rows, the step between the rows
        timesteps read); None where a neuron's parameters do not suit the compiled loop.
        ``x`` is [steps, B, ...], or [B, ...] for a direct input (the same at every step)."""
        time_major = self.network.takes_time_major_input
        batch = x.shape[1] if time_major else x.shape[0]
        # every value [S, B, ...] with the step between the rows timesteps read: 0 for a value
        # constant over time (a direct input and the stateless nodes that read only it), kept
        # as its one row
        values = {INPUT: (x, 1) if time_major else (x[None], 0)}
        fused: set[str] = set()  # nodes computed with the one before them
        for node in self.nodes:
            if node.name in fused:
                continue
            inp, t_step = values[node.source]
            if t_step == 1 and (chain := self._conv_neuron_pool(node)) is not None:
                done = self._conv_scan_pool(chain, inp, membranes)
                if done is not None:  # the convolution's output and the spikes never stored
                    values[chain[2].name] = done, 1
                    fused.update(n.name for n in chain[1:])
                    continue
            if node.neuron is None:
                if t_step == 0 and node.name not in constants:
                    constants[node.name] = self._stateless(node, inp, 0)
                out = constants[node.name] if t_step == 0 else self._stateless(node, inp, 1)
                values[node.name] = out, t_step
                continue
            shape = inp.shape[2:]
            start = self._neuron_start(node, batch, membranes)
            if start is None:
                return None
            params, v0 = start
            current = np.ascontiguousarray(inp).reshape(inp.shape[0], batch, -1)
            args = (current, t_step, steps, params[0], v0, *params[1:], node.neuron.reset == "zero")
            pool = self._pool_after(node, shape)
            if pool is not None:  # its spikes pooled as they are made, never stored
                pooled, membranes[node.name] = float_scan_pool_loop(*args, shape)
                values[pool.name] = pooled, 1
                fused.add(pool.name)
                continue
            spikes, membranes[node.name] = float_scan_loop(*args)
            values[node.name] = spikes.reshape(steps, batch, *shape), 1
        return values[self.output]

    def _conv_neuron_pool(self, node: _Node) -> tuple[_Node, _Node, _Node] | None:
        """(``node``, the neuron, the pool) when ``node`` is a 2-D convolution that only a
        neuron reads and that neuron's spikes only a square 2x2 pool (``_pool_after``) reads:
        ``CpuConv2d.scan_pool`` may compute the three in one pass; else None."""
        neuron = self._only_reader.get(node.name)
        if type(node.layer) is not Conv2d or neuron is None or neuron.neuron is None:
            return None
        pool = self._pool_after(neuron, neuron.neuron.shape)
        return None if pool is None else (node, neuron, pool)

    def _conv_scan_pool(
        self, chain: tuple[_Node, _Node, _Node], inp: np.ndarray, membranes: Arrays
    ) -> np.ndarray | None:
        """The pooled spikes of ``chain`` (``_conv_neuron_pool``) on ``inp`` [S, B, C, H, W],
        the neuron's potentials carried in ``membranes``; None where the one pass does not take
        it (``CpuConv2d.scan_pool``, a neuron whose parameters the loops cannot take, fewer
        than ``FUSED_CONV_MIN_ROWS`` rows)."""
        conv, neuron_node, _ = chain
        if inp.shape[0] * inp.shape[1] < FUSED_CONV_MIN_ROWS:
            return None
        start = self._neuron_start(neuron_node, inp.shape[1], membranes)
        if start is None:
            return None
        zero_reset = neuron_node.neuron.reset == "zero"
        done = conv.layer.cpu_loop().scan_pool(np.ascontiguousarray(inp), *start, zero_reset)
        if done is None:
            return None
        pooled, membranes[neuron_node.name] = done
        return pooled

    def _neuron_start(
        self, node: _Node, batch: int, membranes: Arrays
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray] | None:
        """Neuron ``node``'s scan parameters and its potentials [B, N] at the chunk's start
        (carried in ``membranes``, else ``v_init``); None where the loops cannot take them."""
        neuron = node.neuron
        params = neuron.cpu_scan_params()
        if params is None or neuron.v_init.dtype != torch.float32:
            return None
        v0 = membranes.get(node.name)
        if v0 is None:
            v0 = self._initial_membrane(node, batch, neuron.shape)
        return params, v0

    def _pool_after(self, node: _Node, shape: tuple[int, ...]) -> _Node | None:
        """The node after neuron ``node`` when it alone reads the neuron and is a 2x2 average
        pool of stride 2 without padding over its [C, H, W] spikes (``float_scan_pool_loop``
        computes both as the two loops do); None otherwise."""
        pool = self._only_reader.get(node.name)
        if pool is None or type(pool.layer) is not AvgPool2d or len(shape) != 3:  # (SumPool2d)
            return None
        layer = pool.layer
        square = layer.kernel_size == layer.stride == (2, 2) and layer.padding == (0, 0)
        return pool if square and pool.numpy_forward is not None else None

    def _initial_membrane(self, node: _Node, batch: int, shape: tuple[int, ...]) -> np.ndarray:
        """``node``'s ``v_init`` for ``batch`` samples, [B, N] contiguous, made once per batch
        size and remade whenever ``v_init``'s bytes change, however they were changed (replaced,
        edited in place, through ``.data`` or a numpy view): each call compares them, a copy of
        a few KiB. The scan only reads the result (it starts from a copy)."""
        v_init = node.neuron.v_init.numpy()
        source = v_init.tobytes()
        key = (node.name, batch)
        made = self._membranes.get(key)
        if made is None or made[0] != source:
            v0 = np.broadcast_to(v_init, (batch, *shape))
            if len(self._membranes) >= MEMBRANE_CACHE:
                self._membranes.clear()
            made = self._membranes[key] = (source, v0.reshape(batch, -1).copy())
        return made[1]

    @staticmethod
    def _stateless(node: _Node, inp: np.ndarray, t_step: int) -> np.ndarray:
        """``node``'s forward over [S, B, ...] as the torch path calls it: on the one row
        [B, ...] of a value constant over time, else Affine on the time-major tensor and the
        others on [S·B, ...]."""
        assert node.forward is not None
        if t_step == 0:
            return node.stateless(inp[0])[None]
        if node.time_major_forward:
            return node.forward(torch.from_numpy(inp)).numpy()
        rows, batch = inp.shape[:2]
        out = node.stateless(inp.reshape(rows * batch, *inp.shape[2:]))
        return out.reshape(rows, batch, *out.shape[1:])
