"""An NIR graph written by another framework -> a spiking Deployable (``ganglion import-nir``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ganglion.converters.nir_graph import read_nir
from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking.network import SpikingNetwork


def import_nir_program(path: Path, dt: float) -> Deployable:
    """The spiking program of NIR file ``path`` discretized at ``dt`` seconds per step; its
    inputs are time-major [T, batch, ...] (NIR carries no encoding)."""
    graph = read_nir(path, dt)
    time = SpikingTime(timesteps=1, dt=dt, encoding="none", decoding="none")
    manifest = spiking_manifest(graph, time)
    manifest.provenance = {
        "source_file": path.name,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "converter": "ganglion.converters.nir_graph",
        "dt": dt,
    }
    return Deployable(SpikingNetwork(graph, time), manifest, graph.to_config())
