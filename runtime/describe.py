"""A program summarized for people and tools: kind, tensors, time, layers, members, checksums."""

from __future__ import annotations

import dataclasses
from typing import Any

from ganglion.models.deployable import Deployable
from ganglion.runtime.kinds import kind_of


def describe(deployable: Deployable) -> dict[str, Any]:
    """JSON-able summary of a program (members described recursively)."""
    m = deployable.manifest
    kind = kind_of(m)
    info = kind.describe(deployable)
    return {
        "kind": m.kind,
        "architecture": m.architecture,
        "numerics": m.numerics,
        "inputs": [vars(s) for s in m.inputs],
        "outputs": [vars(s) for s in m.outputs],
        "shapes": kind.io_text(m),
        "time": None if m.time is None else dataclasses.asdict(m.time),
        "state": [vars(s) for s in m.state],
        "checksums": m.artifacts,
        "report": m.report,
        "provenance": m.provenance,
        **info,
        "members": {name: describe(member) for name, member in deployable.members.items()},
    }
