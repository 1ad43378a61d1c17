"""Operations and energy per generated token of a token model (``inspect --ops``).

Dense parts are counted with PyTorch's FLOP counter on one ``step`` (MACs = FLOPs / 2).
For spiking models the spikes are counted on real text (``record_spikes``), and each spike
drives ``fan_out`` accumulates where it lands (``spike_stats``). In SpikeGPT's block every
spike is added once into the residual stream, and a LayerNorm turns the stream back into
floats before every projection: no matrix product reads spikes, so the spikes save almost
nothing over the same model as an ANN. This module reports that as it is.

Energy: the 45 nm convention common in SNN papers (Horowitz 2014: MAC 4.6 pJ, AC 0.9 pJ),
and the roofline model of each device profile; every energy figure here is **simulated**.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ganglion.device import OpCounts, get_profile, predict
from ganglion.models.deployable import Deployable

MAC_PJ, AC_PJ = 4.6, 0.9  # 45 nm, Horowitz 2014
DEVICES = ("jetson-agx-orin-64gb", "jetson-orin-nano-8gb")  # the whole model
NEUROMORPHIC = "loihi2"  # the spiking parts only: Loihi 2 does no dense matrix products


def _macs_per_token(module: Any) -> float:
    state = module.init_state(1)
    ids = torch.zeros(1, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module.step(ids, state)
    return counter.get_total_flops() / 2


def _spikes_per_token(module: Any, ids: np.ndarray) -> dict[str, dict[str, float]]:
    """Per spiking layer: firing rate and accumulates per token on ``ids`` [T]."""
    module.reset_spike_stats()
    module.record_spikes = True
    try:
        with torch.no_grad():
            module(torch.from_numpy(ids[None].astype(np.int64)))
        stats = module.spike_stats()
    finally:
        module.record_spikes = False
    tokens = len(ids)
    return {
        name: {
            "firing_rate": s["firing_rate"],
            "spikes_per_token": s["spikes"] / tokens,
            "neuron_steps_per_token": s["neuron_steps"] / tokens,
            "accumulates_per_token": s["spikes"] * s["fan_out"] / tokens,
            "drives": s["drives"],
        }
        for name, s in stats.items()
    }


def token_ops(deployable: Deployable, ids: np.ndarray) -> dict[str, Any]:
    """MACs, spike-driven accumulates and energy per token (45 nm and per device), with the
    same model counted as an ANN (a float add wherever the SNN adds a spike) for the ratio."""
    if deployable.manifest.kind != "sequence":
        raise ValueError(f"--ops counts token models; this is a {deployable.manifest.kind} program")
    module = deployable.module.eval()
    macs = _macs_per_token(module)
    spiking = deployable.manifest.architecture == "spikegpt"
    layers = _spikes_per_token(module, ids) if spiking else {}
    acs = sum(layer["accumulates_per_token"] for layer in layers.values())
    # the same model as an ANN adds a float activation (not a spike) for every neuron step
    dense_adds = sum(layer["neuron_steps_per_token"] for layer in layers.values())
    energy = (macs * MAC_PJ + acs * AC_PJ) * 1e-12
    ann_energy = (macs * MAC_PJ + dense_adds * AC_PJ) * 1e-12
    whole = OpCounts(macs={"fp32": macs}, synops=acs, spikes=acs)
    parts = {name: (whole, "simulated (roofline), the whole model") for name in DEVICES}
    if spiking:
        spikes_only = OpCounts(synops=acs, spikes=acs)
        parts[NEUROMORPHIC] = (spikes_only, "simulated (roofline), the spiking parts only")
    devices = {}
    for name, (counts, kind) in parts.items():
        pred = predict(counts, get_profile(name), batch=1)
        devices[name] = {
            "latency_ms": pred.latency_s * 1e3,
            "energy_mj": pred.energy_j * 1e3,
            "kind": kind,
        }
    return {
        "tokens_counted": int(len(ids)),
        "macs_per_token": macs,
        "spike_driven_accumulates_per_token": acs,
        "layers": layers,
        "energy_45nm_mj_per_token": energy * 1e3,
        "ann_energy_45nm_mj_per_token": ann_energy * 1e3,
        "ann_over_snn_energy": ann_energy / energy if energy else None,
        "energy_kind": "simulated (45 nm: MAC 4.6 pJ, AC 0.9 pJ)",
        "devices": devices,
    }
