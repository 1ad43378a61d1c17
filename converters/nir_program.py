"""An NIR graph written by another framework -> a spiking Deployable (``ganglion import-nir``)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from ganglion.converters.nir_graph import read_nir_with_time
from ganglion.converters.nir_semantics import NirSemantics, semantics_for
from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.errors import GanglionError, NIRError
from ganglion.models.manifest import NIR_TIME_FIELDS, SpikingTime
from ganglion.models.spiking.graph import SpikingGraph
from ganglion.models.spiking.network import SpikingNetwork

PROBE_STEPS, PROBE_BATCH = 50, 2
PROBE_MAX_VALUES = 1 << 26  # the probe's input and recorded spikes (256 MB in fp32)


def import_nir_program(
    path: Path,
    dt: float | None = None,
    semantics: NirSemantics | None = None,
    type_check: bool = True,
    force: bool = False,
) -> Deployable:
    """The spiking program of NIR file ``path`` under ``semantics`` (default: NIR's plain
    rules), ``dt`` replacing its step when given. NIR carries no encoding, so inputs are
    time-major [T, batch, ...], unless the graph holds Ganglion's ``ganglion_time`` (our
    exports do): then the program runs as the exported one did (its T, encoding, decoding, seed
    and delay; an event encoding, whose binning the graph does not carry, becomes time-major
    frames). ``force`` keeps an unstable Euler decay rather than refusing it."""
    sem = semantics or semantics_for("nir")
    if dt is not None:
        sem = dataclasses.replace(sem, dt=float(dt))
    graph, note = read_nir_with_time(path, semantics=sem, type_check=type_check, force=force)
    time = _time(path, note or {}, sem.dt if note is None or dt is not None else None, sem.dt)
    time.semantics = _used(sem, graph)
    try:
        manifest = spiking_manifest(graph, time)
    except (GanglionError, ValueError) as exc:  # a graph the manifest cannot describe
        raise NIRError(f"{path}: {exc}") from exc
    manifest.provenance = {
        "source_file": path.name,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "converter": "ganglion.converters.nir_graph",
        "dt": sem.dt,
        "like": sem.like,
    }
    return Deployable(SpikingNetwork(graph, time), manifest, graph.to_config())


def _time(path: Path, note: dict[str, Any], dt: float | None, default_dt: float) -> SpikingTime:
    """The program's time semantics from a ``ganglion_time`` note (empty: NIR's time-major
    defaults), ``dt`` replacing the note's when given (``default_dt`` where neither says);
    NIRError naming the file and field."""
    unknown = sorted(set(note) - set(NIR_TIME_FIELDS))
    if unknown:
        raise NIRError(f"{path}: ganglion_time has unknown field {unknown[0]!r}")
    fields = {"timesteps": 1, "dt": default_dt, "encoding": "none", "decoding": "none", **note}
    if fields["encoding"] == "events":  # its binning is not in the graph: frames as given
        fields["encoding"] = "none"
    if dt is not None:
        fields["dt"] = dt
    try:
        return SpikingTime(**fields)
    except (GanglionError, ValueError, TypeError) as exc:
        raise NIRError(f"{path}: ganglion_time: {exc}") from exc


# neuron field -> the convention it follows, where a node's own metadata (Ganglion's exports
# write it) may have replaced the convention asked for
_PER_NODE = {
    "reset": "reset",
    "reset_delay": "reset_delay",
    "fire": "fire",
    "spikes": "spikes_per_step",
}


def _used(sem: NirSemantics, graph: SpikingGraph) -> dict[str, Any]:
    """The conventions the program runs under, for the manifest: ``sem``'s, except where
    the neurons' metadata replaced one: its value when every neuron agrees, left out when they
    differ; ``v_init`` left out when a neuron's initial membrane came from its metadata."""
    used = sem.to_dict()
    neurons = [n for n in graph.neurons().values() if n.spiking]
    for field, convention in _PER_NODE.items():
        values = {getattr(n, field) for n in neurons}
        if len(values) > 1:
            del used[convention]
        elif values:
            used[convention] = values.pop()
    if any(n.v_init.any() for n in neurons) and sem.v_init == "zero":
        del used["v_init"]
    return used


def silence_warning(deployable: Deployable) -> str | None:
    """A warning when the program's spiking neurons never fire on a probe input (uniform [0, 1),
    for 50 steps of time-major input, else the program's T): the usual cause is a dt·R far
    too small for the graph's writer."""
    network: SpikingNetwork = deployable.module
    neurons = network.graph.neurons()
    spiking = [n for n, layer in neurons.items() if layer.spiking]
    per_step = math.prod(network.graph.input_shape) + sum(
        math.prod(n.shape) for n in neurons.values()
    )
    time_major = network.time.time_major
    steps = PROBE_STEPS if time_major else network.time.timesteps
    if not spiking or steps * PROBE_BATCH * per_step > PROBE_MAX_VALUES:
        return None  # nothing to probe, or a probe too large to run here
    shape = (steps, PROBE_BATCH) if time_major else (PROBE_BATCH,)
    probe = torch.rand(
        (*shape, *network.graph.input_shape), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        network.run(probe, record=True)
    if any(float(network.activity[n].sum()) > 0 for n in spiking):
        return None
    gains = [float(network.graph.nodes[n].gain.min()) for n in spiking]
    return (
        f"the imported program stays silent on a probe input ({steps} steps of uniform "
        f"[0, 1) input): dt·R may be the cause (smallest input gain {min(gains):.3g} at "
        f"dt = {network.time.dt:g} s; IF graphs written with r = 1 need --dt 1, or the "
        f"writer's --like preset)"
    )
