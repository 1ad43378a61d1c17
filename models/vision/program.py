"""A trained image classifier (ViG, ViT) as a deployable ``dense`` program."""

from __future__ import annotations

from typing import Any

from ganglion.models.dense import DenseProgram
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import Manifest, TensorSpec

IMAGE, LOGITS = "image", "logits"


def vision_deployable(
    model: Any, report: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None
) -> Deployable:
    """``image`` float32 [batch, C, H, W] in, class ``logits`` out; rebuilt by architecture."""
    config = model.to_config()
    shape = [-1, config["channels"], config["image_size"], config["image_size"]]
    manifest = Manifest(
        kind="dense",
        architecture=model.architecture,
        inputs=[TensorSpec(IMAGE, shape, "float32")],
        outputs=[TensorSpec(LOGITS, [-1, config["num_classes"]], "float32")],
        report=report or {},
        provenance=provenance or {},
    )
    return Deployable(DenseProgram(model.eval(), [IMAGE], [LOGITS]), manifest, config)
