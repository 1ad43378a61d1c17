"""torch layers written into a GraphBuilder from their weights, for the hand-built step graphs
(``gla_linear_attention.py``, ``gam_causal_conv.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ganglion.runtime.onnx_export.builder import GraphBuilder


def weights(t: torch.Tensor) -> np.ndarray:
    """A parameter as a float32 numpy array (detached, on the CPU)."""
    return t.detach().cpu().float().numpy()


def linear(b: GraphBuilder, x: str, layer: torch.nn.Linear, hint: str) -> str:
    """``x W^T (+ bias)``."""
    y = b.op("MatMul", [x, b.const(hint, weights(layer.weight).T)], hint)
    if layer.bias is None:
        return y
    return b.op("Add", [y, b.const(f"{hint}_bias", weights(layer.bias))])


def layer_norm(b: GraphBuilder, x: str, norm: torch.nn.LayerNorm, hint: str) -> str:
    """LayerNormalization over the last axis with ``norm``'s weight, bias and eps."""
    scale, bias = (b.const(f"{hint}_{n}", weights(p)) for n, p in norm.named_parameters())
    return b.op("LayerNormalization", [x, scale, bias], hint, axis=-1, epsilon=norm.eps)


def prenorm_block(
    b: GraphBuilder, x: str, block: Any, mixer: Callable[[str], tuple[str, str]]
) -> tuple[str, str]:
    """``x + mixer(LN(x))``, then ``x + FFN(LN(x))`` (GELU) for a block with ``mixer_norm``,
    ``ffn_norm`` and ``ffn.up``/``ffn.down``; ``mixer`` returns (its output, its new state)."""
    mixed, state = mixer(layer_norm(b, x, block.mixer_norm, "ln"))
    x = b.op("Add", [x, mixed], "residual")
    up = linear(b, layer_norm(b, x, block.ffn_norm, "ln"), block.ffn.up, "up")
    down = linear(b, b.op("Gelu", [up]), block.ffn.down, "down")
    return b.op("Add", [x, down], "residual"), state
