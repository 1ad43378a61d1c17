"""Threshold balancing on calibration data (per layer or channel): percentiles of the ReLU
activations, or the threshold whose T-step IF quantization of them has the least squared error."""

from __future__ import annotations

import numpy as np
import torch

_MAX_SAMPLES = 2_000_000  # activations drawn per layer (or channel) for the percentile
_MSE_GRID = 96  # candidate thresholds of the MSE search
_MSE_SAMPLES = 200_000  # activations drawn per layer (or channel) for the MSE search


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


def mse_threshold(
    activations: torch.Tensor, timesteps: int, v_init: float, per_channel: bool, seed: int = 0
) -> torch.Tensor:
    """Threshold that minimizes the squared error between the activations and what an IF
    neuron with that threshold carries in ``timesteps`` steps when fed them as a constant
    current: θ/T · clip(⌊a·T/θ + v_init⌋, 0, T) (grid search over fractions of the maximum,
    as in Li et al. 2021). Shapes as ``percentile_threshold``."""
    rng = np.random.default_rng(seed)
    a = activations.detach().float()
    rows = a.transpose(0, 1).reshape(a.shape[1], -1) if per_channel else a.reshape(1, -1)
    values = np.array(
        [_mse_search(_sample(row.numpy(), rng), timesteps, v_init) for row in rows],
        np.float32,
    )
    if per_channel:
        layer_max = float(values.max()) if values.max() > 0 else 1.0
        values[values <= 0] = layer_max
        return torch.from_numpy(values).reshape(a.shape[1], *([1] * (a.ndim - 2)))
    return torch.tensor(values[0] if values[0] > 0 else 1.0, dtype=torch.float32)


def _mse_search(values: np.ndarray, timesteps: int, v_init: float) -> float:
    top = float(values.max()) if values.size else 0.0
    if top <= 0:
        return 0.0
    x = torch.from_numpy(values).double()
    best, best_error = top, float("inf")
    for fraction in np.linspace(1.0, 0.05, _MSE_GRID):
        theta = top * fraction
        carried = torch.clamp(torch.floor(x * timesteps / theta + v_init), 0, timesteps)
        error = float((carried * theta / timesteps - x).pow(2).mean())
        if error < best_error:
            best, best_error = theta, error
    return best


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if values.size <= _MSE_SAMPLES:
        return values
    return rng.choice(values, _MSE_SAMPLES, replace=False)
