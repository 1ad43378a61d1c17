"""A deployable program: a torch module built from models/ plus its manifest and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ganglion.models.manifest import Manifest


@dataclass
class Deployable:
    """What converters produce and bundles store.

    module: the program as an ``nn.Module`` that offers ``run`` and ``step``.
    config: JSON-able architecture description that rebuilds ``module`` with its weights.
    """

    module: torch.nn.Module
    manifest: Manifest
    config: dict[str, Any] = field(default_factory=dict)
