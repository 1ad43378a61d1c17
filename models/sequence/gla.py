"""Gated linear attention (GLA, Yang et al. 2024) and a GLA language model.

Layer, with fla's conventions (``GatedLinearAttention``): ``d_k = expand_k * d`` (0.5),
``d_v = d``, split into heads; per head, state ``S`` ``[d_k/H, d_v/H]``::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,   o_t = (d_k/H)^-1/2 q_t S_t
    g_t = logsigmoid(x_t W_1 W_2 + b) / 16      (low rank 16: a data-dependent forget gate)
    y_t = W_o [RMSNorm(o_t) * swish(x_t W_g)]   (norm per head, output gate)

The parallel face runs ``gla_chunk`` (chunkwise: Triton on CUDA for inference, the PyTorch
chunkwise reference otherwise); ``step`` runs ``gla_recurrent_step``. The language model's
shell (embedding, LayerNorm pre-norm blocks, GELU FFN, tied head) is the GPT baseline's, so
a converter carries the Transformer's weights across by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.kernels.gla import gla_chunk, gla_recurrent_step
from ganglion.models.manifest import TensorSpec
from ganglion.models.sequence.base import SequenceModel, State, check_ids, inputs_checkable
from ganglion.models.sequence.layers import (
    FeedForward,
    RMSNorm,
    check_int,
    check_parameters,
    check_real,
    check_shell,
    config_from_dict,
    init_gpt2,
)

MAX_EXPAND_K = 4.0  # d_k at most 4 d_model
MAX_GATE_RANK = 4096
MAX_GATE_NORMALIZER = 1e6
MAX_CHUNK = 1024  # tokens per chunk of the parallel form


def check_gla_mixer(config: Any) -> None:
    """Check the GLA mixer's fields of a config (the LM's or ViG's): ``expand_k``,
    ``gate_rank``, ``gate_normalizer`` and ``chunk_size`` (a power of two >= 16), each by name."""
    check_real("expand_k", config.expand_k, 0.0, MAX_EXPAND_K)
    check_int("gate_rank", config.gate_rank, 1, MAX_GATE_RANK)
    check_real("gate_normalizer", config.gate_normalizer, 0.0, MAX_GATE_NORMALIZER)
    check_int("chunk_size", config.chunk_size, 16, MAX_CHUNK)
    if config.chunk_size & (config.chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16, got {config.chunk_size}")


@dataclass
class GLAConfig:
    """Hyper-parameters of ``GLALM``."""

    vocab_size: int = 256  # token ids in [0, vocab_size) (bytes by default)
    d_model: int = 128  # residual width; also d_v, the value/output width of attention
    n_layers: int = 4  # blocks
    n_heads: int = 4  # heads; each holds a [d_k / n_heads, d_model / n_heads] state
    expand_k: float = 0.5  # d_k = expand_k * d_model (fla: 0.5; 1.0 matches a Transformer's q/k)
    gate_rank: int = 16  # rank of the forget gate's projection W_1 W_2
    gate_normalizer: float = 16.0  # tau in g = logsigmoid(.) / tau
    chunk_size: int = 64  # tokens per chunk of the parallel form (a power of two >= 16)

    def __post_init__(self) -> None:
        check_shell(self)
        check_int("n_heads", self.n_heads, 1, self.d_model)
        check_gla_mixer(self)
        key_dim = self.d_model * self.expand_k
        if key_dim != int(key_dim) or int(key_dim) % self.n_heads or self.d_model % self.n_heads:
            raise ValueError(
                f"d_model {self.d_model} and d_k {key_dim:g} must be multiples of "
                f"n_heads {self.n_heads}"
            )
        d, dk, rank = self.d_model, self.key_dim, self.gate_rank
        # q, k (d x d_k each); v, the output gate and o (d x d each); the gate's low-rank pair;
        # a 4d FFN; norms and biases
        block = 2 * d * dk + 3 * d * d + rank * (d + dk) + 8 * d * d + 10 * d + dk
        check_parameters("gla", self.vocab_size, d, self.n_layers, block)

    @property
    def key_dim(self) -> int:
        """d_k, the width of queries and keys over all heads."""
        return int(self.d_model * self.expand_k)


class GatedLinearAttention(nn.Module):
    """One GLA layer: projections, data-dependent forget gate, normalized gated output."""

    def __init__(self, config: GLAConfig) -> None:
        super().__init__()
        d, dk = config.d_model, config.key_dim
        self.n_heads = config.n_heads
        self.gate_normalizer = config.gate_normalizer
        self.chunk_size = config.chunk_size
        self.q_proj = nn.Linear(d, dk, bias=False)
        self.k_proj = nn.Linear(d, dk, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)  # output gate
        self.gk_down = nn.Linear(d, config.gate_rank, bias=False)  # forget gate W_1
        self.gk_up = nn.Linear(config.gate_rank, dk)  # forget gate W_2, b
        self.g_norm = RMSNorm(d // config.n_heads, eps=1e-5)
        self.o_proj = nn.Linear(d, d, bias=False)

    def reset_parameters(self) -> None:
        """fla's initialization: Xavier-uniform with gain 2^-2.5, zero gate bias."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.o_proj):
            nn.init.xavier_uniform_(proj.weight, gain=2**-2.5)
        for proj in (self.gk_down, self.gk_up):
            nn.init.xavier_uniform_(proj.weight, gain=2**-2.5)
        nn.init.zeros_(self.gk_up.bias)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [..., d] -> q, k, g [..., H, d_k/H] and v [..., H, d/H]."""
        gate = F.logsigmoid(self.gk_up(self.gk_down(x))) / self.gate_normalizer
        return tuple(
            t.unflatten(-1, (self.n_heads, -1))
            for t in (self.q_proj(x), self.k_proj(x), self.v_proj(x), gate)
        )

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [..., H, d/H], x [..., d] -> W_o [RMSNorm(o) * swish(W_g x)] [..., d]."""
        gate = F.silu(self.g_proj(x)).unflatten(-1, (self.n_heads, -1))
        return self.o_proj((self.g_norm(o) * gate).flatten(-2))

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, d], state [B, H, K, V] fp32 -> (y [B, T, d], final state)."""
        q, k, v, g = self._heads(x)
        # the Triton kernel is forward-only: autograd goes through the PyTorch reference
        use_kernel = False if torch.is_grad_enabled() else None
        o, final = gla_chunk(q, k, v, g, None, state, True, self.chunk_size, use_kernel)
        return self._output(o, x), final

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, d], state [B, H, K, V] fp32 -> (y [B, d], new state)."""
        q, k, v, g = self._heads(x)
        o, new = gla_recurrent_step(q, k, v, g, state)
        return self._output(o, x), new


class GLABlock(nn.Module):
    """``x + GLA(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, config: GLAConfig) -> None:
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.d_model)
        self.mixer = GatedLinearAttention(config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, d] -> (x, the layer's final state)."""
        mixed, state = self.mixer(self.mixer_norm(x), state)
        x = x + mixed
        return x + self.ffn(self.ffn_norm(x)), state

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, d] -> (x, the layer's new state)."""
        mixed, state = self.mixer.step(self.mixer_norm(x), state)
        x = x + mixed
        return x + self.ffn(self.ffn_norm(x)), state


class GLALM(SequenceModel):
    """GLA language model: constant-size state per layer, no position limit."""

    architecture = "gla"

    def __init__(self, config: GLAConfig | None = None) -> None:
        super().__init__()
        self.config = config or GLAConfig()
        c = self.config
        self.vocab_size = c.vocab_size
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(GLABlock(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        init_gpt2(self, c.n_layers)
        for block in self.blocks:
            block.mixer.reset_parameters()

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [B, T] int64 -> (logits [B, T, V] float32, state after token T-1)."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 2)
        state = self.init_state(ids.shape[0]) if state is None else state
        x = self.embed(ids)
        new: State = {}
        for i, block in enumerate(self.blocks):
            x, new[f"l{i}.S"] = block(x, state[f"l{i}.S"])
        return F.linear(self.norm(x), self.embed.weight), new

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B] int64 -> (logits [B, V] float32, new state); ``state`` is not modified."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 1)
        x = self.embed(ids)
        new: State = {}
        for i, block in enumerate(self.blocks):
            x, new[f"l{i}.S"] = block.step(x, state[f"l{i}.S"])
        return F.linear(self.norm(x), self.embed.weight), new

    def _state_shape(self) -> list[int]:
        c = self.config
        return [c.n_heads, c.key_dim // c.n_heads, c.d_model // c.n_heads]

    def init_state(self, batch: int) -> State:
        """Zero states ``[B, H, K, V]`` fp32."""
        device = self.embed.weight.device
        shape = [batch, *self._state_shape()]
        return {f"l{i}.S": torch.zeros(shape, device=device) for i in range(self.config.n_layers)}

    def state_specs(self) -> list[TensorSpec]:
        """``l{i}.S`` ``[B, H, K, V]`` float32 per layer."""
        shape = [-1, *self._state_shape()]
        return [TensorSpec(f"l{i}.S", shape) for i in range(self.config.n_layers)]

    def to_config(self) -> dict[str, Any]:
        """The ``GLAConfig`` fields and ``architecture``."""
        return {"architecture": self.architecture, **asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GLALM:
        """A freshly initialized model described by ``to_config``'s output."""
        return cls(config_from_dict(GLAConfig, config, cls.architecture))
