"""A program summarized for people and tools: kind, tensors, time, layers, members, checksums.

Two sources give the same summary: ``describe`` reads an in-memory program's torch module;
``describe_program`` reads a verified bundle's files (manifest, config.json, the weights'
shapes) without torch wherever its kind can (``ProgramKind.describe_files``), so ``ganglion
inspect`` answers without rebuilding the program. The one field only the module gives is an
exported dense program's ``operators``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ganglion.models.deployable import Deployable
from ganglion.models.manifest import Manifest
from ganglion.runtime.kinds import kind_of

if TYPE_CHECKING:
    from ganglion.runtime.program import Program


def describe(deployable: Deployable) -> dict[str, Any]:
    """JSON-able summary of a program from its module (members described recursively)."""
    info = kind_of(deployable.manifest).describe(deployable)
    members = {name: describe(member) for name, member in deployable.members.items()}
    return _summary(deployable.manifest, info, members)


def describe_program(program: Program) -> dict[str, Any]:
    """The summary of a bundle's program from its files; a program whose files do not settle
    it (or that has no bundle) is described from its rebuilt module. Members recursively."""
    kind = program.kind
    info = kind.describe_files(program) if program.folder is not None else None
    if info is None:
        info = kind.describe(program.deployable())
    members = {name: describe_program(member) for name, member in program.members.items()}
    return _summary(program.manifest, info, members)


def _summary(m: Manifest, info: dict[str, Any], members: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": m.kind,
        "architecture": m.architecture,
        "numerics": m.numerics,
        "inputs": [vars(s) for s in m.inputs],
        "outputs": [vars(s) for s in m.outputs],
        "shapes": kind_of(m).io_text(m),
        "time": None if m.time is None else dataclasses.asdict(m.time),
        "state": [vars(s) for s in m.state],
        "max_batch": m.max_batch,
        "value_ranges": m.value_ranges,
        "checksums": m.artifacts,
        "report": m.report,
        "provenance": m.provenance,
        **info,
        "members": members,
    }
