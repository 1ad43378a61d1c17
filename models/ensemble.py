"""An edge-expert ensemble's own part: the post-hoc gate over independently trained experts.

The experts are member programs (any kind with one output of class scores); the gate reads
the same input and gives each expert a weight. How the experts' outputs mix is
``models.mixture`` (numpy, so ensembles run without torch).

Gate features (computed on the host, ``models.mixture``): ``flatten`` (the input flattened,
for images and feature vectors) or ``histogram`` (the frequencies of the tokens seen so far,
for token models: the gate follows the prompt, causally).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

FEATURES = ("flatten", "histogram")


@dataclass
class GateConfig:
    """Hyper-parameters of the gate."""

    experts: list[str]  # member names, in the order of the gate's outputs
    in_features: int  # flattened input size, or the vocabulary for "histogram"
    features: str = "flatten"  # how the input becomes a feature vector
    hidden: int = 64  # width of the gate's hidden layer


class Gate(nn.Module):
    """features(x) -> Linear -> ReLU -> Linear -> softmax over the experts."""

    def __init__(self, config: GateConfig) -> None:
        super().__init__()
        if config.features not in FEATURES:
            raise ValueError(f"gate features must be one of {FEATURES}, got {config.features!r}")
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.in_features, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, len(config.experts)),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Gate weights [B, experts] (positive, summing to 1) for features [B, in_features]
        (``models.mixture``: the input flattened, or the token histogram of the prefix)."""
        return torch.softmax(self.net(features), dim=-1)

    def to_config(self) -> dict[str, Any]:
        """config.json's ``gate`` entry."""
        return asdict(self.config)


class EnsembleProgram(nn.Module):
    """The ensemble's own module: the gate, its settings and the calibration cache.

    top_k: experts kept per input inside the selected subset (None: all of them).
    placement: expert -> the device profile it is meant to run on.
    calibration: per-member outputs on the calibration data, cached so expert selection never
    re-runs the members: ``gate`` [M, N] (the trained gate's weights), ``p_true`` [M, N] (the
    probability each expert gives the true label) and ``labels`` [M].
    """

    def __init__(
        self,
        gate: Gate,
        top_k: int | None = None,
        placement: dict[str, str] | None = None,
        calibration: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.gate = gate
        self.top_k = top_k
        self.placement = dict(placement or {})
        for name, tensor in (calibration or {}).items():
            self.register_buffer(f"calibration_{name}", tensor)

    @property
    def experts(self) -> list[str]:
        """Member names in the gate's order."""
        return list(self.gate.config.experts)

    def calibration(self) -> dict[str, torch.Tensor]:
        """The cached calibration tensors by name (``gate``, ``p_true``, ``labels``)."""
        prefix = "calibration_"
        return {n[len(prefix) :]: b for n, b in self.named_buffers() if n.startswith(prefix)}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Gate weights [B, experts] for the gate's features [B, in_features]."""
        return self.gate(features)

    def to_config(self) -> dict[str, Any]:
        """config.json of the ensemble."""
        return {"gate": self.gate.to_config(), "top_k": self.top_k, "placement": self.placement}

    @classmethod
    def from_config(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> EnsembleProgram:
        """Rebuild from config.json and weights.safetensors."""
        gate = Gate(GateConfig(**config["gate"]))
        prefix = "calibration_"
        calibration = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        program = cls(gate, config.get("top_k"), config.get("placement"), calibration)
        program.load_state_dict(tensors)
        return program
