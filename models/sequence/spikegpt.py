"""SpikeGPT: RWKV-4 blocks whose two branch outputs pass through LIF neurons before the residual.

Build order: config → spike function (Heaviside, ATan surrogate) → spiking modules (LIF, binary
embedding) → SpikingBlock → SpikeGPT. TimeMix and ChannelMix are RWKV's (``rwkv.py``).

Block: ``x = x + LIF(TimeMix(LN(x)))``, then ``x = x + LIF(ChannelMix(LN(x)))``. The LIF time
axis is the token position, so each neuron's membrane is recurrent state: ``l{i}.att_lif_v`` and
``l{i}.ffn_lif_v`` (``[B, d_model]`` fp32), beside RWKV's per-layer state.

LIF (SpikeGPT's, with per-channel threshold ``θ`` and amplitude ``A``; ``θ = A = 1`` is SpikeGPT)::

    V ← V + (X − V)/τ        evaluated as V·(1 − 1/τ) + X·(1/τ) (exact for τ = 2)
    S = H(V − θ)             H(z) = 1 if z > 0 else 0; gradient: ATan surrogate, α = 2
    V ← V·(1 − S)            hard reset to 0
    out = A·S

Spike accounting: set ``model.record_spikes = True``; every forward/step afterwards adds to each
spiking module's spike and neuron-step counts, read with ``spike_stats()`` and cleared with
``reset_spike_stats()``. In this block no matmul reads spikes: each spike is accumulated once
into the residual stream (fan-out 1, an addition), and LayerNorm turns the stream back into
floats before the next projection; the binary embedding's spikes feed ``ln0`` the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ganglion.kernels.lif import lif_scan
from ganglion.models.sequence.rwkv import RWKV, Block, LayerState, RWKVConfig, wkv_of

ATAN_ALPHA = 2.0  # sharpness of the ATan surrogate gradient


@dataclass
class SpikeGPTConfig(RWKVConfig):
    """Hyper-parameters of a SpikeGPT LM: RWKV's, plus the spiking parts."""

    binary_embedding: bool = True  # Heaviside(embedding) as in SpikeGPT; False: float embedding
    tau: float = 2.0  # LIF membrane time constant, in tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.binary_embedding, bool):
            raise ValueError(
                f"binary_embedding must be true or false, got {self.binary_embedding!r}"
            )
        number = isinstance(self.tau, int | float) and not isinstance(self.tau, bool)
        if not (number and math.isfinite(self.tau) and self.tau >= 1.0):
            raise ValueError(
                f"tau must be a finite number >= 1 (a decay in [0, 1)), got {self.tau!r}"
            )


class ATanSpike(torch.autograd.Function):
    """Heaviside ``z > 0`` forward; backward ``α / (2 (1 + (π/2·α·z)²))`` (SpikingJelly's ATan)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad * ATAN_ALPHA / (2 * (1 + (math.pi / 2 * ATAN_ALPHA * z).square()))


def spike(z: torch.Tensor) -> torch.Tensor:
    """Binary spikes ``z > 0``, with the ATan surrogate gradient when a gradient is needed
    (inference stays plain tensor ops, so graph exporters never meet the autograd Function)."""
    if torch.is_grad_enabled() and z.requires_grad:
        return ATanSpike.apply(z)
    return (z > 0).to(z.dtype)


class SpikingModule(nn.Module):
    """A module that emits spikes and, while ``record`` is set, counts them."""

    drives = ""  # what reads this module's spikes (for synaptic-operation counts)
    fan_out = 1  # operations per spike in that reader

    def __init__(self) -> None:
        super().__init__()
        self.record = False
        self.spikes = 0  # spikes emitted while recording
        self.neuron_steps = 0  # neurons × tokens evaluated while recording

    def count(self, spikes: torch.Tensor) -> None:
        """Add a tensor of 0/1 spikes to the counts (when recording)."""
        if self.record:
            self.spikes += int(spikes.detach().sum())
            self.neuron_steps += spikes.numel()


class LIF(SpikingModule):
    """SpikeGPT's LIF neurons over the token axis, one per channel (equations: module doc)."""

    drives = "residual add"

    def __init__(self, channels: int, tau: float) -> None:
        super().__init__()
        self.decay = 1.0 - 1.0 / tau
        self.gain = 1.0 / tau
        # Per-channel; not trained by default (the converter calibrates them).
        self.threshold = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.amplitude = nn.Parameter(torch.ones(channels), requires_grad=False)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input current ``x`` ``[B, T, C]`` or ``[B, C]``, membrane ``v`` ``[B, C]`` ->
        (``amplitude·spikes`` shaped like ``x``, membrane after the last token)."""
        if x.dim() == 2:
            spikes, v = self.update(x, v)
        elif torch.is_grad_enabled() and (
            x.requires_grad or v.requires_grad or self.threshold.requires_grad
        ):
            steps = []
            for t in range(x.shape[1]):
                s_t, v = self.update(x[:, t], v)
                steps.append(s_t)
            spikes = torch.stack(steps, dim=1) if steps else torch.zeros_like(x)
        else:
            spikes, v = self.scan(x, v)
        self.count(spikes)
        return spikes * self.amplitude, v

    def update(self, x_t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: ``x_t``, ``v`` ``[B, C]`` -> (spikes, new membrane); differentiable."""
        v = v * self.decay + x_t * self.gain
        s = spike(v - self.threshold)
        return s, v * (1 - s)

    def scan(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference over ``x`` ``[B, T, C]`` with ``kernels/lif`` (same arithmetic, no grad)."""
        channels = x.shape[-1]
        decay = torch.full((channels,), self.decay, device=x.device)
        zero = torch.zeros(channels, device=x.device)
        current = (x * self.gain).transpose(0, 1).contiguous()  # [T, B, C]
        spikes, v = lif_scan(current, v, decay, self.threshold.detach(), zero, zero, reset="zero")
        return spikes.transpose(0, 1), v


class BinaryEmbedding(SpikingModule):
    """SpikeGPT's spiking embedding: ``H(embedding)`` with the ATan surrogate gradient."""

    drives = "layernorm ln0"

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Embedding vectors (any shape) -> 0/1 spikes of the same shape."""
        spikes = spike(e)
        self.count(spikes)
        return spikes


class SpikingBlock(Block):
    """``x = x + LIF(TimeMix(LN(x)))``, then ``x = x + LIF(ChannelMix(LN(x)))``."""

    state_names = (*Block.state_names, "att_lif_v", "ffn_lif_v")

    def __init__(self, config: SpikeGPTConfig, layer: int) -> None:
        super().__init__(config, layer)
        self.att_lif = LIF(config.d_model, config.tau)
        self.ffn_lif = LIF(config.d_model, config.tau)

    def forward(self, x: torch.Tensor, s: LayerState) -> tuple[torch.Tensor, LayerState]:
        """``x`` ``[B, T, C]`` or ``[B, C]`` and this layer's state -> (``x``, new state)."""
        h, att_shift, (a, b, p) = self.att(self.ln1(x), s["att_shift"], wkv_of(s))
        h, att_v = self.att_lif(h, s["att_lif_v"])
        x = x + h
        h, ffn_shift = self.ffn(self.ln2(x), s["ffn_shift"])
        h, ffn_v = self.ffn_lif(h, s["ffn_lif_v"])
        x = x + h
        return x, {
            "att_shift": att_shift,
            "ffn_shift": ffn_shift,
            "wkv_a": a,
            "wkv_b": b,
            "wkv_p": p,
            "att_lif_v": att_v,
            "ffn_lif_v": ffn_v,
        }


class SpikeGPT(RWKV):
    """SpikeGPT LM: (binary) embedding → LayerNorm → spiking blocks → LayerNorm → head.

    Same faces as ``RWKV``; ``record_spikes`` and ``spike_stats`` add spike accounting.
    """

    architecture = "spikegpt"
    config_class = SpikeGPTConfig
    block_class = SpikingBlock
    config: SpikeGPTConfig

    def __init__(self, config: SpikeGPTConfig | None = None) -> None:
        super().__init__(config)
        self.emb_spikes = BinaryEmbedding() if self.config.binary_embedding else None

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> ``ln0`` of the embedding (its spikes, with a binary embedding)."""
        e = self.emb(ids)
        return self.ln0(e if self.emb_spikes is None else self.emb_spikes(e))

    def spiking_modules(self) -> dict[str, SpikingModule]:
        """Every spiking module by name: ``emb`` (binary embedding), ``l{i}.att_lif``, ..."""
        found: dict[str, SpikingModule] = {}
        if self.emb_spikes is not None:
            found["emb"] = self.emb_spikes
        for i, block in enumerate(self.blocks):
            found[f"l{i}.att_lif"] = block.att_lif
            found[f"l{i}.ffn_lif"] = block.ffn_lif
        return found

    @property
    def record_spikes(self) -> bool:
        """Whether forward/step count spikes (see ``spike_stats``)."""
        return any(m.record for m in self.spiking_modules().values())

    @record_spikes.setter
    def record_spikes(self, on: bool) -> None:
        for module in self.spiking_modules().values():
            module.record = on

    def reset_spike_stats(self) -> None:
        """Zero every spike and neuron-step count."""
        for module in self.spiking_modules().values():
            module.spikes = module.neuron_steps = 0

    def spike_stats(self) -> dict[str, dict]:
        """Per spiking module: ``spikes``, ``neuron_steps``, ``firing_rate``, what the spikes
        drive (``drives``) and ``fan_out`` (operations per spike there), since the last reset."""
        return {
            name: {
                "spikes": m.spikes,
                "neuron_steps": m.neuron_steps,
                "firing_rate": m.spikes / m.neuron_steps if m.neuron_steps else 0.0,
                "drives": m.drives,
                "fan_out": m.fan_out,
            }
            for name, m in self.spiking_modules().items()
        }
