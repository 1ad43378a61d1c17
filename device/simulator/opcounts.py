"""`OpCounts`: what one inference does, counted — the simulator's input.

Dense work is counted in MACs per precision; spiking work in synaptic accumulate operations
(synops: one per spike per fan-out synapse), neuron state updates, and spikes. A dense device
(CPU, GPU) runs a spiking program's synaptic layers as dense matmuls over 0/1 inputs, zeros
included: ``synaptic_macs`` counts that work, ``synops`` the event-driven subset a
neuromorphic chip does.

Memory traffic has three parts:

- ``bytes_moved``: traffic of the MAC layers (matmuls, convolutions): activations read and
  written plus ``weight_bytes`` of parameters. Parameters are read once per batched call, so a
  call of ``B`` inferences moves ``weight_bytes + B·(bytes_moved − weight_bytes)``.
- ``elementwise_bytes``: what the other, bandwidth-bound ops read and write (the neuron scan's
  per-timestep updates, gains, casts, encoding/decoding), counted op by op as the program issues
  them (an unfused execution moves each intermediate through memory).
- ``launches``: ops (kernels) the program dispatches per call, however many inferences the
  call batches; each costs the device's ``launch_overhead_s``. A Python loop over timesteps
  issues several small ops per step and neuron layer, which is what dominates small spiking
  programs on a CPU.

All counts except ``launches`` are per inference (batch 1). A program may add per-layer
counts; the totals are their sums, except where the program counts a total directly (e.g.
``launches`` and ``elementwise_bytes`` of ops that belong to no layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganglion.device.profiles.schema import PRECISIONS


@dataclass(frozen=True)
class LayerOpCounts:
    """One layer's counts; ``neurons`` and ``timesteps`` give its spike rate."""

    name: str
    macs: dict[str, float] = field(default_factory=dict)
    synops: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    bytes_moved: float = 0.0
    neurons: int = 0
    timesteps: int = 1
    synaptic_macs: float = 0.0
    elementwise_bytes: float = 0.0
    weight_bytes: float = 0.0

    @property
    def spike_rate(self) -> float | None:
        """Spikes per neuron per timestep; ``None`` for a layer without neurons."""
        if self.neurons == 0:
            return None
        return self.spikes / (self.neurons * self.timesteps)


@dataclass(frozen=True)
class OpCounts:
    """Operation counts for one inference (batch 1); ``launches`` per call.

    macs: multiply-accumulates per precision (``fp32``, ``fp16``, ``bf16``, ``int8``)
    synops: synaptic accumulate ops; synaptic_macs: the dense MACs a CPU/GPU spends on them
    neuron_updates: neuron state updates; spikes: spikes emitted
    bytes_moved: MAC-layer traffic (bytes), of which weight_bytes are parameters
    elementwise_bytes: traffic of the bandwidth-bound elementwise ops (bytes)
    launches: ops dispatched per call (as measured on the CPU reference path)
    fused_launches: kernels per call where every layer is one kernel (GPU path with the
        fused Triton scan); 0 when unknown, then ``launches`` applies everywhere
    timesteps: SNN timesteps (1 for dense programs)
    layers: optional per-layer breakdown
    """

    macs: dict[str, float] = field(default_factory=dict)
    synops: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    bytes_moved: float = 0.0
    timesteps: int = 1
    layers: tuple[LayerOpCounts, ...] = ()
    synaptic_macs: float = 0.0
    elementwise_bytes: float = 0.0
    weight_bytes: float = 0.0
    launches: float = 0.0
    fused_launches: float = 0.0

    def __post_init__(self) -> None:
        bad = set(self.macs) - set(PRECISIONS)
        if bad:
            raise ValueError(f"OpCounts.macs: unknown precisions {sorted(bad)}; use {PRECISIONS}")
        values = [*self.macs.values(), self.synops, self.neuron_updates, self.spikes]
        values += [self.bytes_moved, self.synaptic_macs, self.elementwise_bytes]
        values += [self.weight_bytes, self.launches, self.fused_launches]
        if any(v < 0 for v in values) or self.timesteps < 1:
            raise ValueError("OpCounts: counts must be >= 0 and timesteps >= 1")
        if self.weight_bytes > self.bytes_moved:
            raise ValueError("OpCounts: weight_bytes is part of bytes_moved, so <= bytes_moved")

    @classmethod
    def from_layers(
        cls, layers: list[LayerOpCounts], timesteps: int = 1, launches: float = 0.0
    ) -> OpCounts:
        """Totals summed over ``layers`` (kept as the breakdown); ``launches`` per call."""
        macs: dict[str, float] = {}
        for layer in layers:
            for p, n in layer.macs.items():
                macs[p] = macs.get(p, 0.0) + n
        return cls(
            macs=macs,
            synops=sum(x.synops for x in layers),
            neuron_updates=sum(x.neuron_updates for x in layers),
            spikes=sum(x.spikes for x in layers),
            bytes_moved=sum(x.bytes_moved for x in layers),
            timesteps=timesteps,
            layers=tuple(layers),
            synaptic_macs=sum(x.synaptic_macs for x in layers),
            elementwise_bytes=sum(x.elementwise_bytes for x in layers),
            weight_bytes=sum(x.weight_bytes for x in layers),
            launches=launches,
        )

    @classmethod
    def combined(cls, parts: list[OpCounts]) -> OpCounts:
        """The counts of programs run one after another (an ensemble's members): every count
        summed, layers concatenated, the longest timestep count kept."""
        macs: dict[str, float] = {}
        for part in parts:
            for p, n in part.macs.items():
                macs[p] = macs.get(p, 0.0) + n
        additive = (
            "synops",
            "neuron_updates",
            "spikes",
            "bytes_moved",
            "synaptic_macs",
            "elementwise_bytes",
            "weight_bytes",
            "launches",
            "fused_launches",
        )
        totals = {name: sum(getattr(p, name) for p in parts) for name in additive}
        return cls(
            macs=macs,
            timesteps=max(p.timesteps for p in parts),
            layers=tuple(layer for p in parts for layer in p.layers),
            **totals,
        )

    @property
    def total_macs(self) -> float:
        """MACs over all precisions."""
        return sum(self.macs.values())
