"""Roofline latency and energy per inference from `OpCounts` and a `DeviceProfile`.

Dense devices (CPU, GPU, Jetson):
    compute_s = Σ_p 2·MACs_p / peak_ops_p + (synops + 4·neuron_updates) / peak_ops_fp32
    memory_s  = bytes_moved / memory_bandwidth
    latency   = launch_overhead_s + max(compute_s, memory_s)
    energy    = idle_w·latency + (P_mode − idle_w)·max(compute_s, memory_s)
(a synop is one add; a neuron update ≈ 4 ops: decay, add, compare, reset; a precision the
device does not list runs at its fp32 rate.)

Neuromorphic devices (Loihi 2), per `NeuromorphicFigures`:
    busy_s  = synops / synops_per_s + neuron_updates / neuron_updates_per_s
    latency = launch_overhead_s + max(timesteps·min_timestep_s, busy_s)
    energy  = synops·E_synop + neuron_updates·E_update + spikes·E_spike + static_w·latency
(dense MACs, e.g. an input layer fed real values, are counted as synops.)

Every prediction is ``simulated`` and lists the assumed figures it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganglion.device.profiles.schema import DeviceProfile
from ganglion.device.simulator.opcounts import LayerOpCounts, OpCounts

NEURON_UPDATE_OPS = 4
# compute_s, memory_s, latency_s, energy_j, bound, figure keys used
_Terms = tuple[float, float, float, float, str, list[str]]


@dataclass(frozen=True)
class Prediction:
    """Predicted latency (s) and energy (J) of one inference on one device and power mode."""

    device: str
    mode: str
    latency_s: float
    energy_j: float
    compute_s: float
    memory_s: float
    bound: str  # "compute" | "memory" | "timestep" | "overhead"
    assumed: tuple[str, ...]
    layers: tuple[LayerPrediction, ...] = field(default=())
    kind: str = "simulated"

    @property
    def power_w(self) -> float:
        """Average power over the inference."""
        return self.energy_j / self.latency_s if self.latency_s > 0 else 0.0


@dataclass(frozen=True)
class LayerPrediction:
    """One layer's share: its own busy time and energy (no per-inference overhead)."""

    name: str
    latency_s: float
    energy_j: float


def predict(counts: OpCounts, profile: DeviceProfile, mode: str | None = None) -> Prediction:
    """Predict one inference's latency and energy on ``profile`` in power mode ``mode``."""
    power = profile.mode(mode)
    if profile.neuromorphic is not None:
        compute_s, memory_s, latency, energy, bound, used = _neuromorphic(counts, profile)
    else:
        compute_s, memory_s, latency, energy, bound, used = _dense(counts, profile, power.watts)
    used.append(f"power_modes.{power.name}")
    layers = tuple(_layer(layer, counts.timesteps, profile, mode) for layer in counts.layers)
    return Prediction(
        device=profile.name,
        mode=power.name,
        latency_s=latency,
        energy_j=energy,
        compute_s=compute_s,
        memory_s=memory_s,
        bound=bound,
        assumed=tuple(k for k in dict.fromkeys(used) if profile.is_assumed(k)),
        layers=layers,
    )


def dense_ops(counts: OpCounts) -> float:
    """fp32-equivalent operations of the dense model (for calibration)."""
    return 2 * counts.total_macs + counts.synops + NEURON_UPDATE_OPS * counts.neuron_updates


def _dense(counts: OpCounts, profile: DeviceProfile, mode_w: float) -> _Terms:
    used = ["launch_overhead_s", "idle_w", "memory_bandwidth", "peak_ops.fp32"]
    compute_s = 0.0
    for precision, macs in counts.macs.items():
        rate_key = precision if precision in profile.peak_ops else "fp32"
        used.append(f"peak_ops.{rate_key}")
        compute_s += 2 * macs / profile.ops_per_s(precision)
    scalar_ops = counts.synops + NEURON_UPDATE_OPS * counts.neuron_updates
    compute_s += scalar_ops / profile.ops_per_s("fp32")
    memory_s = counts.bytes_moved / profile.memory_bandwidth if profile.memory_bandwidth else 0.0
    busy = max(compute_s, memory_s)
    latency = profile.launch_overhead_s + busy
    energy = profile.idle_w * latency + max(mode_w - profile.idle_w, 0.0) * busy
    if busy < profile.launch_overhead_s:
        bound = "overhead"
    else:
        bound = "compute" if compute_s >= memory_s else "memory"
    return compute_s, memory_s, latency, energy, bound, used


def _neuromorphic(counts: OpCounts, profile: DeviceProfile) -> _Terms:
    n = profile.neuromorphic
    assert n is not None
    used = [
        "launch_overhead_s",
        "neuromorphic.energy_per_synop_j",
        "neuromorphic.energy_per_neuron_update_j",
        "neuromorphic.energy_per_spike_j",
        "neuromorphic.synops_per_s",
        "neuromorphic.neuron_updates_per_s",
        "neuromorphic.min_timestep_s",
        "neuromorphic.static_w",
    ]
    synops = counts.synops + counts.total_macs
    busy = synops / n.synops_per_s + counts.neuron_updates / n.neuron_updates_per_s
    floor = counts.timesteps * n.min_timestep_s
    latency = profile.launch_overhead_s + max(floor, busy)
    energy = (
        synops * n.energy_per_synop_j
        + counts.neuron_updates * n.energy_per_neuron_update_j
        + counts.spikes * n.energy_per_spike_j
        + n.static_w * latency
    )
    bound = "compute" if busy >= floor else "timestep"
    return busy, 0.0, latency, energy, bound, used


def _layer(
    layer: LayerOpCounts, timesteps: int, profile: DeviceProfile, mode: str | None
) -> LayerPrediction:
    alone = OpCounts(
        macs=layer.macs,
        synops=layer.synops,
        neuron_updates=layer.neuron_updates,
        spikes=layer.spikes,
        bytes_moved=layer.bytes_moved,
        timesteps=timesteps,
    )
    p = predict(alone, profile, mode)
    busy = p.latency_s - profile.launch_overhead_s
    if profile.neuromorphic is not None:
        busy = p.compute_s
        energy = p.energy_j - profile.neuromorphic.static_w * p.latency_s
    else:
        energy = p.energy_j - profile.idle_w * profile.launch_overhead_s
    return LayerPrediction(layer.name, busy, energy)
