"""The rate (Bernoulli) input encoder, in numpy so every backend reproduces it without torch.

Timestep ``t`` of raw features ``x`` (clipped to [0, 1]) spikes where a uniform float32 draw is
below ``x``. The draws, one per feature of a sample, come from numpy's ``default_rng(seed ·
1_000_003 + t)`` and are the same for every sample of a batch: a sample's spikes depend on its
own features, ``t`` and the seed only, never on the batch it arrives in or its place there. A
whole-sequence ``run`` and a loop of ``step`` calls therefore see exactly the same spikes, on
every backend, and a peer reproduces them from this paragraph.
"""

from __future__ import annotations

import numpy as np

_SEED_STRIDE = 1_000_003


def rate_spikes(x: np.ndarray, t: int, seed: int) -> np.ndarray:
    """Spikes (x's float dtype, 0 or 1) of timestep ``t`` for raw features ``x`` [B, ...]: the
    same per-feature draws [...] for every sample (module docstring)."""
    draws = np.random.default_rng(seed * _SEED_STRIDE + t).random(x.shape[1:], dtype=np.float32)
    return (draws < np.clip(x, 0.0, 1.0)).astype(x.dtype)


def rate_sequence(x: np.ndarray, timesteps: int, seed: int) -> np.ndarray:
    """Time-major spikes [T, B, ...] of ``timesteps`` steps for raw features ``x`` [B, ...]."""
    return np.stack([rate_spikes(x, t, seed) for t in range(timesteps)])
