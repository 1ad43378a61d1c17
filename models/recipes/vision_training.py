"""Train a vision classifier (ViG, ViT) on the digits images and score it.

AdamW with a short linear warm-up then cosine decay (the LM trainer's schedule) on shuffled
mini-batches; deterministic for a seed given the model's initial weights. Inputs are
``DigitsData`` with ``image=True`` (``[N, 1, 8, 8]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganglion.models.recipes.digits import DigitsData, accuracy
from ganglion.models.recipes.lm_training import warmup_cosine

BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 0.05  # on matrices only


@dataclass
class VisionTrainReport:
    """What one ``train_vision`` run did and reached."""

    architecture: str
    parameters: int  # trainable parameters
    epochs: int
    batch: int
    lr: float
    seed: int
    seconds: float  # training wall time
    first_epoch_loss: float  # mean cross-entropy over the first epoch
    final_loss: float  # mean cross-entropy over the last epoch
    test_accuracy: float  # top-1 on the held-out split

    def to_dict(self) -> dict:
        """The report as a JSON-able dict."""
        return asdict(self)


def train_vision(
    model: nn.Module,
    data: DigitsData,
    epochs: int,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    lr: float = LR,
    batch: int = BATCH,
) -> VisionTrainReport:
    """Train ``model`` in place on ``data``'s training split, then score the test split.

    Args:
        model: a classifier ``[B, C, H, W] -> [B, classes]`` (``architecture`` names it).
        data: digits as images (``load_digits(image=True)``).
        epochs: passes over the training split (>= 1).
        seed: seeds the batch order.
        progress: called as ``progress(epoch, mean_loss)`` after every epoch (1-based).
        lr: peak learning rate; batch: images per step.
    """
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be >= 1, got {epochs}, {batch}")
    if data.x_train.ndim != 4:
        raise ValueError(f"digits must be images [N, C, H, W], got {list(data.x_train.shape)}")
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    gen = torch.Generator().manual_seed(seed)
    epoch_losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
        if progress is not None:
            progress(epoch + 1, epoch_losses[-1])
    seconds = time.perf_counter() - start
    model.eval()
    return VisionTrainReport(
        architecture=getattr(model, "architecture", type(model).__name__),
        parameters=sum(p.numel() for p in trainable),
        epochs=epochs,
        batch=batch,
        lr=lr,
        seed=seed,
        seconds=seconds,
        first_epoch_loss=epoch_losses[0],
        final_loss=epoch_losses[-1],
        test_accuracy=accuracy(model, data.x_test, data.y_test),
    )
