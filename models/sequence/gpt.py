"""A GPT-style softmax Transformer: the quadratic-time baseline and the source for linearization.

Pre-norm blocks of causal multi-head attention and a GELU MLP, learned absolute positions (so
a ``context`` limit), tied input/output embeddings. The module names (``mixer.q_proj`` ...
``mixer.o_proj``, ``ffn.up``/``ffn.down``, ``mixer_norm``/``ffn_norm``) are the ones the GLA and
GAM language models use, so a converter carries weights across by name.

Recurrent form: a KV cache per layer that grows by one token per step (state ``l{i}.k``,
``l{i}.v`` ``[B, H, L, D]``) and the position counter ``t`` ``[B]`` int64.

The GLA and GAM models share its shell pieces (``models/sequence/layers.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.manifest import TensorSpec
from ganglion.models.sequence.base import SequenceModel, State, check_ids, inputs_checkable
from ganglion.models.sequence.layers import (
    FeedForward,
    check_context,
    check_int,
    check_parameters,
    check_shell,
    config_from_dict,
    init_gpt2,
)


@dataclass
class GPTConfig:
    """Hyper-parameters of ``GPT``."""

    vocab_size: int = 256  # token ids in [0, vocab_size) (bytes by default)
    d_model: int = 128  # residual width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads; head width d_model // n_heads
    context: int = 512  # longest sequence: rows of the learned position table

    def __post_init__(self) -> None:
        check_shell(self, self.context)
        check_int("n_heads", self.n_heads, 1, self.d_model)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        d = self.d_model  # a block: q, k, v, o (d x d each), a 4d FFN, norms and biases
        check_parameters(
            "gpt", self.vocab_size + self.context, d, self.n_layers, 12 * d * d + 9 * d
        )


class CausalSelfAttention(nn.Module):
    """Multi-head softmax attention over a KV cache followed by the new tokens."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, d], cache [B, H, L, D] -> (y [B, T, d], keys and values [B, H, L+T, D])."""
        q, k, v = (
            proj(x).unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # [B, H, T, D]
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        k = torch.cat([cache_k, k], 2)
        v = torch.cat([cache_v, v], 2)
        length, total = x.shape[1], k.shape[2]
        mask = None  # a single new token sees the whole cache
        if length > 1:
            rows = torch.arange(length, device=x.device) + (total - length)
            mask = torch.arange(total, device=x.device)[None, :] <= rows[:, None]  # [T, L+T]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).flatten(2)), k, v


class GPTBlock(nn.Module):
    """``x + attn(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.d_model)
        self.mixer = CausalSelfAttention(config.d_model, config.n_heads)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model)

    def forward(
        self, x: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, d] and the layer's cache -> (x, new keys, new values)."""
        mixed, k, v = self.mixer(self.mixer_norm(x), cache_k, cache_v)
        x = x + mixed
        return x + self.ffn(self.ffn_norm(x)), k, v


class GPT(SequenceModel):
    """Decoder-only softmax Transformer with a growing KV cache as its recurrent state."""

    architecture = "gpt"

    def __init__(self, config: GPTConfig | None = None) -> None:
        super().__init__()
        self.config = config or GPTConfig()
        c = self.config
        self.vocab_size = c.vocab_size
        self.context = c.context
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_embed = nn.Embedding(c.context, c.d_model)
        self.blocks = nn.ModuleList(GPTBlock(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        init_gpt2(self, c.n_layers)

    def _run(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B, T] after ``state`` -> (logits [B, T, V], new state)."""
        t = state["t"]
        check_context(t, ids.shape[1], self.context)
        pos = t[:, None] + torch.arange(ids.shape[1], device=ids.device)  # [B, T]
        x = self.embed(ids) + self.pos_embed(pos)
        new: State = {}
        for i, block in enumerate(self.blocks):
            x, new[f"l{i}.k"], new[f"l{i}.v"] = block(x, state[f"l{i}.k"], state[f"l{i}.v"])
        new["t"] = t + ids.shape[1]
        return F.linear(self.norm(x), self.embed.weight), new

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [B, T] int64 -> (logits [B, T, V] float32, state after token T-1)."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 2)
        return self._run(ids, self.init_state(ids.shape[0]) if state is None else state)

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B] int64 -> (logits [B, V] float32, new state); ``state`` is not modified."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 1)
        logits, new = self._run(ids[:, None], state)
        return logits[:, 0], new

    def init_state(self, batch: int) -> State:
        """Empty KV caches ``[B, H, 0, D]`` and ``t = 0``."""
        c = self.config
        device = self.embed.weight.device
        empty = torch.zeros(batch, c.n_heads, 0, c.d_model // c.n_heads, device=device)
        state = {f"l{i}.{kv}": empty.clone() for i in range(c.n_layers) for kv in "kv"}
        state["t"] = torch.zeros(batch, dtype=torch.int64, device=device)
        return state

    def state_specs(self) -> list[TensorSpec]:
        """``l{i}.k``/``l{i}.v`` ``[B, H, L, D]`` (L grows) float32, ``t`` ``[B]`` int64."""
        c = self.config
        cache = [-1, c.n_heads, -1, c.d_model // c.n_heads]
        specs = [TensorSpec(f"l{i}.{kv}", cache) for i in range(c.n_layers) for kv in "kv"]
        return [*specs, TensorSpec("t", [-1], "int64")]

    def to_config(self) -> dict[str, Any]:
        """The ``GPTConfig`` fields and ``architecture``."""
        return {"architecture": self.architecture, **asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT:
        """A freshly initialized model described by ``to_config``'s output."""
        return cls(config_from_dict(GPTConfig, config, cls.architecture))
