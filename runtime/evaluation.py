"""Score a classifier program against labels: accuracy, per-class accuracy, confusion matrix,
spikes per sample (spiking programs on torch), and agreement with a reference's predictions.

Works for every classifier kind (spiking, dense, ensemble): predictions are the argmax of the
program's first output, whose last axis is the classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.manifest import Manifest
from ganglion.runtime.session import Session

BATCH = 512  # samples per call, so large test sets stay within memory
MAX_CLASSES = 4096  # a confusion matrix of 16 M counts


@dataclass
class Evaluation:
    """Scores of one program on one labelled set."""

    samples: int
    accuracy: float
    per_class_accuracy: list[float | None]  # None for a class absent from the labels
    confusion: list[list[int]]  # [true class][predicted class]
    spikes_per_sample: float | None = None  # spiking programs run on torch
    agreement: float | None = None  # with the reference predictions, when given
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def check_labels(labels: np.ndarray, samples: int, classes: int, where: str) -> np.ndarray:
    """``labels`` as int64 [samples] in [0, classes), or ShapeError naming ``where``."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ShapeError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.shape != (samples,):
        raise ShapeError(f"{where}: labels must be [{samples}], got {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShapeError(
            f"{where}: labels must be in [0, {classes}), got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def sample_count(session: Session, inputs: dict[str, np.ndarray]) -> tuple[int, int]:
    """(samples, batch axis) of ``inputs``: a ShapeError if an input has no batch axis (a
    0-d array) or the inputs disagree on it."""
    axis = session.kind.batch_axis(session.manifest)
    counts = {}
    for name, array in inputs.items():
        if np.ndim(array) <= axis:
            raise ShapeError(
                f"input {name!r} has shape {list(np.shape(array))}: samples go along axis {axis}"
            )
        counts[name] = np.shape(array)[axis]
    if len(set(counts.values())) > 1:
        raise ShapeError(f"the inputs hold different numbers of samples ({counts})")
    return next(iter(counts.values()), 0), axis


def predict(session: Session, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float | None]:
    """Predicted classes [N] (in batches) and, for spiking programs on torch, spikes/sample."""
    count, axis = sample_count(session, inputs)
    record = session.manifest.kind == "spiking" and session.backend == "torch"
    predictions, spikes = [], 0.0
    for start in range(0, count, BATCH):
        chunk = {
            k: np.take(v, range(start, min(start + BATCH, count)), axis=axis)
            for k, v in inputs.items()
        }
        outputs = session.run(chunk, record=True) if record else session.run(chunk)
        first = next(iter(outputs.values()))
        predictions.append(first.reshape(first.shape[0], -1).argmax(-1))
        if record:
            spikes += sum(float(a.sum()) for a in session.activity().values())
    return np.concatenate(predictions), (spikes / count if record else None)


def classifier_classes(manifest: Manifest) -> int:
    """How many classes a classifier program scores (its first output's last axis); ShapeError
    for a program whose outputs are not one score per class (a language model's logits per
    token) or that declares more than ``MAX_CLASSES`` (the confusion matrix is classes²)."""
    if manifest.kind == "sequence":
        raise ShapeError(
            f"a language model ({manifest.architecture}) gives logits per token, not one class "
            "per sample; eval scores classifiers (train lm and convert report bits per character)"
        )
    classes = manifest.outputs[0].shape[-1]
    if not 1 <= classes <= MAX_CLASSES:
        raise ShapeError(f"the program declares {classes} classes (eval takes 1 to {MAX_CLASSES})")
    return classes


def evaluate(
    session: Session,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    reference: np.ndarray | None = None,
    where: str = "test data",
) -> Evaluation:
    """Scores of ``session`` on ``inputs`` against ``labels`` (and a reference's predictions);
    ``where`` (the data's file) begins every error about them."""
    classes = classifier_classes(session.manifest)
    try:
        predicted, spikes = predict(session, inputs)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from None
    labels = check_labels(labels, len(predicted), classes, where)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    totals = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / totals[c]) if totals[c] else None for c in range(classes)]
    agreement = None if reference is None else float((np.asarray(reference) == predicted).mean())
    return Evaluation(
        samples=len(labels),
        accuracy=float((predicted == labels).mean()) if len(labels) else 0.0,
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        spikes_per_sample=spikes,
        agreement=agreement,
    )
