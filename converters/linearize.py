"""Softmax Transformer (GPT) -> linear-time network (GLA or GAM): carry the weights over, match
each layer's attention output (attention transfer), then a short fine-tune.

1. **Carry over** (``carry_weights``): the target has the source's width, depth and heads (GLA
   with ``expand_k = 1`` so q/k keep the Transformer's width). Every tensor whose name and shape
   match is copied: embeddings, norms, FFNs and, for GLA, ``q/k/v/o_proj``. GLA has no position
   table; the mean of the source's positions is folded into the token embedding (tied head:
   adding one vector to every row shifts all logits of a token equally, the softmax ignores it).
2. **Gates** (``init_gla_gates``): ``g = logsigmoid(W_2 W_1 x + b) / 16``. ``W_2 = 0`` so the
   gate starts data-independent, and ``b`` gives each key channel of a head its own half-life,
   log-spaced from 1 to 256 tokens (``sigmoid(b) = 2^(-16/h)``, the 1/16 normalizer included).
   Softmax heads of a small byte model are mostly local, which a linear map without decay cannot
   express; fast channels give it a local window, slow ones the long context.
3. **Attention transfer** (``transfer_attention``, LoLCATs/Hedgehog's stage 1): the source runs
   on calibration windows; each target mixer gets the source's normalized block input and is
   trained on the MSE to the source attention's output (per layer, relative to its mean square),
   every mixer parameter trainable, the rest frozen.
4. **Fine-tune** (``finetune``): every weight, next-token cross-entropy on the training split
   mixed with the KL divergence to the source's next-token distribution (weight 0.5).

Measured on prose: GPT d_model 128, 2 layers, 4 heads, context 128, 1500 steps of 16 x 128
bytes, 1.868 BPC on the whole held-out split; conversion budget 300 steps of 4 x 128 bytes
(5 % of the source's tokens); GLA scored streaming. Final BPC (after transfer and fine-tune):
- 100 transfer + 200 fine-tune steps 1.949; 300 fine-tune steps without transfer 1.946;
  200 + 100 2.000. The transfer alone takes the carried model from 5.86 to 2.89 (relative
  MSE 0.30 / 0.10 per layer), but with the KL term the fine-tune recovers as much without it.
  With cross-entropy only the transfer does help: 1.978 with, 2.004 without.
- gates all near 1 (half-life 700 tokens): 2.046 (2.019 without transfer): the spread matters.
- On the first 10k held-out chars (source 2.281): every mixer weight trainable in the transfer
  (vs q/k/gates only) 3.16 vs 4.30 after transfer at 16 x 128 bytes per step; 4 windows per
  step instead of 16 (4x the steps, same tokens) 2.389 vs 2.61; fine-tune lr 1e-3 (2e-3: 2.437,
  5e-4: 2.370); folded positions 2.358 vs 2.367 without. Starting the GLA output at the softmax
  output (RMSNorm weight = its per-channel RMS, output gate regressed to ~1) made the starting
  MSE 2.3, worse than outputting 0 (1.0), so the GLA's own output-gate init stays.

GAM's mixer (depthwise causal convolution plus a memory bank read by the token's own vector)
cannot express attention over the context: only embeddings, positions, norms and FFNs carry
over and its mixer is distilled towards the attention output (relative MSE 0.88 / 0.77 at
best). That transfer hurts: 2.469 BPC after transfer and fine-tune, 2.235 fine-tuned without
(``benchmarks/linearize_lm.py``); GAM stays 30-50 % above the source's perplexity.

ViT -> ViG (``linearize_vision``) is the same recipe for ``models/vision``. On digits (ViT
d_model 64, 4 layers, 30 epochs: 95.3 % test accuracy): carried 6 %, after 200 transfer steps
of 64 images 90.0 %, after 5 fine-tune epochs 94.2 %; fine-tuning 10 epochs without the
transfer reaches 81.4 %.

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
from ganglion.models.recipes.digits import DigitsData, accuracy
from ganglion.models.recipes.lm_training import (
    BETAS,
    GRAD_CLIP,
    heldout_bpc,
    make_optimizer,
    warmup_cosine,
)
from ganglion.models.recipes.text import Corpus, random_windows
from ganglion.models.recipes.vision_training import train_vision
from ganglion.models.sequence.base import SequenceModel
from ganglion.models.sequence.gam import GAMLM, GAMConfig
from ganglion.models.sequence.gla import GLALM, GLAConfig
from ganglion.models.sequence.gpt import GPT, GPTConfig
from ganglion.models.vision.vig import ViG, ViGConfig
from ganglion.models.vision.vit import ViT

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
    shape = {"vocab_size": c.vocab_size, "d_model": c.d_model, "n_layers": c.n_layers}
    if to == "gla":
        return GLALM(GLAConfig(**shape, n_heads=c.n_heads, expand_k=1.0))
    if to == "gam":
        return GAMLM(GAMConfig(**shape, slots=2 * c.d_model, context=c.context))
    raise ConversionError(f"the target must be one of {', '.join(TARGETS)}, got {to!r}")


@torch.no_grad()
def carry_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy every tensor whose name and shape match from ``source`` into ``target``; a target
    without positions (GLA) gets the mean position folded into its token embedding. Returns
    the names copied."""
    own = target.state_dict()
    carried = []
    for name, tensor in source.state_dict().items():
        if name in own and own[name].shape == tensor.shape:
            own[name].copy_(tensor)
            carried.append(name)
    if not any(name.startswith("pos_embed") for name in own):
        own["embed.weight"] += source.pos_embed.weight.mean(0)
    return carried


def gate_bias(
    per_head: int, n_heads: int, normalizer: float, half_lives: tuple[float, float]
) -> torch.Tensor:
    """Bias ``b`` ``[n_heads * per_head]`` of ``g = logsigmoid(b) / normalizer`` giving each key
    channel of a head a half-life log-spaced over ``half_lives`` (tokens)."""
    lo, hi = (math.log(h) for h in half_lives)
    half_life = torch.exp(torch.linspace(lo, hi, per_head))
    kept = 2.0 ** (-normalizer / half_life)  # sigmoid(b) = (decay per token) ** normalizer
    return (torch.log(kept) - torch.log1p(-kept)).repeat(n_heads)


@torch.no_grad()
def init_gla_gates(model: GLALM, half_lives: tuple[float, float] = GATE_HALF_LIVES) -> None:
    """Data-independent forget gates at the start: per key channel of each head a half-life
    log-spaced over ``half_lives`` (tokens), ``W_2 = 0``."""
    c = model.config
    bias = gate_bias(c.key_dim // c.n_heads, c.n_heads, c.gate_normalizer, half_lives)
    for block in model.blocks:
        block.mixer.gk_up.weight.zero_()
        block.mixer.gk_up.bias.copy_(bias)


# ---------------------------------------------------------------------------------------------
# Attention transfer.


def _layer_states(model: GLALM | GAMLM, batch: int) -> list[torch.Tensor]:
    """Each layer's fresh mixer state (``l{i}.S`` or ``l{i}.conv``), in layer order."""
    state = model.init_state(batch)
    name = LAYER_STATE[model.architecture]
    return [state[f"l{i}.{name}"] for i in range(len(model.blocks))]


@torch.no_grad()
def attention_io(
    source: nn.Module, inputs: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block of ``source`` (GPT or ViT), its attention's input (the normalized block input)
    and output ``[B, T, d]``, running ``source`` on ``inputs``."""
    mixer_in: list[torch.Tensor] = []
    mixer_out: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, result: torch.Tensor | tuple) -> None:
        mixer_in.append(args[0])
        mixer_out.append(result[0] if isinstance(result, tuple) else result)  # GPT: (y, k, v)

    hooks = [block.mixer.register_forward_hook(record) for block in source.blocks]
    try:
        source(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return mixer_in, mixer_out


def mixer_outputs(target: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each target mixer's output on the source's attention inputs (token models: from a fresh
    state; ViG: on its token grid)."""
    if isinstance(target, ViG):
        grid = (target.config.grid, target.config.grid)
        return [block.mixer(x, grid) for block, x in zip(target.blocks, inputs, strict=True)]
    states = _layer_states(target, inputs[0].shape[0])
    return [block.mixer(x, s)[0] for block, x, s in zip(target.blocks, inputs, states, strict=True)]


def relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> torch.Tensor:
    """Per layer ``mean((got - want)^2) / mean(want^2)`` ``[L]``."""
    return torch.stack(
        [F.mse_loss(g, w) / w.square().mean() for g, w in zip(got, want, strict=True)]
    )


@torch.no_grad()
def attention_errors(source: nn.Module, target: nn.Module, inputs: torch.Tensor) -> list[float]:
    """Per layer, the target mixer's relative MSE to the source attention's output when the
    source runs on ``inputs`` (token ids or images)."""
    mixer_in, mixer_out = attention_io(source, inputs)
    return relative_errors(mixer_outputs(target, mixer_in), mixer_out).tolist()


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
    source: nn.Module,
    target: nn.Module,
    batches: Callable[[], torch.Tensor],
    steps: int,
    lr: float = 3e-3,
    progress: Callable[[int, float], None] | None = None,
) -> None:
    """Train every target mixer on the summed per-layer relative MSE to the source attention's
    output, the source running on ``batches()`` (token windows or images) each step;
    everything but the mixers stays frozen."""
    mixers = [p for block in target.blocks for p in block.mixer.parameters()]
    frozen = {p: p.requires_grad for p in target.parameters()}
    for p in target.parameters():
        p.requires_grad_(False)
    for p in mixers:
        p.requires_grad_(True)

    def loss_of() -> torch.Tensor:
        mixer_in, mixer_out = attention_io(source, batches())
        return relative_errors(mixer_outputs(target, mixer_in), mixer_out).sum()

    source.eval()
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
    windows: Callable[[], torch.Tensor],
    steps: int,
    lr: float = 1e-3,
    kl_weight: float = KL_WEIGHT,
    progress: Callable[[int, float], None] | None = None,
) -> None:
    """Train every target weight on ``(1 - w)`` next-token cross-entropy plus ``w`` KL divergence
    from the source's next-token distribution, on ``windows()`` ``[B, T + 1]`` each step."""
    source.eval()

    def loss_of() -> torch.Tensor:
        ids = windows()
        logits = target(ids[:, :-1])[0].flatten(0, 1)
        loss = F.cross_entropy(logits, ids[:, 1:].flatten())
        if kl_weight:
            with torch.no_grad():
                teacher = F.log_softmax(source(ids[:, :-1])[0].flatten(0, 1), -1)
            log_probs = F.log_softmax(logits, -1)
            kl = F.kl_div(log_probs, teacher, log_target=True, reduction="batchmean")
            loss = (1 - kl_weight) * loss + kl_weight * kl
        return loss

    target.train()
    try:
        _train_loop(make_optimizer(target, lr), steps, loss_of, progress)
    finally:
        target.eval()


def window_sampler(
    data: np.ndarray, batch: int, tokens: int, seed: int, device: torch.device
) -> Callable[[], torch.Tensor]:
    """A function returning ``batch`` random windows of ``tokens`` ids of ``data`` per call."""
    rng = np.random.default_rng(seed)
    return lambda: torch.from_numpy(random_windows(data, batch, tokens - 1, rng)).to(device)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _quality(model: SequenceModel, corpus: Corpus, eval_chars: int | None) -> StageQuality:
    bpc = heldout_bpc(model, corpus, eval_chars)
    return StageQuality(bpc=bpc, perplexity=2.0**bpc)


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``run()``."""
    clock, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - clock, time.process_time() - cpu


def _error_table(before: list[float], after: list[float]) -> dict[str, dict[str, float]]:
    return {
        f"l{i}": {"before": b, "after": a}
        for i, (b, a) in enumerate(zip(before, after, strict=True))
    }


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
        a source that is not a GPT, an unknown target, non-positive sizes or ``eval_chars``
        below 2.
    """
    if not isinstance(source, GPT):
        raise ConversionError(f"expected a GPT (softmax Transformer), got {type(source).__name__}")
    if distill_steps < 0 or finetune_steps < 0 or batch < 1 or length < 2:
        raise ConversionError(
            "distill and fine-tune steps must be >= 0, batch >= 1 and length >= 2, got "
            f"{distill_steps}, {finetune_steps}, {batch}, {length}"
        )
    if eval_chars is not None and eval_chars < 2:
        raise ConversionError(f"eval_chars must be None (all) or at least 2, got {eval_chars}")
    length = min(length, source.context)
    device = _device(source)
    torch.manual_seed(seed)
    target = target_model(source, to).to(device)
    carry_weights(source, target)
    if isinstance(target, GLALM):
        init_gla_gates(target, gate_half_lives)
    source.eval()
    target.eval()
    probe = window_sampler(corpus.heldout, MSE_WINDOWS, length, seed + 2, device)()
    before = attention_errors(source, target, probe)
    quality = {"source": _quality(source, corpus, eval_chars)}
    quality["carried"] = _quality(target, corpus, eval_chars)

    def stage(name: str) -> Callable[[int, float], None] | None:
        return None if progress is None else lambda step, loss: progress(name, step, loss)

    windows = window_sampler(corpus.train, batch, length, seed, device)
    distill_time = _timed(
        lambda: transfer_attention(
            source, target, windows, distill_steps, distill_lr, stage("transfer")
        )
    )
    after = attention_errors(source, target, probe)
    quality["transferred"] = _quality(target, corpus, eval_chars)
    finetune_windows = window_sampler(corpus.train, batch, length + 1, seed + 1, device)
    finetune_time = _timed(
        lambda: finetune(
            source,
            target,
            finetune_windows,
            finetune_steps,
            finetune_lr,
            kl_weight,
            stage("fine-tune"),
        )
    )
    quality["finetuned"] = _quality(target, corpus, eval_chars) if finetune_steps else None
    distill_tokens, finetune_tokens = (n * batch * length for n in (distill_steps, finetune_steps))
    spent = distill_tokens + finetune_tokens
    report = LinearizationReport(
        target=to,
        corpus=corpus.name,
        eval_chars=eval_chars,
        **quality,
        attention_mse=_error_table(before, after),
        distill_steps=distill_steps,
        finetune_steps=finetune_steps,
        batch=batch,
        length=length,
        distill_tokens=distill_tokens,
        finetune_tokens=finetune_tokens,
        tokens_spent=spent,
        source_tokens=source_tokens,
        token_fraction=spent / source_tokens if source_tokens else None,
        distill_seconds=distill_time[0],
        distill_cpu_seconds=distill_time[1],
        finetune_seconds=finetune_time[0],
        finetune_cpu_seconds=finetune_time[1],
        options={
            "distill_lr": distill_lr,
            "finetune_lr": finetune_lr,
            "kl_weight": kl_weight,
            "gate_half_lives": list(gate_half_lives) if to == "gla" else None,
            "seed": seed,
        },
    )
    return target.eval(), report


# ---------------------------------------------------------------------------------------------
# User models: a torch.export program of a pre-norm causal Transformer LM, read as a GPT.

EXPORTED_LAYOUT = (
    "pre-norm causal Transformer LMs (token and position embeddings; blocks of "
    "nn.TransformerEncoderLayer(norm_first=True, activation='gelu', bias=False) or LayerNorm, "
    "nn.MultiheadAttention(bias=False), LayerNorm, Linear(d, 4d), GELU, Linear(4d, d); "
    "a final LayerNorm; a head tied to the embedding)"
)
LOGITS_TOLERANCE = 1e-4  # the GPT read from a program must give its logits within this
_ATTENTION_OPS = ("scaled_dot_product_attention", "softmax", "_softmax", "_safe_softmax")
_ACTIVATION_OPS = ("relu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "hardtanh", "mish")
_PRODUCT_OPS = ("bmm", "matmul")


def _op_name(node: torch.fx.Node) -> str:
    """``aten.linear.default`` -> ``linear``; a non-ATen target keeps its full name."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target.name().split("::")[-1].split(".")[0]
    return str(target)


@dataclass
class _Op:
    """An operation of the program that the GPT layout cares about."""

    kind: str  # embedding | norm | linear | attention | gelu | other
    node: torch.fx.Node
    params: list[str]  # names of the parameters it reads, in argument order

    def where(self) -> str:
        """``op at 'module.path' (ModuleType)``, for messages."""
        stack = self.node.meta.get("nn_module_stack") or {}
        path, type_name = list(stack.values())[-1] if stack else ("", "")
        type_name = str(type_name).rsplit(".", 1)[-1].rstrip("'>") or "function"
        return f"{_op_name(self.node)} at '{path or '<top>'}' ({type_name})"


@dataclass
class _Block:
    """One pre-norm block's tensors, named as in the GPT."""

    tensors: dict[str, torch.Tensor]
    head_dim: int


class _ExportedReader:
    """Walks a program's operations in order, matching them against ``EXPORTED_LAYOUT``."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.param_of = dict(program.graph_signature.inputs_to_parameters)
        nodes = [n for n in program.graph.nodes if n.op == "call_function"]
        self.ops = [op for op in map(self._classify, nodes) if op is not None]
        self.position = 0

    def _classify(self, node: torch.fx.Node) -> _Op | None:
        params = [self.param_of[a.name] for a in node.all_input_nodes if a.name in self.param_of]
        name = _op_name(node)
        kinds = {"embedding": "embedding", "layer_norm": "norm", "linear": "linear"}
        if name in kinds:
            return _Op(kinds[name], node, params)
        if name in _ATTENTION_OPS:
            return _Op("attention", node, params)
        if name == "gelu":
            approximate = node.args[1] if len(node.args) > 1 else "none"
            approximate = node.kwargs.get("approximate", approximate)
            return _Op("gelu" if approximate == "none" else "other", node, params)
        if name in _ACTIVATION_OPS or params:
            return _Op("other", node, params)
        return None

    def tensor(self, op: _Op, index: int) -> torch.Tensor | None:
        """The ``index``-th parameter ``op`` reads (None if it reads fewer)."""
        if index >= len(op.params):
            return None
        return self.program.state_dict[op.params[index]].detach().float().clone()

    def peek(self, ahead: int = 0) -> _Op | None:
        """The operation ``ahead`` places after the current one (None past the end)."""
        at = self.position + ahead
        return self.ops[at] if at < len(self.ops) else None

    def expected(self, what: str) -> ConversionError:
        """The error for a program whose next operation is not ``what``."""
        op = self.peek()
        found = "the end of the program" if op is None else op.where()
        return ConversionError(
            f"expected {what}, found {found}; convert linear reads {EXPORTED_LAYOUT}"
        )

    def take(self, kind: str, what: str) -> _Op:
        """The next operation, which must be of ``kind`` (``what`` describes it)."""
        op = self.peek()
        if op is None or op.kind != kind:
            raise self.expected(what)
        self.position += 1
        return op

    def weight(self, op: _Op, shape: tuple[int, ...], what: str) -> torch.Tensor:
        """``op``'s weight, which must have ``shape``."""
        w = self.tensor(op, 0)
        if w is None or tuple(w.shape) != shape:
            got = "none" if w is None else list(w.shape)
            raise ConversionError(f"{op.where()}: {what} weight is {got}, expected {list(shape)}")
        return w

    def bias(self, op: _Op, size: int) -> torch.Tensor:
        """``op``'s bias, zeros where it has none."""
        b = self.tensor(op, 1)
        return torch.zeros(size) if b is None else b

    def norm(self, op: _Op, d: int, name: str) -> dict[str, torch.Tensor]:
        """A LayerNorm's weight and bias as the GPT's ``name.weight`` / ``name.bias``."""
        eps = op.node.args[4] if len(op.node.args) > 4 else 1e-5
        if eps != 1e-5:
            raise ConversionError(f"{op.where()}: LayerNorm eps {eps}, the GPT's is 1e-05")
        return {
            f"{name}.weight": self.weight(op, (d,), "LayerNorm"),
            f"{name}.bias": self.bias(op, d),
        }

    def attention_head_dim(self, op: _Op) -> int:
        """Head width: the last axis of the queries (SDPA) or of ``softmax(scores) @ v``."""
        if _op_name(op.node) == "scaled_dot_product_attention":
            return int(op.node.args[0].meta["val"].shape[-1])
        for user in op.node.users:
            if _op_name(user) in _PRODUCT_OPS:
                return int(user.meta["val"].shape[-1])
        raise ConversionError(f"{op.where()}: no attention-weighted sum of values follows it")

    def block(self, norm: _Op, d: int) -> _Block:
        """The rest of a pre-norm block after its first LayerNorm."""
        tensors = self.norm(norm, d, "mixer_norm")
        in_proj = self.take("linear", "the attention's packed in-projection")
        w = self.weight(in_proj, (3 * d, d), "in-projection")
        b = self.bias(in_proj, 3 * d)
        if b[:d].any() or b[2 * d :].any():  # a key bias shifts every score of a query alike
            raise ConversionError(
                f"{in_proj.where()}: query or value biases are not zero; the GPT's attention "
                "has none (build the attention with bias=False)"
            )
        for name, part in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3), strict=True):
            tensors[f"mixer.{name}.weight"] = part
        head_dim = self.attention_head_dim(self.take("attention", "the causal softmax attention"))
        out = self.take("linear", "the attention's output projection")
        tensors["mixer.o_proj.weight"] = self.weight(out, (d, d), "output projection")
        if self.bias(out, d).any():
            raise ConversionError(
                f"{out.where()}: the output projection has a bias; the GPT's attention has none"
            )
        tensors |= self.norm(self.take("norm", "the FFN's LayerNorm"), d, "ffn_norm")
        up = self.take("linear", "the FFN's Linear(d, 4d)")
        tensors["ffn.up.weight"] = self.weight(up, (4 * d, d), "FFN input")
        tensors["ffn.up.bias"] = self.bias(up, 4 * d)
        self.take("gelu", "the FFN's GELU (exact, not tanh)")
        down = self.take("linear", "the FFN's Linear(4d, d)")
        tensors["ffn.down.weight"] = self.weight(down, (d, 4 * d), "FFN output")
        tensors["ffn.down.bias"] = self.bias(down, d)
        return _Block(tensors, head_dim)

    def positions(self, d: int) -> torch.Tensor:
        """The position table ``[context, d]``: an embedding, or a parameter sliced and added."""
        op = self.peek()
        table = self.tensor(op, 0) if op is not None and op.kind in ("embedding", "other") else None
        if table is None or table.shape[-1] != d or table.squeeze(0).ndim != 2:
            raise self.expected("the learned position embedding [context, d]")
        self.position += 1
        return table.reshape(-1, d)

    def reads_ids(self, op: _Op | None) -> bool:
        """Whether ``op`` is an embedding looked up with the program's input ids."""
        ids = self.program.graph_signature.user_inputs[0]
        return op is not None and op.kind == "embedding" and op.node.args[1].name == ids

    def read(self) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
        """The GPT config and state dict of the program (ConversionError if it does not match)."""
        if not self.reads_ids(self.peek()) and self.reads_ids(self.peek(1)):
            self.ops[0], self.ops[1] = self.ops[1], self.ops[0]  # positions looked up first
        embed = self.tensor(self.take("embedding", "the token embedding"), 0)
        vocab, d = embed.shape
        tensors = {"embed.weight": embed, "pos_embed.weight": self.positions(d)}
        blocks: list[_Block] = []
        while True:
            norm = self.take("norm", "a pre-norm block's LayerNorm (norm_first) or the final one")
            projection, attention = self.peek(), self.peek(1)
            if projection is None or projection.kind != "linear" or attention is None:
                break
            if attention.kind != "attention":
                break
            blocks.append(self.block(norm, d))
        if not blocks:
            raise ConversionError(
                f"found no attention block; convert linear reads {EXPORTED_LAYOUT}"
            )
        tensors |= self.norm(norm, d, "norm")
        head = self.take("linear", "the output head tied to the token embedding")
        tied = torch.equal(self.weight(head, (vocab, d), "head"), embed)
        if not tied or self.bias(head, vocab).any():
            raise ConversionError(
                f"{head.where()}: the head is not the token embedding (the GPT ties them)"
            )
        if self.peek() is not None:
            raise self.expected("the end of the program after the head")
        head_dim = blocks[0].head_dim
        if d % head_dim or any(b.head_dim != head_dim for b in blocks):
            widths = sorted({b.head_dim for b in blocks})
            raise ConversionError(f"attention head widths {widths} do not all divide {d} alike")
        for i, block in enumerate(blocks):
            tensors |= {f"blocks.{i}.{k}": v for k, v in block.tensors.items()}
        context = tensors["pos_embed.weight"].shape[0]
        return GPTConfig(vocab, d, len(blocks), d // head_dim, context), tensors


def _example_ids(program: torch.export.ExportedProgram, vocab: int, context: int) -> torch.Tensor:
    """Token ids in the shape the program was exported with (2 x min(context, 16) where a
    dimension is dynamic)."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.name == name)
    val = node.meta.get("val")
    shape = [d if isinstance(d, int) else 0 for d in getattr(val, "shape", [0, 0])]
    if len(shape) != 2:
        raise ConversionError(f"the model must take token ids [batch, T], it takes {shape}")
    shape = [shape[0] or 2, shape[1] or min(context, 16)]
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def gpt_from_exported(program: torch.export.ExportedProgram) -> GPT:
    """Read a ``torch.export`` program of a pre-norm causal Transformer LM (``EXPORTED_LAYOUT``)
    into the GPT layout, and check the GPT gives the program's logits on random ids.

    Raises ConversionError naming the first operation that does not match, a bias the GPT has
    no place for, or the logit difference when the structure reads but computes otherwise
    (a missing causal mask, post-norm wiring, ...).
    """
    from ganglion.converters.exported_archive import check_graph_ops

    if len(program.graph_signature.user_inputs) != 1:
        raise ConversionError(
            f"the model must take one tensor of token ids, it takes "
            f"{list(program.graph_signature.user_inputs)}"
        )
    config, tensors = _ExportedReader(program).read()
    gpt = GPT(config)
    gpt.load_state_dict(tensors)
    gpt.eval()
    check_graph_ops(program)
    ids = _example_ids(program, config.vocab_size, config.context)
    try:
        want = program.module()(ids)
    except Exception as exc:  # the program's own shape guards and kernels raise many types
        raise ConversionError(f"the exported model fails on token ids: {exc}") from None
    got = gpt(ids)[0]
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        shape = list(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__
        raise ConversionError(f"the model must return logits {list(got.shape)}, it returns {shape}")
    error = float((got - want.float()).abs().max())
    if error > LOGITS_TOLERANCE * max(1.0, float(want.abs().max())):
        raise ConversionError(
            f"the GPT read from the program differs from it by {error:.3g} in the logits: "
            f"its wiring is not {EXPORTED_LAYOUT}"
        )
    return gpt


# ---------------------------------------------------------------------------------------------
# Vision: ViT -> ViG.

LOCAL_PASS_GAIN = 0.1  # ViG's local conv starts as c x (centre tap c): SiLU(c x) ~ c x / 2


@dataclass
class VisionLinearizationReport:
    """What ``linearize_vision`` did and the test accuracy at each stage."""

    source_accuracy: float
    carried_accuracy: float  # weights carried over, before the attention transfer
    transferred_accuracy: float
    finetuned_accuracy: float | None  # None: no fine-tune
    attention_mse: dict[str, dict[str, float]]  # per layer: relative MSE before/after transfer
    distill_steps: int
    batch: int  # images per transfer step
    finetune_epochs: int
    distill_images: int  # images the transfer saw (with repeats)
    finetune_images: int
    distill_seconds: float
    distill_cpu_seconds: float
    finetune_seconds: float

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


@torch.no_grad()
def vig_from_vit(source: ViT, half_lives: tuple[float, float] = GATE_HALF_LIVES) -> ViG:
    """A ViG of the ViT's shape (``expand_k = 1``) with its weights: patch and position
    embeddings, norm weights (LayerNorm -> RMSNorm), FFNs, head, q/k/v/o. ViG's projections
    read ``SiLU(conv(x))``, so the conv starts as a small multiple ``c x`` of its input (SiLU is
    ~linear there) and q/k/v are scaled by ``2 / c``; the forget gates start data-independent
    with spread half-lives in both directions."""
    vig = ViG(ViGConfig(**asdict(source.config), expand_k=1.0))
    carry_weights(source, vig)
    c = vig.config
    bias = gate_bias(c.key_dim // c.n_heads, c.n_heads, c.gate_normalizer, half_lives)
    for block in vig.blocks:
        mixer = block.mixer
        mixer.local.weight.zero_()
        mixer.local.weight[:, 0, 1, 1] = LOCAL_PASS_GAIN
        for proj in (mixer.q_proj, mixer.k_proj, mixer.v_proj):
            proj.weight.mul_(2 / LOCAL_PASS_GAIN)
        mixer.gk_up.weight.zero_()
        mixer.gk_up.bias.copy_(bias.repeat(2))  # forward and backward gates
    return vig.eval()


def linearize_vision(
    source: ViT,
    data: DigitsData,
    distill_steps: int = 200,
    finetune_epochs: int = 5,
    *,
    batch: int = 64,
    distill_lr: float = 3e-3,
    finetune_lr: float = 1e-3,
    seed: int = 0,
) -> tuple[ViG, VisionLinearizationReport]:
    """Convert a trained ViT into a ViG: ``vig_from_vit``, attention transfer on training
    images, then ``finetune_epochs`` epochs of ``train_vision`` (cross-entropy).

    Args:
        source: the trained ViT (left unchanged).
        data: digits as images (``load_digits(image=True)``): training split for the transfer
            and the fine-tune, test split for the accuracies.
        distill_steps, batch, distill_lr: attention-transfer steps, images per step, peak lr.
        finetune_epochs, finetune_lr: fine-tune epochs (0: none) and peak learning rate.
        seed: seeds the transfer batches and the fine-tune's batch order.

    Returns:
        The ViG (eval mode) and a ``VisionLinearizationReport``; ConversionError for a source
        that is not a ViT or negative sizes.
    """
    if not isinstance(source, ViT):
        raise ConversionError(f"expected a ViT, got {type(source).__name__}")
    if distill_steps < 0 or finetune_epochs < 0 or batch < 1:
        raise ConversionError("distill steps and fine-tune epochs must be >= 0, batch >= 1")
    torch.manual_seed(seed)
    source.eval()
    target = vig_from_vit(source)
    x_train, x_test = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
    probe = x_test[:256]
    before = attention_errors(source, target, probe)
    carried = accuracy(target, data.x_test, data.y_test)
    sampler = torch.Generator().manual_seed(seed)

    def images() -> torch.Tensor:
        return x_train[torch.randint(0, len(x_train), (batch,), generator=sampler)]

    distill_time = _timed(
        lambda: transfer_attention(source, target, images, distill_steps, distill_lr)
    )
    after = attention_errors(source, target, probe)
    transferred = accuracy(target, data.x_test, data.y_test)
    finetuned, finetune_seconds = None, 0.0
    if finetune_epochs:
        run = train_vision(target, data, finetune_epochs, seed, lr=finetune_lr)
        finetuned, finetune_seconds = run.test_accuracy, run.seconds
    report = VisionLinearizationReport(
        source_accuracy=accuracy(source, data.x_test, data.y_test),
        carried_accuracy=carried,
        transferred_accuracy=transferred,
        finetuned_accuracy=finetuned,
        attention_mse=_error_table(before, after),
        distill_steps=distill_steps,
        batch=batch,
        finetune_epochs=finetune_epochs,
        distill_images=distill_steps * batch,
        finetune_images=finetune_epochs * len(x_train),
        distill_seconds=distill_time[0],
        distill_cpu_seconds=distill_time[1],
        finetune_seconds=finetune_seconds,
    )
    return target.eval(), report
