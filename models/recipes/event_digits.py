"""Event digits: scikit-learn's digits seen by a simulated event camera, a small CNN trained on
them, and its conversion into a spiking program that reads binned events.

The digits are upsampled (8x8 -> 16x16 by default) and moved through three saccades
(``ganglion.models.events.sensor``); a sample is its event stream. The ANN sees the event-count
image (the stream binned into one frame, OFF and ON as two channels). Its spiking version reads
the stream as T frames (``n_time_bins`` = T) of raw counts: a factor T is folded into the first
layer before conversion, so the mean input current over the T steps is what the ANN saw.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import zoom
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.events.binning import bin_batch
from ganglion.models.events.sensor import SaccadeSensor, simulate_saccades
from ganglion.models.manifest import SpikingTime
from ganglion.models.recipes.digits import DigitsData, accuracy, load_digits, train_classifier
from ganglion.models.spiking.network import SpikingNetwork

_BATCH = 256  # samples per spiking run when scoring


@dataclass
class EventDigits:
    """Event streams (structured x, y, t, p) of the digits split, with labels and sensor size."""

    train: list[np.ndarray]
    y_train: np.ndarray
    test: list[np.ndarray]
    y_test: np.ndarray
    width: int
    height: int

    def frames(self, split: str, **slicing: int) -> np.ndarray:
        """A split binned: [T, N, 2, height, width] (``bin_batch``'s slicing keywords)."""
        streams = self.train if split == "train" else self.test
        return bin_batch(streams, width=self.width, height=self.height, **slicing)

    def count_images(self, split: str) -> np.ndarray:
        """A split's event-count images [N, 2, height, width]: what the ANN sees."""
        return self.frames(split, n_time_bins=1)[0]


def digits_events(
    scale: int = 2,
    sensor: SaccadeSensor | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> EventDigits:
    """Event versions of the digits split of ``load_digits`` (seed ``seed``), upsampled by
    ``scale`` (2: 16x16 images on an 18x18 sensor; 4: 32x32 on 34x34, N-MNIST's size).
    ``max_train``/``max_test`` keep the first samples of each split."""
    data = load_digits(image=True, seed=seed)
    sensor = sensor or SaccadeSensor(seed=seed)
    splits = []
    for x, y, limit in (
        (data.x_train, data.y_train, max_train),
        (data.x_test, data.y_test, max_test),
    ):
        x, y = x[:limit, 0], y[:limit]
        images = np.clip(zoom(x, (1, scale, scale), order=1), 0.0, 1.0)
        splits.append((simulate_saccades(images, sensor), y))
    height, width = sensor.sensor_size(8 * scale, 8 * scale)
    (train, y_train), (test, y_test) = splits
    return EventDigits(train, y_train, test, y_test, width, height)


def event_digits_cnn(height: int, width: int) -> nn.Module:
    """Two conv blocks (BatchNorm, ReLU, average pooling) over OFF/ON channels, then a linear
    classifier; only layers the spiking converter supports."""
    return nn.Sequential(
        nn.Conv2d(2, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), 10),
    )


def train_event_cnn(data: EventDigits, epochs: int = 30, seed: int = 0) -> tuple[nn.Module, float]:
    """The CNN trained on the count images (Adam, seeded); returns it and its test accuracy."""
    model = event_digits_cnn(data.height, data.width)
    images = DigitsData(
        data.count_images("train"), data.y_train, data.count_images("test"), data.y_test
    )
    return model, train_classifier(model, images, epochs=epochs, seed=seed)


def convert_event_cnn(
    model: nn.Module,
    data: EventDigits,
    timesteps: int,
    decoding: str = "membrane",
    calibration: int = 512,
    per_channel: bool = True,
) -> Deployable:
    """A spiking program with input encoding ``events`` (``n_time_bins`` = ``timesteps``).

    Thresholds (per channel by default) come from ``calibration`` training samples; the
    manifest's report carries the ANN and SNN accuracies and firing rates on them, the SNN
    reading the binned events."""
    frames = data.frames("train", n_time_bins=timesteps)[:, :calibration]  # [T, N, 2, H, W]
    labels = data.y_train[:calibration]
    scaled = copy.deepcopy(model)
    first = next(m for m in scaled.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    with torch.no_grad():
        first.weight.mul_(timesteps)  # mean of T frames of counts -> the count image
    options = SpikingOptions(
        timesteps=timesteps, encoding="direct", decoding=decoding, per_channel=per_channel
    )
    direct = convert_spiking(scaled, frames.mean(axis=0), labels, options)
    binning = {"width": data.width, "height": data.height, "channels": 2}
    time = SpikingTime(
        timesteps,
        encoding="events",
        decoding=decoding,
        events={**binning, "n_time_bins": timesteps},
    )
    network = SpikingNetwork(direct.module.graph, time)
    report = dict(direct.manifest.report)
    snn, activity = _predict(network, frames)
    ann = _ann_predictions(model, frames.sum(axis=0))
    report.update(
        snn_accuracy=float((snn == labels).mean()),
        ann_accuracy=float((ann == labels).mean()),
        agreement=float((snn == ann).mean()),
        input="events",
    )
    for name, layer in report["layers"].items():
        per_step = frames.shape[1] * timesteps * layer["neurons"]
        layer["firing_rate"] = float(activity.get(name, 0.0)) / per_step
    manifest = spiking_manifest(direct.module.graph, time, report)
    manifest.provenance = {**direct.manifest.provenance, "input": "events"}
    return Deployable(network, manifest, direct.config)


def snn_accuracy(program: Deployable, data: EventDigits) -> float:
    """Test accuracy of a spiking program with input encoding ``events`` (its own binning)."""
    time = program.manifest.time
    assert isinstance(time, SpikingTime) and time.events is not None
    slicing = {k: v for k, v in time.events.items() if k not in ("width", "height", "channels")}
    predictions, _ = _predict(program.module, data.frames("test", **slicing))
    return float((predictions == data.y_test).mean())


def ann_accuracy(model: nn.Module, data: EventDigits) -> float:
    """Test accuracy of the ANN on the count images."""
    return accuracy(model, data.count_images("test"), data.y_test)


def _predict(network: nn.Module, frames: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Class predictions [N] for frames [T, N, ...], and the spikes of each layer."""
    predictions, spikes = [], {}
    with torch.no_grad():
        for start in range(0, frames.shape[1], _BATCH):
            out = network.run(torch.from_numpy(frames[:, start : start + _BATCH]), record=True)
            predictions.append(out.reshape(out.shape[0], -1).argmax(-1).numpy())
            for name, count in network.activity.items():
                spikes[name] = spikes.get(name, 0.0) + float(count.sum())
    return np.concatenate(predictions), spikes


def _ann_predictions(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).argmax(-1).numpy()
