"""A deployable program: a torch module built from models/ plus its manifest and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganglion.models.manifest import Manifest

if TYPE_CHECKING:
    import torch


@dataclass
class Deployable:
    """What converters produce and bundles store.

    module: the program as an ``nn.Module`` (its kind's interface: see ``runtime/kinds``).
    config: JSON-able architecture description that rebuilds ``module`` with its weights.
    members: the member programs of a composite (ensemble) program, by name.
    """

    module: torch.nn.Module
    manifest: Manifest
    config: dict[str, Any] = field(default_factory=dict)
    members: dict[str, Deployable] = field(default_factory=dict)
