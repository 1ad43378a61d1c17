"""Train any ``SequenceModel`` as a language model on an offline corpus, and score it.

- ``train_lm``: AdamW on random windows of the training split, linear warm-up then cosine decay,
  gradient clipping; deterministic for a seed (given the model's initial weights).
- ``heldout_bpc``: bits per character on the held-out split. A model without a context limit
  reads the split as one stream, in windows that carry the state across (the true streaming
  BPC); a model with ``context`` is scored with sliding windows of that length.

Only the ``SequenceModel`` interface is used, so every sequence architecture shares this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ganglion.models.recipes.text import Corpus, bits_per_char, random_windows
from ganglion.models.sequence.base import SequenceModel

WEIGHT_DECAY = 0.01  # on matrices and embeddings only
BETAS = (0.9, 0.99)
GRAD_CLIP = 1.0  # max global gradient norm
MIN_LR_FRACTION = 0.1  # the cosine ends at this fraction of the peak learning rate
LOSS_WINDOW = 10  # the final loss is the mean over this many last steps
EVAL_WINDOW = 512  # tokens per parallel forward when scoring


@dataclass
class TrainReport:
    """What one ``train_lm`` run did and reached."""

    architecture: str
    corpus: str
    parameters: int  # trainable parameters
    steps: int
    batch: int
    length: int  # tokens per training window
    lr: float  # peak learning rate
    seed: int
    tokens_seen: int  # steps × batch × length
    seconds: float  # training wall time (without the held-out evaluation)
    cpu_seconds: float  # CPU time of this process over the same span (all its threads)
    final_loss: float  # mean training loss, nats per token, over the last steps
    train_bits_per_token: float  # final_loss in bits
    heldout_bpc: float | None  # bits per character on the held-out split (None: not scored)
    eval_seconds: float  # wall time of the held-out evaluation

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then cosine down to MIN_LR_FRACTION."""
    warmup = max(1, min(steps // 10, 100))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(steps - warmup, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine

    return factor


def make_optimizer(model: SequenceModel, lr: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on tensors of rank >= 2 only."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS)


def lm_loss(model: SequenceModel, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of ``windows`` ``[B, T+1]`` from a fresh state."""
    logits, _ = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


def train_lm(
    model: SequenceModel,
    corpus: Corpus,
    steps: int,
    batch: int = 16,
    length: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    eval_chars: int | None = None,
) -> TrainReport:
    """Train ``model`` in place on random windows of ``corpus.train``, then score it.

    Args:
        model: any ``SequenceModel``; its trainable parameters are updated.
        corpus: byte corpus (``load_corpus``).
        steps: optimizer steps; batch, length: windows per step and tokens per window.
        lr: peak learning rate; seed: seeds the window sampler (and torch's generator).
        progress: called as ``progress(step, loss)`` after every step (1-based).
        eval_chars: held-out characters to score (``None``: all of them, ``0``: skip scoring).

    Returns:
        A ``TrainReport``; raises ValueError for a non-positive size or a window longer than
        the model's context.
    """
    for name, value in (("steps", steps), ("batch", batch), ("length", length)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if model.context is not None and length > model.context:
        raise ValueError(f"length {length} exceeds the model's context {model.context}")
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        windows = torch.from_numpy(random_windows(corpus.train, batch, length, rng)).to(device)
        loss = lm_loss(model, windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    start = time.perf_counter()
    bpc = None if eval_chars == 0 else heldout_bpc(model, corpus, eval_chars)
    final_loss = float(np.mean(losses[-LOSS_WINDOW:]))
    return TrainReport(
        architecture=model.architecture,
        corpus=corpus.name,
        parameters=sum(p.numel() for p in trainable),
        steps=steps,
        batch=batch,
        length=length,
        lr=lr,
        seed=seed,
        tokens_seen=steps * batch * length,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        final_loss=final_loss,
        train_bits_per_token=final_loss / math.log(2),
        heldout_bpc=bpc,
        eval_seconds=time.perf_counter() - start,
    )


def first_chars(data: np.ndarray, max_chars: int | None) -> np.ndarray:
    """The UTF-8 bytes of the first ``max_chars`` characters of ``data`` (all if None)."""
    if max_chars is None:
        return data
    starts = np.flatnonzero((data & 0xC0) != 0x80)  # bytes that begin a character
    return data if max_chars >= len(starts) else data[: starts[max_chars]]


def count_chars(data: np.ndarray) -> int:
    """Characters in UTF-8 bytes: the bytes that are not continuation bytes."""
    return int(np.count_nonzero((data & 0xC0) != 0x80))


@torch.no_grad()
def heldout_bpc(model: SequenceModel, corpus: Corpus, max_chars: int | None = None) -> float:
    """Bits per character of ``model`` on ``corpus.heldout`` (its first ``max_chars`` chars).

    Every byte after the first is predicted from all bytes before it (streaming, state carried
    across windows of ``EVAL_WINDOW`` tokens); a model with a ``context`` sees at most that many
    bytes (sliding windows scored on their second half). The characters counted are those of
    the predicted bytes.
    """
    data = first_chars(corpus.heldout, max_chars)
    if len(data) < 2:
        raise ValueError(f"need at least 2 held-out bytes to score, got {len(data)}")
    device = next(model.parameters()).device
    ids = torch.from_numpy(data.astype(np.int64)).to(device)[None]  # [1, N]
    was_training = model.training
    model.eval()
    try:
        if model.context is None:
            nll = streaming_nll(model, ids)
        else:
            nll = sliding_nll(model, ids, model.context)
    finally:
        model.train(was_training)
    return bits_per_char(nll, count_chars(data[1:]))


def streaming_nll(model: SequenceModel, ids: torch.Tensor) -> float:
    """Summed next-token NLL (nats) over ``ids`` ``[1, N]``, state carried across windows."""
    total, state = 0.0, None
    for start in range(0, ids.shape[1] - 1, EVAL_WINDOW):
        targets = ids[:, start + 1 : start + 1 + EVAL_WINDOW]
        logits, state = model(ids[:, start : start + targets.shape[1]], state)
        total += float(F.cross_entropy(logits[0], targets[0], reduction="sum"))
    return total


def sliding_nll(model: SequenceModel, ids: torch.Tensor, context: int) -> float:
    """Summed next-token NLL (nats) over ``ids`` ``[1, N]`` with windows of ``context`` tokens
    advancing by half a window; each target is scored once, with at least half a window (or
    everything before it) of context."""
    stride = max(context // 2, 1)
    total, scored = 0.0, 0  # scored: targets 1..scored are done
    n = ids.shape[1]
    while scored < n - 1:
        end = min(scored + (stride if scored else context), n - 1)  # last target index
        begin = max(end - context, 0)  # first input index
        logits, _ = model(ids[:, begin:end])
        fresh = end - scored  # targets scored + 1 .. end
        total += float(
            F.cross_entropy(logits[0, -fresh:], ids[0, scored + 1 : end + 1], reduction="sum")
        )
        scored = end
    return total
