"""An expert's measured compute cost, read from the file ``ganglion profile MEMBER --json`` wrote.

The profile must hold a **measured** result (latency from the wall clock on that machine) for
the device the expert is placed on, at batch 1 (a request is one sample), and name the same
bundle as the ensemble's member (the SHA-256 of its ``manifest.json``, which the ensemble's
manifest records). Latency is the median call (p50); energy per inference is what the profile
measured (a hardware meter) or simulated (the device's power limit over the measured time), and
the cost's description says which. Every failure is one line naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ganglion.runtime.selection.problem import (
    FieldReader,
    SelectionProblemError,
    is_text,
    read_json_file,
)

MAX_PROFILE_BYTES = 4 * 2**20  # a profile of a few devices is a few kB
MAX_RESULTS = 256  # devices in one profile file


@dataclass(frozen=True)
class MeasuredCost:
    """One inference of an expert on its device: joules, milliseconds and how each was got."""

    energy_j: float
    latency_ms: float
    source: str


def read_measured_cost(path: str | Path, device: str, manifest_sha256: str) -> MeasuredCost:
    """The cost of one inference on ``device`` from profile file ``path``, which must profile
    the bundle whose manifest has SHA-256 ``manifest_sha256``."""
    source = str(path)
    data = read_json_file(path, MAX_PROFILE_BYTES, "a profile")
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise SelectionProblemError(
            f"{source}: not a profile (write one with `ganglion profile MEMBER --json`)"
        )
    profiled = data.get("manifest_sha256")
    if not isinstance(profiled, str):
        raise SelectionProblemError(
            f"{source}: manifest_sha256 is missing (profile the member bundle again)"
        )
    if profiled != manifest_sha256:
        raise SelectionProblemError(
            f"{source}: profiles another bundle (manifest SHA-256 {profiled[:12]}..., the member's "
            f"is {manifest_sha256[:12]}...)"
        )
    results = data["results"]
    if len(results) > MAX_RESULTS:
        raise SelectionProblemError(
            f"{source}: results has {len(results)} entries, at most {MAX_RESULTS}"
        )
    measured = [
        (i, r)
        for i, r in enumerate(results)
        if isinstance(r, dict) and r.get("device") == device and r.get("latency_kind") == "measured"
    ]
    if not measured:
        here = sorted(
            str(r.get("device"))
            for r in results
            if isinstance(r, dict) and r.get("latency_kind") == "measured"
        )
        held = f"it measured {', '.join(here)}" if here else "it measured no device"
        raise SelectionProblemError(f"{source}: no measured result for device {device!r} ({held})")
    if len(measured) > 1:  # which one is meant cannot be told: none is guessed
        rows = ", ".join(f"results[{i}]" for i, _ in measured)
        raise SelectionProblemError(
            f"{source}: {rows} all measure device {device!r}; keep one (profile once per device)"
        )
    i, result = measured[0]
    where = f"results[{i}]"
    batch = result.get("batch")
    if batch != 1:
        raise SelectionProblemError(
            f"{source}: {where}.batch is {batch!r}; profile at --batch 1 (a request is one sample)"
        )
    latency = result.get("latency")
    if not isinstance(latency, dict):
        raise SelectionProblemError(f"{source}: {where}.latency must be an object")
    fields = FieldReader(source)
    p50_s = fields.cost(latency.get("p50"), f"{where}.latency.p50")
    energy = fields.cost(result.get("energy_per_inference_j"), f"{where}.energy_per_inference_j")
    runs = result.get("runs")
    backend, kind, how = (result.get(k) for k in ("backend", "energy_kind", "energy_source"))
    texts = (backend, kind, how)
    if type(runs) is not int or not all(isinstance(v, str) and is_text(v) for v in texts):
        raise SelectionProblemError(
            f"{source}: {where} needs runs (integer), backend, energy_kind, energy_source (text)"
        )
    described = (
        f"measured latency (p50 of {runs} runs, {backend}), "
        f"{'measured' if kind == 'measured' else 'simulated'} energy ({how[:200]})"
    )
    return MeasuredCost(energy, p50_s * 1e3, described)
