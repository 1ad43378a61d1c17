"""Spiking programs: a graph of synaptic layers and spiking neurons, run in discrete time.

Names are imported on first use, so the torch-free parts (``rate_code``) load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpikingGraph": "graph",
    "SpikingNetwork": "network",
    "Neuron": "neuron",
    **{
        n: "layers"
        for n in (
            "Affine",
            "AvgPool2d",
            "Conv1d",
            "Conv2d",
            "Delay",
            "Flatten",
            "Scale",
            "SumPool2d",
            "Threshold",
        )
    },  # fmt: skip
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
