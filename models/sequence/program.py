"""A trained token model as a deployable ``sequence`` program (manifest built from the model)."""

from __future__ import annotations

from typing import Any

from ganglion.models.deployable import Deployable
from ganglion.models.manifest import Manifest, SequenceTime, TensorSpec
from ganglion.models.sequence.base import SequenceModel

IDS, LOGITS = "ids", "logits"


def sequence_manifest(
    model: SequenceModel,
    report: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Manifest:
    """Manifest of a token model: ``ids`` int64 in, next-token ``logits`` out, the model's
    declared state; ``run`` takes [batch, T] ids (the kind's time semantics)."""
    return Manifest(
        kind="sequence",
        architecture=model.architecture,
        inputs=[TensorSpec(IDS, [-1], "int64")],
        outputs=[TensorSpec(LOGITS, [-1, model.vocab_size], "float32")],
        time=SequenceTime(vocab_size=model.vocab_size, context=model.context or 0),
        state=model.state_specs(),
        report=report or {},
        provenance=provenance or {},
    )


def sequence_deployable(
    model: SequenceModel,
    report: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Deployable:
    """The Deployable of a trained token model (config.json is ``model.to_config()``)."""
    model = model.eval()
    return Deployable(model, sequence_manifest(model, report, provenance), model.to_config())
