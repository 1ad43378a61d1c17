"""`OpCounts`: what one inference does, counted — the simulator's input.

Dense work is counted in MACs per precision; spiking work in synaptic accumulate operations
(synops: one per spike per fan-out synapse), neuron state updates, and spikes. ``bytes_moved``
is the memory traffic (weights read + activations read/written). A program may add per-layer
counts; the totals are then their sums.
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

    @property
    def spike_rate(self) -> float | None:
        """Spikes per neuron per timestep; ``None`` for a layer without neurons."""
        if self.neurons == 0:
            return None
        return self.spikes / (self.neurons * self.timesteps)


@dataclass(frozen=True)
class OpCounts:
    """Operation counts for one inference (batch 1).

    macs: multiply-accumulates per precision (``fp32``, ``fp16``, ``bf16``, ``int8``)
    synops: synaptic accumulate ops; neuron_updates: neuron state updates; spikes: spikes emitted
    bytes_moved: memory traffic in bytes; timesteps: SNN timesteps (1 for dense programs)
    layers: optional per-layer breakdown
    """

    macs: dict[str, float] = field(default_factory=dict)
    synops: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    bytes_moved: float = 0.0
    timesteps: int = 1
    layers: tuple[LayerOpCounts, ...] = ()

    def __post_init__(self) -> None:
        bad = set(self.macs) - set(PRECISIONS)
        if bad:
            raise ValueError(f"OpCounts.macs: unknown precisions {sorted(bad)}; use {PRECISIONS}")
        values = [*self.macs.values(), self.synops, self.neuron_updates, self.spikes]
        if any(v < 0 for v in [*values, self.bytes_moved]) or self.timesteps < 1:
            raise ValueError("OpCounts: counts must be >= 0 and timesteps >= 1")

    @classmethod
    def from_layers(cls, layers: list[LayerOpCounts], timesteps: int = 1) -> OpCounts:
        """Totals summed over ``layers`` (kept as the breakdown)."""
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
        )

    @property
    def total_macs(self) -> float:
        """MACs over all precisions."""
        return sum(self.macs.values())
