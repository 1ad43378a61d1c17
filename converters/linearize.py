"""Softmax Transformer (GPT) -> linear-time network (GLA or GAM): carry the weights over, match
each layer's attention output (attention transfer), then a short fine-tune.

1. **Carry over** (``carry_weights``): the target has the source's width, depth and heads (GLA
   with ``expand_k = 1`` so q/k keep the Transformer's width). Every module whose name and shape
   match is copied: embeddings, norms, FFNs and, for GLA, ``q/k/v/o_proj``. GLA has no position
   table; the mean of the source's positions is folded into the token embedding (tied head:
   adding one vector to every row shifts all logits of a token equally, the softmax ignores it).
2. **Gates** (``init_gla_gates``): ``g = logsigmoid(W_2 W_1 x + b) / 16``. ``W_2 = 0`` so the
   gate starts data-independent, and ``b`` gives each key channel of a head its own half-life,
   log-spaced from 1 to 256 tokens (``b = logit(2^(-16/h))``, the 1/16 normalizer included).
   Softmax heads of a small byte model are mostly local, which a linear map without decay cannot
   express; fast channels give the transfer a local window, slow ones the long context.
3. **Attention transfer** (``transfer_attention``, LoLCATs/Hedgehog's stage 1): the source runs
   on calibration windows; each target mixer gets the source's normalized block input and is
   trained on the MSE to the source attention's output (per layer, relative to its mean square),
   every mixer parameter trainable, the rest frozen.
4. **Fine-tune** (``finetune``): every weight, next-token cross-entropy on the training split
   mixed with the KL divergence to the source's next-token distribution (weight 0.5).

Measured on prose (GPT d_model 128, 2 layers, 4 heads, context 128, trained 1500 steps of
16x128 bytes: 2.281 BPC on the first 10k held-out chars; budget 100 transfer + 200 fine-tune
steps of 4x128 bytes = 5 % of the source's tokens; streaming BPC of the GLA):
- gates: multi-scale 3.58 after transfer, 2.358 after fine-tune; all near 1 (``b = 4``,
  half-life ~700 tokens) 4.01 and 2.401.
- transfer training only q/k/gates/output gate: relative MSE 0.48/0.32, training every mixer
  weight 0.33/0.33 (at 16x128 per step); passing the softmax output through at the start
  (RMSNorm weight = the source's per-channel RMS, output gate regressed to ~1) made the
  starting MSE 2.3 (worse than 0) and the end no better, so the GLA's own output gate init stays.
- 4 windows per step instead of 16 (same tokens, 4x the steps) 2.389 vs 2.61; fine-tune lr
  1e-3 (2e-3: 2.437, 5e-4: 2.370); the KL term 2.358 vs 2.389 without; the folded positions
  2.358 vs 2.367 without. Fine-tune alone (no transfer, same tokens) 2.98.

GAM's mixer (depthwise causal convolution plus a memory bank read by the token's own vector)
cannot express attention over the context: only embeddings, positions, norms and FFNs carry
over, its mixer is distilled towards the attention output, and it stays well behind.

User models: ``gpt_from_exported`` reads a ``torch.export`` program of a pre-norm causal
Transformer LM built from ``nn.TransformerEncoderLayer`` or ``nn.MultiheadAttention`` blocks
into the GPT layout, checks that the GPT reproduces its logits, and refuses anything else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.errors import ConversionError
from ganglion.models.recipes.lm_training import (
    BETAS,
    GRAD_CLIP,
    heldout_bpc,
    make_optimizer,
    warmup_cosine,
)
from ganglion.models.recipes.text import Corpus, random_windows
from ganglion.models.sequence.base import SequenceModel
from ganglion.models.sequence.gam import GAMLM, GAMConfig
from ganglion.models.sequence.gla import GLALM, GLAConfig
from ganglion.models.sequence.gpt import GPT

TARGETS = ("gla", "gam")
GATE_HALF_LIVES = (1.0, 256.0)  # tokens: the fastest and slowest key channel of a GLA head
KL_WEIGHT = 0.5  # fine-tune loss: (1 - w) cross-entropy + w KL(source || target)
LAYER_STATE = {"gla": "S", "gam": "conv"}  # each layer's mixer state in the target's state
MSE_WINDOWS = 8  # held-out windows on which the per-layer attention error is reported
Progress = Callable[[str, int, float], None]  # (stage, step, loss)


@dataclass
class StageQuality:
    """Held-out quality at one stage of the conversion."""

    bpc: float  # bits per character
    perplexity: float  # per character: 2 ** bpc


@dataclass
class LinearizationReport:
    """What ``linearize`` did, the quality at each stage and the tokens it spent."""

    target: str  # "gla" | "gam"
    corpus: str
    eval_chars: int | None  # held-out characters scored (None: all)
    source: StageQuality
    carried: StageQuality  # weights carried over, before the attention transfer
    transferred: StageQuality  # after the attention transfer
    finetuned: StageQuality | None  # after the fine-tune (None: no fine-tune)
    attention_mse: dict[str, dict[str, float]]  # per layer: relative MSE before/after transfer
    distill_steps: int
    finetune_steps: int
    batch: int  # windows per step (both stages)
    length: int  # tokens per window
    distill_tokens: int
    finetune_tokens: int
    tokens_spent: int
    source_tokens: int | None  # the source's training tokens, if known
    token_fraction: float | None  # tokens_spent / source_tokens
    distill_seconds: float
    distill_cpu_seconds: float
    finetune_seconds: float
    finetune_cpu_seconds: float
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Target model and weights carried over.


def target_model(source: GPT, to: str) -> GLALM | GAMLM:
    """A fresh GLA (``expand_k = 1``) or GAM LM of the source's vocabulary, width and depth."""
    c = source.config
    if to == "gla":
        return GLALM(GLAConfig(c.vocab_size, c.d_model, c.n_layers, c.n_heads, expand_k=1.0))
    if to == "gam":
        config = GAMConfig(c.vocab_size, c.d_model, c.n_layers, 2 * c.d_model, context=c.context)
        return GAMLM(config)
    raise ConversionError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")


@torch.no_grad()
def carry_weights(source: GPT, target: GLALM | GAMLM) -> list[str]:
    """Copy every tensor whose name and shape match from ``source`` into ``target``; a GLA
    (no positions) gets the mean position folded into its token embedding. Returns the names
    copied."""
    own = target.state_dict()
    carried = []
    for name, tensor in source.state_dict().items():
        if name in own and own[name].shape == tensor.shape:
            own[name].copy_(tensor)
            carried.append(name)
    if "pos_embed.weight" not in own:
        own["embed.weight"] += source.pos_embed.weight.mean(0)
    return carried


@torch.no_grad()
def init_gla_gates(model: GLALM, half_lives: tuple[float, float] = GATE_HALF_LIVES) -> None:
    """Data-independent forget gates at the start: per key channel of each head a half-life
    log-spaced over ``half_lives`` (tokens), ``W_2 = 0``."""
    c = model.config
    per_head = c.key_dim // c.n_heads
    lo, hi = (math.log(h) for h in half_lives)
    half_life = torch.exp(torch.linspace(lo, hi, per_head))
    kept = 2.0 ** (-c.gate_normalizer / half_life)  # sigmoid(b) = decay per token ** tau
    bias = torch.log(kept) - torch.log1p(-kept)
    for block in model.blocks:
        block.mixer.gk_up.weight.zero_()
        block.mixer.gk_up.bias.copy_(bias.repeat(c.n_heads))


# ---------------------------------------------------------------------------------------------
# Attention transfer.


def _layer_states(model: GLALM | GAMLM, batch: int) -> list[torch.Tensor]:
    """Each layer's fresh mixer state (``l{i}.S`` or ``l{i}.conv``), in layer order."""
    state = model.init_state(batch)
    name = LAYER_STATE[model.architecture]
    return [state[f"l{i}.{name}"] for i in range(len(model.blocks))]


@torch.no_grad()
def attention_io(source: GPT, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the source attention's input (the normalized block input) and its output
    ``[B, T, d]`` on ``ids`` ``[B, T]``."""
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, result: tuple) -> None:
        inputs.append(args[0])
        outputs.append(result[0])

    hooks = [block.mixer.register_forward_hook(record) for block in source.blocks]
    try:
        source(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs, outputs


def mixer_outputs(target: GLALM | GAMLM, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each target mixer's output on the source's attention inputs, from a fresh state."""
    states = _layer_states(target, inputs[0].shape[0])
    return [block.mixer(x, s)[0] for block, x, s in zip(target.blocks, inputs, states, strict=True)]


def relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> torch.Tensor:
    """Per layer ``mean((got - want)^2) / mean(want^2)`` ``[L]``."""
    return torch.stack(
        [F.mse_loss(g, w) / w.square().mean() for g, w in zip(got, want, strict=True)]
    )


@torch.no_grad()
def attention_errors(source: GPT, target: GLALM | GAMLM, ids: torch.Tensor) -> list[float]:
    """Per layer, the target mixer's relative MSE to the source attention's output on ``ids``."""
    inputs, outputs = attention_io(source, ids)
    return relative_errors(mixer_outputs(target, inputs), outputs).tolist()


def _train_loop(
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_of: Callable[[], torch.Tensor],
    on_step: Callable[[int, float], None] | None,
) -> None:
    """``steps`` optimizer steps on ``loss_of()``: warm-up then cosine, gradient clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    for step in range(steps):
        loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))


def transfer_attention(
    source: GPT,
    target: GLALM | GAMLM,
    data: np.ndarray,
    steps: int,
    batch: int,
    length: int,
    lr: float = 3e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> None:
    """Train every target mixer on the summed per-layer relative MSE to the source attention's
    output, on random windows of ``data``; everything but the mixers stays frozen."""
    rng = np.random.default_rng(seed)
    mixers = [p for block in target.blocks for p in block.mixer.parameters()]
    frozen = {p: p.requires_grad for p in target.parameters()}
    for p in target.parameters():
        p.requires_grad_(False)
    for p in mixers:
        p.requires_grad_(True)

    def loss_of() -> torch.Tensor:
        ids = torch.from_numpy(random_windows(data, batch, length - 1, rng))
        inputs, outputs = attention_io(source, ids.to(_device(source)))
        return relative_errors(mixer_outputs(target, inputs), outputs).sum()

    target.train()
    try:
        optimizer = torch.optim.AdamW(mixers, lr=lr, betas=BETAS, weight_decay=0.0)
        _train_loop(optimizer, steps, loss_of, progress)
    finally:
        for p, wanted in frozen.items():
            p.requires_grad_(wanted)
        target.eval()


def finetune(
    source: GPT,
    target: SequenceModel,
    data: np.ndarray,
    steps: int,
    batch: int,
    length: int,
    lr: float = 1e-3,
    kl_weight: float = KL_WEIGHT,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> None:
    """Train every target weight on ``(1 - w)`` next-token cross-entropy plus ``w`` KL divergence
    from the source's next-token distribution, on random windows of ``data``."""
    rng = np.random.default_rng(seed)
    source.eval()

    def loss_of() -> torch.Tensor:
        windows = torch.from_numpy(random_windows(data, batch, length, rng)).to(_device(source))
        logits, _ = target(windows[:, :-1])
        logits = logits.flatten(0, 1)
        loss = F.cross_entropy(logits, windows[:, 1:].flatten())
        if kl_weight:
            with torch.no_grad():
                teacher = F.log_softmax(source(windows[:, :-1])[0].flatten(0, 1), -1)
            kl = F.kl_div(
                F.log_softmax(logits, -1), teacher, log_target=True, reduction="batchmean"
            )
            loss = (1 - kl_weight) * loss + kl_weight * kl
        return loss

    target.train()
    try:
        _train_loop(make_optimizer(target, lr), steps, loss_of, progress)
    finally:
        target.eval()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _quality(model: SequenceModel, corpus: Corpus, eval_chars: int | None) -> StageQuality:
    bpc = heldout_bpc(model, corpus, eval_chars)
    return StageQuality(bpc=bpc, perplexity=2.0**bpc)


def linearize(
    source: GPT,
    to: str,
    corpus: Corpus,
    distill_steps: int = 100,
    finetune_steps: int = 200,
    *,
    batch: int = 4,
    length: int = 128,
    distill_lr: float = 3e-3,
    finetune_lr: float = 1e-3,
    kl_weight: float = KL_WEIGHT,
    gate_half_lives: tuple[float, float] = GATE_HALF_LIVES,
    eval_chars: int | None = None,
    source_tokens: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[GLALM | GAMLM, LinearizationReport]:
    """Convert a trained GPT into a GLA or GAM language model (module docstring).

    Args:
        source: the trained softmax Transformer (left unchanged).
        to: "gla" or "gam".
        corpus: calibration and fine-tune text (training split), scoring (held-out split).
        distill_steps: attention-transfer steps; finetune_steps: fine-tune steps.
        batch, length: windows per step and tokens per window (both stages; ``length`` is cut
            to the source's context).
        distill_lr, finetune_lr: peak learning rates; kl_weight: the fine-tune's KL weight.
        gate_half_lives: GLA's initial gate half-lives, fastest and slowest channel (tokens).
        eval_chars: held-out characters scored at each stage (None: all).
        source_tokens: tokens the source was trained on, for the report's token fraction.
        seed: seeds the target's fresh weights and every window sampler.
        progress: called as ``progress(stage, step, loss)``, stage "transfer" or "fine-tune".

    Returns:
        The converted model (eval mode) and a ``LinearizationReport``. Raises ConversionError for
        a source that is not a GPT, an unknown target or non-positive sizes.
    """
    if not isinstance(source, GPT):
        raise ConversionError(f"expected a GPT (softmax Transformer), got {type(source).__name__}")
    if distill_steps < 0 or finetune_steps < 0 or batch < 1 or length < 2:
        raise ConversionError(
            "distill and fine-tune steps must be >= 0, batch >= 1 and length >= 2, got "
            f"{distill_steps}, {finetune_steps}, {batch}, {length}"
        )
    length = min(length, source.context)
    torch.manual_seed(seed)
    target = target_model(source, to).to(_device(source))
    carry_weights(source, target)
    if isinstance(target, GLALM):
        init_gla_gates(target, gate_half_lives)
    source.eval()
    target.eval()
    rng = np.random.default_rng(seed + 2)
    probe = torch.from_numpy(random_windows(corpus.heldout, MSE_WINDOWS, length - 1, rng))
    probe = probe.to(_device(source))
    before = attention_errors(source, target, probe)
    source_quality = _quality(source, corpus, eval_chars)
    carried = _quality(target, corpus, eval_chars)

    def stage(name: str) -> Callable[[int, float], None] | None:
        return None if progress is None else lambda step, loss: progress(name, step, loss)

    clock, cpu = time.perf_counter(), time.process_time()
    transfer_attention(
        source,
        target,
        corpus.train,
        distill_steps,
        batch,
        length,
        distill_lr,
        seed,
        stage("transfer"),
    )
    distill_seconds, distill_cpu = time.perf_counter() - clock, time.process_time() - cpu
    after = attention_errors(source, target, probe)
    transferred = _quality(target, corpus, eval_chars)
    clock, cpu = time.perf_counter(), time.process_time()
    finetune(
        source,
        target,
        corpus.train,
        finetune_steps,
        batch,
        length,
        finetune_lr,
        kl_weight,
        seed + 1,
        stage("fine-tune"),
    )
    finetune_seconds, finetune_cpu = time.perf_counter() - clock, time.process_time() - cpu
    finetuned = _quality(target, corpus, eval_chars) if finetune_steps else None
    distill_tokens = distill_steps * batch * length
    finetune_tokens = finetune_steps * batch * length
    spent = distill_tokens + finetune_tokens
    report = LinearizationReport(
        target=to,
        corpus=corpus.name,
        eval_chars=eval_chars,
        source=source_quality,
        carried=carried,
        transferred=transferred,
        finetuned=finetuned,
        attention_mse={
            f"l{i}": {"before": b, "after": a}
            for i, (b, a) in enumerate(zip(before, after, strict=True))
        },
        distill_steps=distill_steps,
        finetune_steps=finetune_steps,
        batch=batch,
        length=length,
        distill_tokens=distill_tokens,
        finetune_tokens=finetune_tokens,
        tokens_spent=spent,
        source_tokens=source_tokens,
        token_fraction=spent / source_tokens if source_tokens else None,
        distill_seconds=distill_seconds,
        distill_cpu_seconds=distill_cpu,
        finetune_seconds=finetune_seconds,
        finetune_cpu_seconds=finetune_cpu,
        options={
            "distill_lr": distill_lr,
            "finetune_lr": finetune_lr,
            "kl_weight": kl_weight,
            "gate_half_lives": list(gate_half_lives) if to == "gla" else None,
            "seed": seed,
        },
    )
    return target.eval(), report
