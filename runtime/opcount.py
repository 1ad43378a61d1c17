"""Operation counts of a loaded program, for the roofline simulator and ``ganglion profile``.

Spiking programs (a ``SpikingGraph``) are counted from one recorded run: each synaptic layer
(Affine, Conv2d) does ``rate_in × dense MACs × T`` synaptic ops, where ``rate_in`` is the spike
rate of the nearest upstream neuron layer (through Flatten/pooling/Scale); a layer fed by
real-valued input does dense fp32 MACs every timestep. Neuron layers do one update per neuron
per timestep and emit the recorded spikes. Other programs are counted with PyTorch's
``FlopCounterMode`` on one run (MACs = FLOPs / 2, fp32). All counts are per inference.

What a dense device does besides the MACs is counted from the ops the program actually
dispatches (`OpTally`, a ``TorchDispatchMode`` around one run): every op that is not a view or
an allocation is one launch, and reads and writes its tensors' bytes; matmul/convolution ops'
bytes are MAC-layer traffic, all others' are elementwise traffic (per inference: divided by the
batch). This follows the PyTorch reference implementation (the tally runs inside
``reference_kernels()``: compiled scans are invisible to it): the reference neuron scan issues
~5 small ops per timestep per neuron layer (a fused CUDA scan would issue one per layer).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ganglion.device.simulator import LayerOpCounts, OpCounts
from ganglion.kernels.switch import reference_kernels
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import Manifest
from ganglion.models.spiking.graph import INPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Neuron
from ganglion.runtime.kinds import ProgramKind, kind_of

BYTES_PER_VALUE = 4
_ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
_VIEWS = {"_unsafe_view", "detach", "lift_fresh", "alias"}


class OpTally(TorchDispatchMode):
    """Counts the ops dispatched inside it: launches, and bytes read + written by the
    matmul/convolution ops (``mac_bytes``) and by all others (``elementwise_bytes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.launches = 0
        self.mac_bytes = 0.0
        self.elementwise_bytes = 0.0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _ALLOCATIONS or name in _VIEWS or _is_view(func):
            return out
        self.launches += 1
        nbytes = sum(
            t.numel() * t.element_size()
            for t in tree_leaves((args, kwargs or {}, out))
            if isinstance(t, torch.Tensor)
        )
        if func.overloadpacket in flop_registry:
            self.mac_bytes += nbytes
        else:
            self.elementwise_bytes += nbytes
        return out


def _is_view(func: Any) -> bool:
    returns = func._schema.returns
    return bool(returns) and all(
        r.alias_info is not None and not r.alias_info.is_write for r in returns
    )


def example_inputs(
    manifest: Manifest, batch: int = 1, seed: int = 0, bundle: str = ""
) -> dict[str, np.ndarray]:
    """Random inputs shaped like ``run``'s, as the program's kind makes them. ShapeError in one
    line naming ``bundle`` (the bundle's path, where there is one) and the largest input, from
    the manifest's shapes before anything is drawn, where ``batch`` samples would take more
    than ``MAX_EXAMPLE_BYTES`` (``runtime.kinds.base.check_example_bytes``)."""
    return kind_of(manifest).example_inputs(manifest, batch, seed, bundle)


def count_ops(deployable: Deployable, inputs: dict[str, np.ndarray]) -> OpCounts:
    """Operation counts per inference of ``deployable`` on ``inputs`` (runs it once on CPU)."""
    return kind_of(deployable.manifest).count_ops(deployable, inputs)


def spiking_counts(deployable: Deployable, x: np.ndarray) -> OpCounts:
    """Counts of a spiking program on its input ``x`` (see the module docstring)."""
    graph: SpikingGraph = deployable.module.graph
    module = deployable.module.cpu().eval()
    time = deployable.manifest.time
    with torch.no_grad():
        module.run(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), record=True)
    activity = {k: v.cpu().numpy() for k, v in module.activity.items()}
    tally = OpTally()
    with torch.no_grad(), reference_kernels(), tally:
        module.run(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    batch = int(x.shape[kind_of(deployable.manifest).batch_axis(deployable.manifest)])
    steps = int(x.shape[0]) if time.time_major else time.timesteps
    input_rate = _input_rate(x, time.encoding)
    rates = {n: float(activity[n].sum()) / (activity[n].size * steps * batch) for n in activity}
    layers = []
    for name, layer in graph.nodes.items():
        out_elems = math.prod(graph.shapes[name])
        if isinstance(layer, Neuron):
            spikes = float(activity[name].sum()) / batch if name in activity else 0.0
            layers.append(
                LayerOpCounts(
                    name,
                    neuron_updates=float(out_elems * steps),
                    spikes=spikes,
                    elementwise_bytes=float(2 * out_elems * steps * BYTES_PER_VALUE),
                    neurons=out_elems,
                    timesteps=steps,
                )
            )
        elif isinstance(layer, Affine | Conv2d):
            layers.append(_synaptic(name, layer, graph, out_elems, steps, rates, input_rate))
    counts = _with_tally(OpCounts.from_layers(layers, timesteps=steps), tally, batch)
    # On CUDA every node is one kernel (the neuron scan fused over T), plus encode and decode.
    return dataclasses.replace(counts, fused_launches=float(len(graph.nodes) + 2))


def _with_tally(counts: OpCounts, tally: OpTally, batch: int) -> OpCounts:
    """``counts`` with the dispatched ops' launches and traffic (per inference) as totals."""
    activations = max(tally.mac_bytes - counts.weight_bytes, 0.0) / batch
    return dataclasses.replace(
        counts,
        bytes_moved=counts.weight_bytes + activations,
        elementwise_bytes=tally.elementwise_bytes / batch,
        launches=float(tally.launches),
    )


def _synaptic(
    name: str,
    layer: Affine | Conv2d,
    graph: SpikingGraph,
    out_elems: int,
    steps: int,
    rates: dict[str, float],
    input_rate: float | None,
) -> LayerOpCounts:
    fan_in = math.prod(layer.weight.shape[1:])
    dense_macs = float(out_elems * fan_in)
    weight_bytes = float(layer.weight.numel() + layer.bias.numel()) * BYTES_PER_VALUE
    source = _upstream_neuron(graph, name)
    rate = rates.get(source, 0.0) if source != INPUT else input_rate
    act_bytes = float(out_elems * steps * BYTES_PER_VALUE)
    moved = {"bytes_moved": weight_bytes + act_bytes, "weight_bytes": weight_bytes}
    if rate is None:  # real-valued input: dense MACs every timestep
        return LayerOpCounts(name, macs={"fp32": dense_macs * steps}, **moved)
    return LayerOpCounts(
        name, synops=rate * dense_macs * steps, synaptic_macs=dense_macs * steps, **moved
    )


def _upstream_neuron(graph: SpikingGraph, name: str) -> str:
    node = graph.predecessors(name)[0]
    while node != INPUT and not isinstance(graph.nodes[node], Neuron):
        node = graph.predecessors(node)[0]
    return node


def _input_rate(x: np.ndarray, encoding: str) -> float | None:
    if encoding == "rate":
        return float(np.clip(x, 0.0, 1.0).mean())
    if encoding == "none" and np.isin(x, (0.0, 1.0)).all():
        return float(x.mean())
    return None


def dense_counts(
    deployable: Deployable, kind: ProgramKind, inputs: dict[str, np.ndarray]
) -> OpCounts:
    """Counts of any program from PyTorch's FLOP counter and the dispatched ops of one run."""
    module = deployable.module.cpu().eval()
    batch = int(next(iter(inputs.values())).shape[kind.batch_axis(deployable.manifest)])
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    counter, tally = FlopCounterMode(display=False), OpTally()
    with torch.no_grad(), reference_kernels(), counter, tally:
        kind.torch_run(module, tensors)
    params = float(sum(p.numel() for p in module.parameters()) * BYTES_PER_VALUE)
    macs = counter.get_total_flops() / 2 / batch
    counts = OpCounts(macs={"fp32": float(macs)}, bytes_moved=params, weight_bytes=params)
    return _with_tally(counts, tally, batch)
