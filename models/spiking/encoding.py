"""Input encoders of spiking programs on torch tensors: direct current or seeded rate spikes.

The rate spikes come from ``rate_code`` (numpy), so torch and every other backend agree.
"""

from __future__ import annotations

import torch

from ganglion.models.spiking.rate_code import rate_spikes


def encode_step(x: torch.Tensor, t: int, encoding: str, seed: int) -> torch.Tensor:
    """Input of timestep ``t`` for raw features ``x`` [B, ...]."""
    if encoding == "direct":
        return x
    if encoding == "rate":
        spikes = rate_spikes(x.detach().cpu().float().numpy(), t, seed)
        return torch.from_numpy(spikes).to(device=x.device, dtype=x.dtype)
    raise ValueError(f"encoding must be 'direct' or 'rate', got {encoding!r}")


def encode(x: torch.Tensor, timesteps: int, encoding: str, seed: int) -> torch.Tensor:
    """Time-major input [T, B, ...] for raw features ``x`` [B, ...]."""
    if encoding == "direct":
        return x.unsqueeze(0).expand(timesteps, *x.shape)
    return torch.stack([encode_step(x, t, encoding, seed) for t in range(timesteps)])
