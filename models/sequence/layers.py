"""Pieces the token and vision models share: configs from dicts, bounds on config values,
context checks, GPT-2's initialization and its feed-forward block."""

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


# A token model's config may come from a bundle's config.json: its values are checked against
# these before anything is allocated.
MAX_VOCAB = 1 << 24  # the manifest's largest dimension
MAX_WIDTH = 16384  # d_model
MAX_LAYERS = 256
MAX_CONTEXT = 1 << 20  # rows of a learned position table
MAX_PARAMETERS = 1 << 28  # about 1 GiB of float32 weights


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an integer (not a bool) in [low, high], else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        floor = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {floor} at most {high}, got {value!r}")
    return value


def check_real(name: str, value: object, low: float, high: float) -> float:
    """``value`` if it is a finite number in (low, high], else ValueError naming it."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low < value <= high:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number in ({low:g}, {high:g}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_shell(config: Any, context: int | None = None) -> None:
    """Check the fields every token model has: ``vocab_size``, ``d_model``, ``n_layers`` and,
    where the model has a learned position table, its ``context``."""
    check_int("vocab_size", config.vocab_size, 1, MAX_VOCAB)
    check_int("d_model", config.d_model, 1, MAX_WIDTH)
    check_int("n_layers", config.n_layers, 1, MAX_LAYERS)
    if context is not None:
        check_int("context", context, 1, MAX_CONTEXT)


def check_parameters(
    architecture: str, table_rows: int, d_model: int, layers: int, block: int
) -> None:
    """ValueError when ``table_rows`` embedding rows of ``d_model`` plus ``layers`` blocks of
    about ``block`` weights each exceed MAX_PARAMETERS (estimated before anything is built)."""
    total = table_rows * d_model + layers * block
    if total > MAX_PARAMETERS:
        raise ValueError(
            f"this {architecture} config makes about {total:,} parameters, more than "
            f"{MAX_PARAMETERS:,}"
        )


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
