"""scikit-learn's digits (8x8 images, shipped offline): data split and two small ReLU nets.

Trains in seconds on a CPU. The networks use only layers the spiking converter supports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class DigitsData:
    """Train/test split; x in [0, 1] shaped [N, 1, 8, 8] (cnn) or [N, 64] (mlp)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(image: bool, seed: int = 0, test_fraction: float = 0.2) -> DigitsData:
    """The digits set scaled to [0, 1], split with a fixed seed (stratified by label)."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    raw = sk_load_digits()
    x = (raw.data / 16.0).astype(np.float32)
    x = x.reshape(-1, 1, 8, 8) if image else x
    y = raw.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return DigitsData(xtr, ytr, xte, yte)


def digits_mlp() -> nn.Module:
    """64 -> 128 -> 64 -> 10 ReLU MLP."""
    return nn.Sequential(
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def digits_cnn() -> nn.Module:
    """Two conv blocks (BatchNorm, ReLU, average pooling) and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def train_classifier(
    model: nn.Module, data: DigitsData, epochs: int = 60, seed: int = 0, lr: float = 3e-3
) -> float:
    """Train with Adam and cross-entropy; returns test accuracy. Deterministic for a seed."""
    torch.manual_seed(seed)
    for p in model.parameters():
        if p.ndim > 1:
            nn.init.kaiming_uniform_(p, nonlinearity="relu")
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    return accuracy(model, data.x_test, data.y_test)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a classifier on numpy data."""
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())
