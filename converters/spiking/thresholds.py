"""Threshold balancing: percentiles of ReLU activations on calibration data (layer or channel)."""

from __future__ import annotations

import numpy as np
import torch

_MAX_SAMPLES = 2_000_000  # activations drawn per layer (or channel) for the percentile


def percentile_threshold(
    activations: torch.Tensor, percentile: float, per_channel: bool, seed: int = 0
) -> torch.Tensor:
    """Threshold of one ReLU layer from its activations [B, C, ...] or [B, N].

    Returns a 0-dim tensor (per layer) or [C, 1, ...] (per channel), broadcastable to the
    per-sample feature shape. A layer (or channel) that never fires gets the largest
    threshold of the layer, or 1.0 if the whole layer is silent.
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    rng = np.random.default_rng(seed)
    a = activations.detach().float()
    if per_channel:
        channels = a.transpose(0, 1).reshape(a.shape[1], -1).numpy()
        values = np.array([_percentile(row, percentile, rng) for row in channels], np.float32)
        layer_max = float(values.max()) if values.max() > 0 else 1.0
        values[values <= 0] = layer_max
        return torch.from_numpy(values).reshape(a.shape[1], *([1] * (a.ndim - 2)))
    value = _percentile(a.reshape(-1).numpy(), percentile, rng)
    return torch.tensor(value if value > 0 else 1.0, dtype=torch.float32)


def _percentile(values: np.ndarray, percentile: float, rng: np.random.Generator) -> float:
    if values.size > _MAX_SAMPLES:
        values = rng.choice(values, _MAX_SAMPLES, replace=False)
    return float(np.percentile(values, percentile))
