"""ViG (hustvl/ViG): a vision backbone whose token mixer is bidirectional gated linear attention.

Mixer, on the normalized tokens ``x`` of a ``rows x cols`` grid::

    l = SiLU(DWConv3x3(x))                       (2D locality over the token grid)
    q, k, v = W_q l, W_k l, W_v l                (shared by both directions)
    g_f, g_b = split(logsigmoid(l W_1 W_2 + b) / 16)   (direction-wise gates, d -> 16 -> 2 d_k)
    o = (GLA(q, k, v, g_f) + flip(GLA(flip(q), flip(k), flip(v), flip(g_b)))) / 2
    g = sigmoid(W_g l)
    y = W_o [RMSNorm(o) * g + RMSNorm(l) * (1 - g)]    (RMSNorm per head)

As in the published code, every projection reads the locally mixed tokens ``l``. Blocks are
pre-norm (RMSNorm) with a 4d GELU FFN; GLA runs in its chunkwise form (``gla_chunk``), the
backward direction on the flipped sequence in the same call (stacked on the batch axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.kernels.gla import gla_chunk
from ganglion.models.sequence.gla import check_gla_mixer
from ganglion.models.sequence.layers import FeedForward, RMSNorm
from ganglion.models.vision.base import VisionClassifier, VisionConfig


@dataclass
class ViGConfig(VisionConfig):
    """Hyper-parameters of ``ViG`` (``VisionConfig`` plus the GLA mixer's)."""

    expand_k: float = 0.5  # d_k = expand_k * d_model (ViG and fla: 0.5)
    gate_rank: int = 16  # rank of the gate projection W_1 W_2
    gate_normalizer: float = 16.0  # tau in g = logsigmoid(.) / tau
    chunk_size: int = 64  # tokens per chunk of the chunkwise GLA (a power of two >= 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_gla_mixer(self)
        key_dim = self.d_model * self.expand_k
        if key_dim != int(key_dim) or int(key_dim) % self.n_heads:
            raise ValueError(f"d_k {key_dim:g} must be a multiple of n_heads {self.n_heads}")

    def block_parameters(self) -> int:
        """About how many weights one block holds: q and k (d x d_k each), v, the fusion gate
        and o (d x d each), the gate's low-rank pair, the 3x3 depthwise conv and a 4d FFN."""
        d, dk, rank = self.d_model, self.key_dim, self.gate_rank
        return 2 * d * dk + 3 * d * d + rank * (d + 2 * dk) + 9 * d + 8 * d * d

    @property
    def key_dim(self) -> int:
        """d_k, the width of queries and keys over all heads."""
        return int(self.d_model * self.expand_k)


class BidirectionalGLA(nn.Module):
    """ViG's token mixer: local depthwise conv fused with bidirectional GLA."""

    def __init__(self, config: ViGConfig) -> None:
        super().__init__()
        d, dk = config.d_model, config.key_dim
        self.n_heads = config.n_heads
        self.gate_normalizer = config.gate_normalizer
        self.chunk_size = config.chunk_size
        self.local = nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False)
        self.q_proj = nn.Linear(d, dk, bias=False)
        self.k_proj = nn.Linear(d, dk, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.gk_down = nn.Linear(d, config.gate_rank, bias=False)
        self.gk_up = nn.Linear(config.gate_rank, 2 * dk)  # forward and backward gates
        self.g_proj = nn.Linear(d, d)  # fusion gate
        self.o_norm = RMSNorm(d // config.n_heads, eps=1e-5)
        self.local_norm = RMSNorm(d // config.n_heads, eps=1e-5)
        self.o_proj = nn.Linear(d, d, bias=False)

    def reset_parameters(self) -> None:
        """ViG's (and fla's) initialization: Xavier-uniform with gain 2^-2.5, zero biases."""
        for layer in (self.local, self.q_proj, self.k_proj, self.v_proj, self.gk_down):
            nn.init.xavier_uniform_(layer.weight, gain=2**-2.5)
        for layer in (self.gk_up, self.g_proj, self.o_proj):
            nn.init.xavier_uniform_(layer.weight, gain=2**-2.5)
        nn.init.zeros_(self.gk_up.bias)
        nn.init.zeros_(self.g_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_heads, -1))  # [..., d] -> [..., H, d/H]

    def local_mixing(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B, N, d] on a ``grid`` -> SiLU(DWConv3x3) [B, N, d]."""
        image = x.transpose(1, 2).unflatten(2, grid)  # [B, d, rows, cols]
        return F.silu(self.local(image)).flatten(2).transpose(1, 2)

    def attention(self, local: torch.Tensor) -> torch.Tensor:
        """local [B, N, d] -> mean of forward and backward GLA [B, N, H, d/H]."""
        q, k, v = (self._heads(p(local)) for p in (self.q_proj, self.k_proj, self.v_proj))
        gates = F.logsigmoid(self.gk_up(self.gk_down(local))) / self.gate_normalizer
        g_fwd, g_bwd = (self._heads(g) for g in gates.chunk(2, -1))
        q, k, v = (torch.cat([t, t.flip(1)]) for t in (q, k, v))  # [2B, N, H, *]
        g = torch.cat([g_fwd, g_bwd.flip(1)])
        use_kernel = False if torch.is_grad_enabled() else None  # the kernel is forward-only
        o, _ = gla_chunk(q, k, v, g, None, None, False, self.chunk_size, use_kernel)
        # split by unflatten, not ``o.chunk(2)``: torch.export cannot prove that chunk gives
        # two pieces for every batch and would pin the exported graph's batch
        o_fwd, o_bwd = o.unflatten(0, (2, -1))
        return (o_fwd + o_bwd.flip(1)) / 2

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B, N, d] on a ``(rows, cols)`` grid -> [B, N, d]."""
        local = self.local_mixing(x, grid)
        gate = torch.sigmoid(self._heads(self.g_proj(local)))
        fused = self.o_norm(self.attention(local)) * gate
        fused = fused + self.local_norm(self._heads(local)) * (1 - gate)
        return self.o_proj(fused.flatten(-2))


class ViGBlock(nn.Module):
    """``x + BiGLA(RMSNorm(x))``, then ``x + FFN(RMSNorm(x))``."""

    def __init__(self, config: ViGConfig) -> None:
        super().__init__()
        self.mixer_norm = RMSNorm(config.d_model, eps=1e-5)
        self.mixer = BidirectionalGLA(config)
        self.ffn_norm = RMSNorm(config.d_model, eps=1e-5)
        self.ffn = FeedForward(config.d_model)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [B, N, d] -> [B, N, d]."""
        x = x + self.mixer(self.mixer_norm(x), grid)
        return x + self.ffn(self.ffn_norm(x))


class ViG(VisionClassifier):
    """ViG classifier: bidirectional GLA blocks over patch tokens, mean-pooled."""

    architecture = "vig"
    config_class = ViGConfig

    def __init__(self, config: ViGConfig | None = None) -> None:
        super().__init__(config)
        for block in self.blocks:
            block.mixer.reset_parameters()

    def build_block(self) -> nn.Module:
        """A ``ViGBlock``."""
        return ViGBlock(self.config)
