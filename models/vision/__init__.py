"""Image classifiers with a linear-time token mixer (ViG) and their softmax baseline (ViT).

``VISION_ARCHITECTURES`` maps an architecture name to its class, imported on first use.
"""

from __future__ import annotations

import importlib

from ganglion.models.vision.base import VisionClassifier, VisionConfig

VISION_ARCHITECTURES: dict[str, str] = {
    "vig": "ganglion.models.vision.vig:ViG",
    "vit": "ganglion.models.vision.vit:ViT",
}


def vision_model_class(architecture: str) -> type[VisionClassifier]:
    """The class of a registered vision architecture (KeyError if unknown)."""
    module_name, class_name = VISION_ARCHITECTURES[architecture].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["VISION_ARCHITECTURES", "VisionClassifier", "VisionConfig", "vision_model_class"]
