"""Program kinds: everything kind-specific, one module per kind, found through ``manifest.kind``.

Kinds are imported on first use; none imports torch at import time, so a device running ONNX
programs needs no torch.
"""

from __future__ import annotations

import functools
import importlib

from ganglion.models.manifest import KINDS, Manifest
from ganglion.runtime.kinds.base import BATCH, TIME, Arrays, ProgramKind

KIND_CLASSES: dict[str, str] = {
    "spiking": "ganglion.runtime.kinds.spiking:SpikingKind",
    "sequence": "ganglion.runtime.kinds.sequence:SequenceKind",
    "dense": "ganglion.runtime.kinds.dense:DenseKind",
    "ensemble": "ganglion.runtime.kinds.ensemble:EnsembleKind",
}
assert set(KIND_CLASSES) == set(KINDS), "every manifest kind has a kind module"


@functools.cache
def get_kind(name: str) -> ProgramKind:
    """The kind called ``name`` (one instance per process)."""
    module_name, class_name = KIND_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def kind_of(manifest: Manifest) -> ProgramKind:
    """The kind of the program ``manifest`` describes."""
    return get_kind(manifest.kind)


__all__ = ["BATCH", "KIND_CLASSES", "TIME", "Arrays", "ProgramKind", "get_kind", "kind_of"]
