"""Token-sequence models (language models) with a parallel and a recurrent face.

``SEQUENCE_ARCHITECTURES`` maps an architecture name to its class, imported on first use.
"""

from __future__ import annotations

import importlib

from ganglion.models.sequence.base import SequenceModel, State, check_ids

SEQUENCE_ARCHITECTURES: dict[str, str] = {
    "rwkv": "ganglion.models.sequence.rwkv:RWKV",
    "spikegpt": "ganglion.models.sequence.spikegpt:SpikeGPT",
    "gla": "ganglion.models.sequence.gla:GLALM",
    "gam": "ganglion.models.sequence.gam:GAMLM",
    "gpt": "ganglion.models.sequence.gpt:GPT",
}


def sequence_model_class(architecture: str) -> type[SequenceModel]:
    """The class of a registered sequence architecture (KeyError if unknown)."""
    module_name, class_name = SEQUENCE_ARCHITECTURES[architecture].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "SEQUENCE_ARCHITECTURES",
    "SequenceModel",
    "State",
    "check_ids",
    "sequence_model_class",
]
