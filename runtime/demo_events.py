"""The demo's event-camera tour: digits seen by a simulated event sensor (saccades, as N-MNIST
was recorded), a small CNN trained on the event-count images, converted into spiking programs
that read binned events, and one test stream written as a file ``ganglion run`` takes as is.

Accuracies are on the digits test split; the sensor is simulated, the runs are measured here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganglion.models.events import SaccadeSensor
from ganglion.models.events.program_input import program_frames
from ganglion.models.recipes.event_digits import (
    ann_accuracy,
    convert_event_cnn,
    digits_events,
    snn_accuracy,
    train_event_cnn,
)
from ganglion.runtime.atomic import atomic_file
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import load

SENSOR_STEP_US = 2_000  # the simulated sensor's time resolution


@dataclass
class EventRow:
    """One event program: its T, the ANN's and its own test accuracy, events per sample."""

    timesteps: int
    ann_accuracy: float
    snn_accuracy: float
    events_per_sample: float
    seconds: float  # convert + score the test split, measured here


def event_tour(out: Path, timesteps: list[int], epochs: int) -> tuple[list[EventRow], str]:
    """Train the event CNN, convert it at each T, save the last program as ``out/events-snn``
    and one test stream as ``out/event-stream.npy``; returns the rows and a line saying what
    ``ganglion run`` made of that stream."""
    data = digits_events(sensor=SaccadeSensor(step_us=SENSOR_STEP_US))
    model, _ = train_event_cnn(data, epochs=epochs)
    ann = ann_accuracy(model, data)
    per_sample = float(np.mean([len(s) for s in data.test]))
    rows = []
    for steps in timesteps:
        start = time.perf_counter()
        program = convert_event_cnn(model, data, steps, calibration=256)
        score = snn_accuracy(program, data)
        rows.append(EventRow(steps, ann, score, per_sample, time.perf_counter() - start))
    bundle = save_bundle(program, out / "events-snn", force=True)
    stream = out / "event-stream.npy"
    with atomic_file(stream, force=True) as tmp, open(tmp, "wb") as fh:
        np.save(fh, data.test[0], allow_pickle=False)
    with load(bundle) as session:
        logits = session.run(program_frames(session.manifest, data.test[0]))
    guess = int(np.asarray(next(iter(logits.values()))).argmax())
    line = (
        f"ganglion run {bundle} --input {stream} -> class {guess} "
        f"(label {int(data.y_test[0])}, {len(data.test[0])} events)"
    )
    return rows, line
