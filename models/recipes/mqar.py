"""Multi-query associative recall (MQAR, Zoology: Arora, Eyuboglu et al. 2023), written from
its description, and a trainer that scores any ``SequenceModel`` on it.

An example of ``seq_len`` tokens over a vocabulary ``V``::

    k_1 v_1 k_2 v_2 ... k_P v_P | filler ... k_i filler ... k_j filler ...
    keys from [1, V/2), values from [V/2, V), each distinct within the example

After the ``P`` key-value pairs, every key is queried exactly once, at position
``2P + 2 gap`` where the gaps are distinct draws from ``[0, (seq_len - 2P) / 2)`` with
probability ``∝ (gap + 1) ** (power_a - 1)`` (a power law: short gaps are common). The label
at a query's position is its value (the next token to predict); every other label is -100.
Filler positions hold 0, or random tokens from ``[0, V)`` (Zoology's ``random_non_queries``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ganglion.models.recipes.lm_training import GRAD_CLIP, make_optimizer, warmup_cosine
from ganglion.models.sequence.base import SequenceModel

IGNORE = -100  # label of positions that are not scored


@dataclass(frozen=True)
class MQARData:
    """MQAR examples: ``inputs`` and ``labels`` ``[N, seq_len]`` int64 (labels -100 except at
    the ``num_pairs`` query positions of each row)."""

    inputs: np.ndarray
    labels: np.ndarray
    vocab_size: int
    num_pairs: int


def gap_probabilities(slots: int, power_a: float) -> np.ndarray:
    """``P(gap = i) ∝ (i + 1) ** (power_a - 1)`` for ``i`` in ``[0, slots)``."""
    weights = np.arange(1, slots + 1, dtype=np.float64) ** (power_a - 1)
    return weights / weights.sum()


def make_mqar(
    num_examples: int,
    seq_len: int,
    num_pairs: int,
    vocab_size: int = 8192,
    seed: int = 0,
    power_a: float = 0.01,
    random_non_queries: bool = True,
) -> MQARData:
    """``num_examples`` MQAR examples (see the module docstring); deterministic for a seed.

    Raises ValueError when the pairs and their queries do not fit in ``seq_len`` or the key or
    value range holds fewer than ``num_pairs`` tokens.
    """
    if num_examples < 1 or num_pairs < 1:
        raise ValueError(
            f"num_examples and num_pairs must be >= 1, got {num_examples}, {num_pairs}"
        )
    context = 2 * num_pairs
    slots = (seq_len - context) // 2
    if slots < num_pairs:
        raise ValueError(f"seq_len {seq_len} cannot hold {num_pairs} pairs and their queries")
    half = vocab_size // 2
    if half - 1 < num_pairs or vocab_size - half < num_pairs:
        raise ValueError(
            f"vocab_size {vocab_size} has too few keys or values for {num_pairs} pairs"
        )
    rng = np.random.default_rng(seed)
    p_gap = gap_probabilities(slots, power_a)
    rows = np.arange(num_examples)[:, None]
    keys = np.stack([rng.choice(half - 1, num_pairs, replace=False) for _ in rows]) + 1
    values = np.stack([rng.choice(vocab_size - half, num_pairs, replace=False) for _ in rows])
    values += half
    gaps = np.stack([rng.choice(slots, num_pairs, replace=False, p=p_gap) for _ in rows])
    if random_non_queries:
        inputs = rng.integers(0, vocab_size, (num_examples, seq_len), dtype=np.int64)
    else:
        inputs = np.zeros((num_examples, seq_len), dtype=np.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    queries = context + 2 * gaps  # [N, P]
    inputs[rows, queries] = keys
    labels = np.full((num_examples, seq_len), IGNORE, dtype=np.int64)
    labels[rows, queries] = values
    return MQARData(inputs, labels, vocab_size, num_pairs)


@dataclass
class MQARReport:
    """What one ``train_mqar`` run did and reached."""

    architecture: str
    parameters: int  # trainable parameters
    steps: int
    batch: int
    lr: float
    seed: int
    seconds: float  # training wall time
    final_loss: float  # mean cross-entropy (nats) at answer positions over the last 10 steps
    accuracy: float  # answers predicted exactly (argmax) on the test examples

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


def mqar_loss(model: SequenceModel, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled (answer) positions, from a fresh state."""
    logits, _ = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def mqar_accuracy(model: SequenceModel, data: MQARData, batch: int = 256) -> float:
    """Fraction of answer positions where the model's most likely token is the value."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for start in range(0, len(data.inputs), batch):
        inputs = torch.from_numpy(data.inputs[start : start + batch]).to(device)
        labels = torch.from_numpy(data.labels[start : start + batch]).to(device)
        scored = labels != IGNORE
        correct += int((model(inputs)[0].argmax(-1) == labels)[scored].sum())
        total += int(scored.sum())
    model.train(was_training)
    return correct / max(total, 1)


def train_mqar(
    model: SequenceModel,
    train: MQARData,
    test: MQARData,
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> MQARReport:
    """Train ``model`` in place on random batches of ``train`` (AdamW, warm-up then cosine,
    clipped gradients), then score ``test``. ``progress(step, loss)`` after every step."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps}, {batch}")
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        rows = rng.integers(0, len(train.inputs), batch)
        inputs = torch.from_numpy(train.inputs[rows]).to(device)
        labels = torch.from_numpy(train.labels[rows]).to(device)
        loss = mqar_loss(model, inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, losses[-1])
    seconds = time.perf_counter() - start
    return MQARReport(
        architecture=model.architecture,
        parameters=sum(p.numel() for p in trainable),
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        seconds=seconds,
        final_loss=float(np.mean(losses[-10:])),
        accuracy=mqar_accuracy(model, test),
    )
