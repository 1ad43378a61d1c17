"""Input encoders of spiking programs: direct current or seeded Poisson (Bernoulli) rate spikes.

The rate encoder draws timestep t from a generator seeded by (seed, t), so a whole-sequence
``run`` and a loop of ``step`` calls see exactly the same spikes.
"""

from __future__ import annotations

import torch

_SEED_STRIDE = 1_000_003


def encode_step(x: torch.Tensor, t: int, encoding: str, seed: int) -> torch.Tensor:
    """Input of timestep ``t`` for raw features ``x`` [B, ...]."""
    if encoding == "direct":
        return x
    if encoding == "rate":
        generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + t)
        u = torch.rand(x.shape, generator=generator).to(x.device)
        return (u < x.clamp(0.0, 1.0)).to(x.dtype)
    raise ValueError(f"encoding must be 'direct' or 'rate', got {encoding!r}")


def encode(x: torch.Tensor, timesteps: int, encoding: str, seed: int) -> torch.Tensor:
    """Time-major input [T, B, ...] for raw features ``x`` [B, ...]."""
    if encoding == "direct":
        return x.unsqueeze(0).expand(timesteps, *x.shape)
    return torch.stack([encode_step(x, t, encoding, seed) for t in range(timesteps)])
