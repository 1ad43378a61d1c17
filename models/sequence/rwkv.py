"""RWKV-4-style language model: token-shift mixing, the WKV scan, squared-ReLU channel mixing.

Read top to bottom in build order: config → token shift → TimeMix → ChannelMix → Block → RWKV.

Every module takes either a sequence ``x`` ``[B, T, C]`` (the parallel form: ``wkv_scan`` over
the whole sequence) or one token ``x`` ``[B, C]`` (the recurrent form: ``wkv_step``), with its
recurrent state passed in and returned, never modified in place. So ``RWKV.forward`` and
``RWKV.step`` run the same code and differ only in the rank of ``x``.

State per layer ``i`` (each ``[B, d_model]`` fp32): ``l{i}.att_shift`` and ``l{i}.ffn_shift``
(the previous token's normalized input to TimeMix / ChannelMix), ``l{i}.wkv_a``, ``l{i}.wkv_b``,
``l{i}.wkv_p`` (the WKV numerator, denominator and running max exponent, see ``kernels/wkv``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganglion.kernels.wkv import wkv_initial_state, wkv_scan, wkv_step
from ganglion.models.manifest import TensorSpec
from ganglion.models.sequence.base import SequenceModel, State, check_ids
from ganglion.models.sequence.layers import (
    check_int,
    check_parameters,
    check_shell,
    config_from_dict,
)

MAX_FFN_MULT = 64  # ChannelMix hidden width at most 64 d_model

LayerState = dict[str, torch.Tensor]  # one layer's state, names without the "l{i}." prefix


@dataclass
class RWKVConfig:
    """Hyper-parameters of an RWKV LM (all JSON-able)."""

    vocab_size: int = 256  # token ids in [0, vocab_size); 256 = UTF-8 bytes
    d_model: int = 128  # width of the residual stream and of every WKV channel set
    n_layers: int = 4  # number of blocks (TimeMix + ChannelMix each)
    ffn_mult: int = 4  # ChannelMix hidden width = ffn_mult * d_model
    tie_head: bool = False  # output head reuses the embedding matrix (no separate head weight)

    def __post_init__(self) -> None:
        check_shell(self)
        check_int("ffn_mult", self.ffn_mult, 1, MAX_FFN_MULT)
        if not isinstance(self.tie_head, bool):
            raise ValueError(f"tie_head must be true or false, got {self.tie_head!r}")
        d = self.d_model
        # TimeMix: four d x d projections; ChannelMix: d x hidden twice and d x d; norms, mixes
        block = 5 * d * d + 2 * d * self.ffn_mult * d + 12 * d
        rows = self.vocab_size * (1 if self.tie_head else 2)  # the embedding, and the head
        check_parameters("rwkv", rows, d, self.n_layers, block)


def token_shift(x: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous token's input at every position, and the last input (the next ``prev``).

    ``x`` ``[B, T, C]`` or ``[B, C]``; ``prev`` ``[B, C]`` (the token before ``x`` starts).
    """
    if x.dim() == 2:
        return prev, x
    full = torch.cat([prev[:, None], x], dim=1)  # [B, T+1, C]
    return full[:, :-1], full[:, -1]


def mix(x: torch.Tensor, x_prev: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Per-channel interpolation ``x·μ + x_{t−1}·(1−μ)``."""
    return x * mu + x_prev * (1 - mu)


def channel_ramp(channels: int) -> torch.Tensor:
    """``c / channels`` for each channel ``c``: 0 up to almost 1, ``[C]``."""
    return torch.arange(channels, dtype=torch.float32) / channels


def wkv_of(s: LayerState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The WKV state ``(a, b, p)`` of one layer's state."""
    return s["wkv_a"], s["wkv_b"], s["wkv_p"]


class TimeMix(nn.Module):
    """RWKV-4 time mixing: ``Wo(sigmoid(r) ⊙ WKV(w, u, k, v))`` on token-shifted inputs.

    ``k = Wk·xk``, ``v = Wv·xv``, ``r = Wr·xr`` (bias-free), ``xk = x·μk + x_{t−1}·(1−μk)``
    (same for v and r), ``w = −exp(time_decay)``, ``u = time_first``.
    """

    def __init__(self, d_model: int, layer: int, n_layers: int) -> None:
        super().__init__()
        depth = layer / max(n_layers - 1, 1)  # 0 at the first block, 1 at the last
        shallow = 1.0 - layer / n_layers  # 1 at the first block, 1/n at the last
        ramp = torch.arange(d_model, dtype=torch.float32) / max(d_model - 1, 1)
        # Decay rates spread over channels from long memory (w ≈ −0.007) to almost none
        # (w ≈ −20); deeper layers keep more channels slow.
        self.time_decay = nn.Parameter(-5.0 + 8.0 * ramp ** (0.7 + 1.3 * depth))
        # Current-token bonus around e^u = 0.3, alternated across channels to break symmetry.
        alternate = torch.tensor([((c + 1) % 3 - 1) * 0.5 for c in range(d_model)])
        self.time_first = nn.Parameter(math.log(0.3) + alternate)
        # Early layers look mostly at the current token in high channels and the previous
        # token in low ones; deeper layers lean towards the current token.
        ramp_mix = channel_ramp(d_model)
        self.mix_k = nn.Parameter(ramp_mix**shallow)
        self.mix_v = nn.Parameter(ramp_mix**shallow + 0.3 * depth)
        self.mix_r = nn.Parameter(ramp_mix ** (0.5 * shallow))
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)
        for zero_init in (self.key, self.receptance, self.output):  # start as a gentle average
            nn.init.zeros_(zero_init.weight)
        nn.init.orthogonal_(self.value.weight)

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor, wkv: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """``x`` ``[B, T, C]`` or ``[B, C]``, ``prev`` ``[B, C]``, ``wkv`` = ``(a, b, p)``.

        Returns the output (shape of ``x``), the new ``prev`` and the new WKV state.
        """
        x_prev, last = token_shift(x, prev)
        k = self.key(mix(x, x_prev, self.mix_k))
        v = self.value(mix(x, x_prev, self.mix_v))
        r = self.receptance(mix(x, x_prev, self.mix_r))
        w, u = -torch.exp(self.time_decay), self.time_first
        scan = wkv_step if x.dim() == 2 else wkv_scan
        y, wkv = scan(w, u, k, v, tuple(wkv))
        return self.output(torch.sigmoid(r) * y), last, wkv


class ChannelMix(nn.Module):
    """RWKV-4 channel mixing: ``sigmoid(Wr·xr) ⊙ Wv·relu(Wk·xk)²`` on token-shifted inputs."""

    def __init__(self, d_model: int, layer: int, n_layers: int, ffn_mult: int) -> None:
        super().__init__()
        shallow = 1.0 - layer / n_layers
        self.mix_k = nn.Parameter(channel_ramp(d_model) ** shallow)
        self.mix_r = nn.Parameter(channel_ramp(d_model) ** shallow)
        hidden = ffn_mult * d_model
        self.key = nn.Linear(d_model, hidden, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(hidden, d_model, bias=False)
        nn.init.orthogonal_(self.key.weight, gain=math.sqrt(ffn_mult))  # keep the fan-out norm
        for zero_init in (self.receptance, self.value):  # a block starts as the identity
            nn.init.zeros_(zero_init.weight)

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, C]`` or ``[B, C]``, ``prev`` ``[B, C]`` -> (output, new ``prev``)."""
        x_prev, last = token_shift(x, prev)
        hidden = torch.relu(self.key(mix(x, x_prev, self.mix_k))).square()
        gate = torch.sigmoid(self.receptance(mix(x, x_prev, self.mix_r)))
        return gate * self.value(hidden), last


class Block(nn.Module):
    """``x = x + TimeMix(LN(x))``, then ``x = x + ChannelMix(LN(x))``."""

    state_names: tuple[str, ...] = ("att_shift", "ffn_shift", "wkv_a", "wkv_b", "wkv_p")

    def __init__(self, config: RWKVConfig, layer: int) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.att = TimeMix(d, layer, config.n_layers)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = ChannelMix(d, layer, config.n_layers, config.ffn_mult)

    def forward(self, x: torch.Tensor, s: LayerState) -> tuple[torch.Tensor, LayerState]:
        """``x`` ``[B, T, C]`` or ``[B, C]`` and this layer's state -> (``x``, new state)."""
        h, att_shift, (a, b, p) = self.att(self.ln1(x), s["att_shift"], wkv_of(s))
        x = x + h
        h, ffn_shift = self.ffn(self.ln2(x), s["ffn_shift"])
        x = x + h
        return x, {
            "att_shift": att_shift,
            "ffn_shift": ffn_shift,
            "wkv_a": a,
            "wkv_b": b,
            "wkv_p": p,
        }


class RWKV(SequenceModel):
    """RWKV-4 LM: embedding → LayerNorm → blocks → LayerNorm → head.

    ``forward(ids [B, T], state)`` is the parallel form (``wkv_scan``), ``step(ids [B], state)``
    the recurrent form (``wkv_step``); both return logits and the state after the last token.
    """

    architecture = "rwkv"
    config_class: type[RWKVConfig] = RWKVConfig
    block_class: type[Block] = Block

    def __init__(self, config: RWKVConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        cfg = self.config
        self.vocab_size = cfg.vocab_size
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)  # tiny: ln0 rescales, so it moves fast
        self.ln0 = nn.LayerNorm(cfg.d_model)
        self.blocks = nn.ModuleList(self.block_class(cfg, i) for i in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.head = None if cfg.tie_head else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if self.head is not None:
            gain = 0.5 * math.sqrt(max(cfg.vocab_size / cfg.d_model, 1.0))
            nn.init.orthogonal_(self.head.weight, gain=gain)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape) -> normalized embeddings (shape + ``[d_model]``)."""
        return self.ln0(self.emb(ids))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream -> logits over the vocabulary."""
        x = self.ln_out(x)
        return F.linear(x, self.emb.weight) if self.head is None else self.head(x)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [B, T] int64 -> (logits [B, T, V] float32, state after token T-1)."""
        check_ids(ids, self.vocab_size, 2)
        return self._run(ids, state)

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B] int64 -> (logits [B, V] float32, new state); ``state`` is left unchanged."""
        check_ids(ids, self.vocab_size, 1)
        return self._run(ids, state)

    def _run(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        batch = ids.shape[0]
        state = self.init_state(batch) if state is None else state
        self.check_state(state, batch)
        x = self.embed(ids)
        new_state: State = {}
        for i, block in enumerate(self.blocks):
            prefix = f"l{i}."
            x, layer_state = block(x, {n: state[prefix + n] for n in block.state_names})
            new_state.update({prefix + n: t for n, t in layer_state.items()})
        return self.logits(x), new_state

    def init_state(self, batch: int) -> State:
        """A fresh state: zero token shifts, empty WKV (``p = −1e38``), zero membranes."""
        device = self.emb.weight.device
        d = self.config.d_model
        a, b, p = wkv_initial_state(batch, d, device)
        fresh = {"wkv_a": a, "wkv_b": b, "wkv_p": p}
        return {
            f"l{i}.{n}": fresh[n].clone() if n in fresh else torch.zeros(batch, d, device=device)
            for i, block in enumerate(self.blocks)
            for n in block.state_names
        }

    def state_specs(self) -> list[TensorSpec]:
        """``l{i}.<name>``: ``[-1, d_model]`` float32 for every layer and state tensor."""
        d = self.config.d_model
        return [
            TensorSpec(f"l{i}.{n}", [-1, d], "float32")
            for i, block in enumerate(self.blocks)
            for n in block.state_names
        ]

    def check_state(self, state: State, batch: int) -> None:
        """Raise ValueError unless ``state`` has exactly the declared tensors for ``batch``."""
        specs = self.state_specs()
        missing = sorted({s.name for s in specs} - set(state))
        extra = sorted(set(state) - {s.name for s in specs})
        if missing or extra:
            raise ValueError(f"state tensors missing {missing}, unexpected {extra}")
        shape = (batch, self.config.d_model)
        for spec in specs:
            t = state[spec.name]
            if tuple(t.shape) != shape or t.dtype != torch.float32:
                raise ValueError(
                    f"state {spec.name} must be float32 {list(shape)}, "
                    f"got {t.dtype} {list(t.shape)}"
                )

    def to_config(self) -> dict[str, Any]:
        """The config as a JSON-able dict (with ``architecture``)."""
        return {"architecture": self.architecture, **asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RWKV:
        """A freshly initialized model described by ``to_config``'s output."""
        return cls(config_from_dict(cls.config_class, config, cls.architecture))
