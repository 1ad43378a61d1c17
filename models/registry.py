"""Rebuild a program's module from its architecture name, config and tensors (HF convention).

Each architecture registers one builder; later program kinds add theirs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ganglion.models.errors import BundleError
from ganglion.models.manifest import Manifest
from ganglion.models.spiking.fixed_point import ARCHITECTURE as LOIHI2_FIXED
from ganglion.models.spiking.fixed_point import build_fixed_point
from ganglion.models.spiking.graph import SpikingGraph
from ganglion.models.spiking.network import SpikingNetwork

Builder = Callable[[dict[str, Any], dict[str, torch.Tensor], Manifest], torch.nn.Module]


def _build_spiking(config: dict, tensors: dict[str, torch.Tensor], manifest: Manifest):
    return SpikingNetwork(SpikingGraph.from_config(config, tensors), manifest.time)


ARCHITECTURES: dict[str, Builder] = {
    "spiking_graph": _build_spiking,
    LOIHI2_FIXED: build_fixed_point,
}


def build_module(
    config: dict[str, Any], tensors: dict[str, torch.Tensor], manifest: Manifest
) -> torch.nn.Module:
    """The module named by ``manifest.architecture``, with its weights."""
    builder = ARCHITECTURES.get(manifest.architecture)
    if builder is None:
        raise BundleError(
            f"unknown architecture {manifest.architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    try:
        return builder(config, tensors, manifest)
    except BundleError:
        raise
    except Exception as exc:  # a malformed config surfaces as many exception types
        raise BundleError(f"config.json does not rebuild a {manifest.architecture}: {exc}") from exc
