"""ViT: the softmax-attention baseline for ViG, of the same width, depth and block budget.

Pre-norm blocks: ``x + MHA(LN(x))`` (bidirectional multi-head attention over all patches),
then ``x + FFN(LN(x))`` (4d, GELU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.sequence.layers import FeedForward
from ganglion.models.vision.base import VisionClassifier, VisionConfig


class SelfAttention(nn.Module):
    """Multi-head softmax attention over all tokens (no mask)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, d] -> [B, N, d]."""
        q, k, v = (
            proj(x).unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # [B, H, N, D]
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        return self.o_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class ViTBlock(nn.Module):
    """``x + MHA(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.d_model)
        self.mixer = SelfAttention(config.d_model, config.n_heads)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B, N, d] (the grid is not needed: attention sees every patch) -> [B, N, d]."""
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class ViT(VisionClassifier):
    """Vision Transformer classifier (mean-pooled patch tokens, no class token)."""

    architecture = "vit"

    def build_block(self) -> nn.Module:
        """A ``ViTBlock``."""
        return ViTBlock(self.config)
