"""Roofline latency and energy of one call (``batch`` inferences) from `OpCounts` and a profile.

Dense devices (CPU, GPU, Jetson), for a call of ``B`` inferences:
    compute_s  = B·(Σ_p 2·MACs_p / peak_ops_p + (S + 4·neuron_updates) / peak_ops_fp32)
                 with S = max(2·synaptic_macs, synops): the synaptic layers run as dense matmuls
    mac_mem_s  = (weight_bytes + B·(bytes_moved − weight_bytes)) / memory_bandwidth
    elem_s     = B·elementwise_bytes / memory_bandwidth
    dispatch_s = launch_overhead_s · max(launches, 1)
    busy       = max(compute_s, mac_mem_s) + elem_s
    latency    = dispatch_s + busy
    energy     = idle_w·latency + (P_mode − idle_w)·busy
The MAC layers are one roofline (compute or their own traffic bounds them); the elementwise ops
(e.g. a neuron scan's per-timestep updates) are bandwidth-bound and run after them, so their
time adds. Every op dispatched costs ``launch_overhead_s`` (a GPU's kernel launch, a CPU
framework's per-op dispatch): a program that issues few large ops is bounded by the roofline,
one that issues many small ones (a Python loop over timesteps) by ``launches``. CPUs, GPUs and
Jetsons run each layer as one call (the neuron scan fused over T: Triton on CUDA, the compiled
loops on a CPU), so they pay ``fused_launches`` where the counts know it. Counts without
``launches`` pay it once.
(A synop is one add; a neuron update ≈ 4 ops: decay, add, compare, reset; a precision the
device does not list runs at its fp32 rate.)

Neuromorphic devices (Loihi 2), per `NeuromorphicFigures`, inferences one after another:
    busy_s  = synops / synops_per_s + neuron_updates / neuron_updates_per_s
    latency = launch_overhead_s + B·max(timesteps·min_timestep_s, busy_s)
    energy  = B·(synops·E_synop + neuron_updates·E_update + spikes·E_spike) + static_w·latency
(dense MACs, e.g. an input layer fed real values, are counted as synops.)

Every prediction is ``simulated`` and lists the assumed figures it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganglion.device.profiles.schema import DeviceProfile
from ganglion.device.simulator.opcounts import LayerOpCounts, OpCounts

NEURON_UPDATE_OPS = 4
# run each layer as one kernel: our Triton scan on CUDA, the compiled (numba) loops on a CPU
FUSED_KINDS = ("cpu", "gpu", "jetson")


@dataclass(frozen=True)
class _Terms:
    compute_s: float
    memory_s: float
    dispatch_s: float
    latency_s: float
    energy_j: float
    bound: str
    used: list[str]


@dataclass(frozen=True)
class Prediction:
    """Predicted latency (s) and energy (J) of one call of ``batch`` inferences.

    compute_s, memory_s: the call's compute and memory time (memory_s = MAC-layer traffic plus
    elementwise traffic); dispatch_s: its per-op launch overhead. At batch 1 the call is one
    inference; ``*_per_inference`` divide by the batch.
    """

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
    dispatch_s: float = 0.0
    batch: int = 1

    @property
    def power_w(self) -> float:
        """Average power over the call."""
        return self.energy_j / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def latency_per_inference_s(self) -> float:
        """Call latency divided by the batch (the inverse of throughput)."""
        return self.latency_s / self.batch

    @property
    def energy_per_inference_j(self) -> float:
        """Call energy divided by the batch."""
        return self.energy_j / self.batch


@dataclass(frozen=True)
class LayerPrediction:
    """One layer's share of one inference: its own busy time and energy (no launch overhead)."""

    name: str
    latency_s: float
    energy_j: float


def predict(
    counts: OpCounts, profile: DeviceProfile, mode: str | None = None, batch: int = 1
) -> Prediction:
    """Predict one call of ``batch`` inferences on ``profile`` in power mode ``mode``."""
    if batch < 1:
        raise ValueError(f"predict: batch must be >= 1, got {batch}")
    power = profile.mode(mode)
    if profile.neuromorphic is not None:
        t = _neuromorphic(counts, profile, batch)
    else:
        t = _dense(counts, profile, power.watts, batch)
    used = [*t.used, f"power_modes.{power.name}"]
    layers = tuple(_layer(layer, counts.timesteps, profile, mode) for layer in counts.layers)
    return Prediction(
        device=profile.name,
        mode=power.name,
        latency_s=t.latency_s,
        energy_j=t.energy_j,
        compute_s=t.compute_s,
        memory_s=t.memory_s,
        bound=t.bound,
        assumed=tuple(k for k in dict.fromkeys(used) if profile.is_assumed(k)),
        layers=layers,
        dispatch_s=t.dispatch_s,
        batch=batch,
    )


def dense_ops(counts: OpCounts) -> float:
    """fp32-equivalent operations of one inference on a dense device."""
    spiking = max(2 * counts.synaptic_macs, counts.synops)
    return 2 * counts.total_macs + spiking + NEURON_UPDATE_OPS * counts.neuron_updates


def dense_terms(
    counts: OpCounts, batch: int = 1, fused: bool = False
) -> tuple[float, float, float, float]:
    """The model's inputs for a call: (launches, fp32-equivalent ops, MAC-layer bytes,
    elementwise bytes); calibration fits the device's rates to them. ``fused``: the device
    runs each layer as one kernel (GPUs), so ``fused_launches`` applies where known."""
    mac_bytes = counts.weight_bytes + batch * (counts.bytes_moved - counts.weight_bytes)
    launches = counts.fused_launches if fused and counts.fused_launches else counts.launches
    return (
        max(launches, 1.0),
        batch * dense_ops(counts),
        mac_bytes,
        batch * counts.elementwise_bytes,
    )


def _dense(counts: OpCounts, profile: DeviceProfile, mode_w: float, batch: int) -> _Terms:
    used = ["launch_overhead_s", "idle_w", "memory_bandwidth", "peak_ops.fp32"]
    fused = profile.kind in FUSED_KINDS
    launches, _, mac_bytes, elem_bytes = dense_terms(counts, batch, fused)
    compute_s = 0.0
    for precision, macs in counts.macs.items():
        rate_key = precision if precision in profile.peak_ops else "fp32"
        used.append(f"peak_ops.{rate_key}")
        compute_s += batch * 2 * macs / profile.ops_per_s(precision)
    scalar_ops = dense_ops(counts) - 2 * counts.total_macs
    compute_s += batch * scalar_ops / profile.ops_per_s("fp32")
    bw = profile.memory_bandwidth
    mac_mem_s = mac_bytes / bw if bw else 0.0
    elem_s = elem_bytes / bw if bw else 0.0
    busy = max(compute_s, mac_mem_s) + elem_s
    dispatch_s = profile.launch_overhead_s * launches
    latency = dispatch_s + busy
    energy = profile.idle_w * latency + max(mode_w - profile.idle_w, 0.0) * busy
    memory_s = mac_mem_s + elem_s
    if busy < dispatch_s:
        bound = "overhead"
    else:
        bound = "compute" if compute_s >= memory_s else "memory"
    return _Terms(compute_s, memory_s, dispatch_s, latency, energy, bound, used)


def _neuromorphic(counts: OpCounts, profile: DeviceProfile, batch: int) -> _Terms:
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
    latency = profile.launch_overhead_s + batch * max(floor, busy)
    energy = (
        batch
        * (
            synops * n.energy_per_synop_j
            + counts.neuron_updates * n.energy_per_neuron_update_j
            + counts.spikes * n.energy_per_spike_j
        )
        + n.static_w * latency
    )
    bound = "compute" if busy >= floor else "timestep"
    return _Terms(batch * busy, 0.0, profile.launch_overhead_s, latency, energy, bound, used)


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
        synaptic_macs=layer.synaptic_macs,
        elementwise_bytes=layer.elementwise_bytes,
        weight_bytes=layer.weight_bytes,
    )
    p = predict(alone, profile, mode)
    busy = p.latency_s - p.dispatch_s
    if profile.neuromorphic is not None:
        busy = p.compute_s
        energy = p.energy_j - profile.neuromorphic.static_w * p.latency_s
    else:
        energy = p.energy_j - profile.idle_w * p.dispatch_s
    return LayerPrediction(layer.name, busy, energy)
