"""Pieces the token and vision models share: configs from dicts, context checks, GPT-2's
initialization and its feed-forward block."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.errors import ShapeError
from ganglion.models.sequence.base import inputs_checkable

ConfigT = TypeVar("ConfigT")


def config_from_dict(
    config_class: type[ConfigT], config: dict[str, Any], architecture: str
) -> ConfigT:
    """``config_class`` from a ``to_config`` dict (fields plus ``architecture``); ValueError for
    another architecture's config or an unknown key."""
    found = config.get("architecture", architecture)
    if found != architecture:
        raise ValueError(f"config is for {found!r}, not {architecture!r}")
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(config) - known - {"architecture"})
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} keys {unknown}; known: {sorted(known)}")
    return config_class(**{k: v for k, v in config.items() if k in known})


def check_context(t: torch.Tensor, length: int, context: int) -> None:
    """Raise ShapeError if ``length`` more tokens after position ``t`` exceed ``context``."""
    if inputs_checkable() and t.numel() and int(t.max()) + length > context:
        raise ShapeError(f"{int(t.max()) + length} tokens exceed the model's context of {context}")


def init_gpt2(module: nn.Module, n_layers: int) -> None:
    """GPT-2's initialization: N(0, 0.02) weights, zero biases, residual outputs (``o_proj``,
    ``ffn.down``) scaled by ``1 / sqrt(2 n_layers)``."""
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif p.ndim == 2:
            residual = name.endswith(("o_proj.weight", "ffn.down.weight"))
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers) if residual else 0.02)


class FeedForward(nn.Module):
    """``down(GELU(up(x)))`` with a 4x hidden width (GPT-2's MLP; GLA and GAM blocks use it)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, 4 * d_model)
        self.down = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d] -> [..., d]."""
        return self.down(F.gelu(self.up(x)))


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) · weight`` over the last axis (``nn.RMSNorm``'s arithmetic and
    parameter name, written out so every ONNX exporter knows it)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., dim] -> [..., dim]."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
