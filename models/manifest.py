"""The manifest: what a deployable program is, its tensors, time semantics and provenance.

Plain dataclasses with JSON (de)serialization; one registry of kinds, versioned format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ganglion.models.errors import BundleError

FORMAT_VERSION = 1
KINDS = ("spiking", "linear", "ensemble", "dense")
ENCODINGS = ("none", "direct", "rate")
DECODINGS = ("none", "count", "membrane")


@dataclass
class TensorSpec:
    """A named tensor; shape uses -1 for the batch axis (time semantics: see TimeSemantics)."""

    name: str
    shape: list[int]  # -1 marks the dynamic batch axis
    dtype: str = "float32"


@dataclass
class TimeSemantics:
    """How a program consumes time.

    encoding: "direct" (the same input current every timestep), "rate" (seeded Poisson
    spikes) or "none" (inputs are already time-major [T, batch, ...]).
    decoding: "count" (spike count of the output layer), "membrane" (mean output current
    over T) or "none" (outputs are time-major [T, batch, ...]).
    """

    timesteps: int = 1
    dt: float = 1e-4  # seconds per timestep, used to discretize continuous-time NIR neurons
    encoding: str = "none"
    decoding: str = "none"
    seed: int = 0  # seed of the rate encoder

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise BundleError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.decoding not in DECODINGS:
            raise BundleError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.timesteps < 1:
            raise BundleError(f"timesteps must be >= 1, got {self.timesteps}")


@dataclass
class Manifest:
    """Everything a backend needs to know about a program besides its weights."""

    kind: str
    architecture: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    time: TimeSemantics = field(default_factory=TimeSemantics)
    state: list[TensorSpec] = field(default_factory=list)
    numerics: str = "float32"  # "float32" or "loihi2-fixed"
    provenance: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BundleError(f"manifest kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the manifest."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a manifest dict, with a clear error on a missing field or a newer format."""
        try:
            version = int(data.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise BundleError(
                    f"manifest format {version} is newer than this Ganglion ({FORMAT_VERSION})"
                )
            return cls(
                kind=data["kind"],
                architecture=data["architecture"],
                inputs=[TensorSpec(**t) for t in data["inputs"]],
                outputs=[TensorSpec(**t) for t in data["outputs"]],
                time=TimeSemantics(**data.get("time", {})),
                state=[TensorSpec(**t) for t in data.get("state", [])],
                numerics=data.get("numerics", "float32"),
                provenance=dict(data.get("provenance", {})),
                report=dict(data.get("report", {})),
                artifacts=dict(data.get("artifacts", {})),
                format_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest.json is malformed: {exc!r}") from exc
