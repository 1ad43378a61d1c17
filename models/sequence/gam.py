"""Gated Associative Memory (GAM, arXiv 2509.00605) as published, as a language model.

Block, on ``x = LN(input)``::

    local  = depthwise causal Conv1d(x), kernel k (left padding k - 1)
    global = softmax(x M^T) M                  (M: a learned bank of ``slots`` vectors)
    g_l, g_g = split(W_g x + b_g)              (Linear d -> 2d)
    out = input + sigmoid(g_l) * local + sigmoid(g_g) * global
    out = out + FFN(LN(out))                   (4d, GELU)

Learned absolute positions (hence a ``context`` limit) and tied embeddings. The global path
reads only the token's own vector, so context reaches a token only through the convolutions.

Recurrent form: per layer, the last ``k - 1`` normalized block inputs (``l{i}.conv``
``[B, k-1, d]``, zeros at the start = the left padding) and the position counter ``t`` ``[B]``.
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

MAX_SLOTS = 1 << 16  # memory bank rows
MAX_KERNEL = 1024  # causal convolution width (its state holds kernel_size - 1 inputs)


@dataclass
class GAMConfig:
    """Hyper-parameters of ``GAMLM``."""

    vocab_size: int = 256  # token ids in [0, vocab_size) (bytes by default)
    d_model: int = 128  # residual width
    n_layers: int = 4  # blocks
    slots: int = 256  # memory bank rows; 2 * d_model gives the mixer a Transformer's 4 d^2
    kernel_size: int = 3  # causal depthwise convolution width k
    context: int = 512  # longest sequence: rows of the learned position table

    def __post_init__(self) -> None:
        check_shell(self, self.context)
        check_int("slots", self.slots, 1, MAX_SLOTS)
        check_int("kernel_size", self.kernel_size, 1, MAX_KERNEL)
        d = self.d_model
        # the depthwise conv, the memory bank, the 2d gate, a 4d FFN, norms and biases
        block = d * (self.kernel_size + 1) + self.slots * d + 2 * d * d + 8 * d * d + 11 * d
        check_parameters("gam", self.vocab_size + self.context, d, self.n_layers, block)


class GatedAssociativeMemory(nn.Module):
    """GAM's mixer: gated sum of a causal local convolution and a memory-bank lookup."""

    def __init__(self, config: GAMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.conv = nn.Conv1d(d, d, config.kernel_size, groups=d)  # padding comes from state
        self.memory = nn.Parameter(torch.empty(config.slots, d))
        self.gate = nn.Linear(d, 2 * d)

    def reset_parameters(self) -> None:
        """The published initialization of the memory bank (Xavier-uniform)."""
        nn.init.xavier_uniform_(self.memory)

    def _fuse(self, x: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """x, local [..., d] -> sigmoid(g_l) * local + sigmoid(g_g) * softmax(x M^T) M."""
        recalled = torch.softmax(x @ self.memory.T, -1) @ self.memory
        g_local, g_global = self.gate(x).chunk(2, -1)
        return torch.sigmoid(g_local) * local + torch.sigmoid(g_global) * recalled

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, d] normalized, window [B, k-1, d] (earlier inputs) -> (y [B, T, d], window)."""
        seq = torch.cat([window, x], 1)  # [B, k-1+T, d]
        local = self.conv(seq.transpose(1, 2)).transpose(1, 2)  # [B, T, d]
        return self._fuse(x, local), seq[:, seq.shape[1] - window.shape[1] :]

    def step(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, d] normalized, window [B, k-1, d] -> (y [B, d], window shifted by one)."""
        seq = torch.cat([window, x[:, None]], 1)  # [B, k, d]
        local = (seq * self.conv.weight[:, 0].T).sum(1) + self.conv.bias
        return self._fuse(x, local), seq[:, 1:]


class GAMBlock(nn.Module):
    """``x + GAM(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, config: GAMConfig) -> None:
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.d_model)
        self.mixer = GatedAssociativeMemory(config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config.d_model)

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, d] -> (x, the layer's new window)."""
        mixed, window = self.mixer(self.mixer_norm(x), window)
        x = x + mixed
        return x + self.ffn(self.ffn_norm(x)), window

    def step(self, x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, d] -> (x, the layer's new window)."""
        mixed, window = self.mixer.step(self.mixer_norm(x), window)
        x = x + mixed
        return x + self.ffn(self.ffn_norm(x)), window


class GAMLM(SequenceModel):
    """GAM language model: a constant-size state of ``k - 1`` vectors per layer."""

    architecture = "gam"

    def __init__(self, config: GAMConfig | None = None) -> None:
        super().__init__()
        self.config = config or GAMConfig()
        c = self.config
        self.vocab_size = c.vocab_size
        self.context = c.context
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_embed = nn.Embedding(c.context, c.d_model)
        self.blocks = nn.ModuleList(GAMBlock(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        init_gpt2(self, c.n_layers)
        for block in self.blocks:
            block.mixer.reset_parameters()

    def _embed(self, ids: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ids [B, T] at positions t, t+1, ... -> token plus position embeddings [B, T, d]."""
        check_context(t, ids.shape[1], self.context)
        pos = t[:, None] + torch.arange(ids.shape[1], device=ids.device)
        return self.embed(ids) + self.pos_embed(pos)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [B, T] int64 -> (logits [B, T, V] float32, state after token T-1)."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 2)
        state = self.init_state(ids.shape[0]) if state is None else state
        x = self._embed(ids, state["t"])
        new: State = {}
        for i, block in enumerate(self.blocks):
            x, new[f"l{i}.conv"] = block(x, state[f"l{i}.conv"])
        new["t"] = state["t"] + ids.shape[1]
        return F.linear(self.norm(x), self.embed.weight), new

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B] int64 -> (logits [B, V] float32, new state); ``state`` is not modified."""
        if inputs_checkable():
            check_ids(ids, self.vocab_size, 1)
        x = self._embed(ids[:, None], state["t"])[:, 0]
        new: State = {}
        for i, block in enumerate(self.blocks):
            x, new[f"l{i}.conv"] = block.step(x, state[f"l{i}.conv"])
        new["t"] = state["t"] + 1
        return F.linear(self.norm(x), self.embed.weight), new

    def init_state(self, batch: int) -> State:
        """Zero windows ``[B, k-1, d]`` (the convolution's left padding) and ``t = 0``."""
        c = self.config
        device = self.embed.weight.device
        window = torch.zeros(batch, c.kernel_size - 1, c.d_model, device=device)
        state = {f"l{i}.conv": window.clone() for i in range(c.n_layers)}
        state["t"] = torch.zeros(batch, dtype=torch.int64, device=device)
        return state

    def state_specs(self) -> list[TensorSpec]:
        """``l{i}.conv`` ``[B, k-1, d]`` float32 per layer, ``t`` ``[B]`` int64."""
        c = self.config
        window = [-1, c.kernel_size - 1, c.d_model]
        specs = [TensorSpec(f"l{i}.conv", window) for i in range(c.n_layers)]
        return [*specs, TensorSpec("t", [-1], "int64")]

    def to_config(self) -> dict[str, Any]:
        """The ``GAMConfig`` fields and ``architecture``."""
        return {"architecture": self.architecture, **asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GAMLM:
        """A freshly initialized model described by ``to_config``'s output."""
        return cls(config_from_dict(GAMConfig, config, cls.architecture))
