"""Output decoding of spiking programs: what a running sum of outputs over time becomes."""

from __future__ import annotations

from typing import TypeVar

from ganglion.models.manifest import SpikingTime

Total = TypeVar("Total")


def scale_decoded(total: Total, time: SpikingTime) -> Total:
    """The decoded output of a sum of T step outputs: the sum itself for ``count``, the mean
    over the program's T timesteps for ``membrane`` (torch tensors and numpy arrays alike)."""
    return total / time.timesteps if time.decoding == "membrane" else total  # type: ignore[operator]
