"""An MoE² edge-expert ensemble from independently trained experts and a post-hoc gate.

The experts are frozen: the runtime runs them on the calibration data
(``runtime.ensemble_calibration``) and the converter gets their class probabilities (no joint
training, no access to their training data). It caches each expert's probability of the
true label ``p_true[i][e]``, then trains the gate (``models.ensemble.Gate``) to maximize the
mixture likelihood ``Σ_i log Σ_e g_ie · p_true_ie`` — the gate for the full expert set, which
expert selection renormalizes over any subset. The trained gate's weights on the calibration
data are cached beside ``p_true``, so selection never re-runs the members.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganglion.models.deployable import Deployable
from ganglion.models.ensemble import EnsembleProgram, Gate, GateConfig
from ganglion.models.errors import ConversionError
from ganglion.models.manifest import Manifest, SpikingTime, TensorSpec


def _output_classes(name: str, member: Deployable) -> int:
    outputs = member.manifest.outputs
    if len(outputs) != 1:
        raise ConversionError(f"expert {name!r} has {len(outputs)} outputs; an expert has one")
    shape = outputs[0].shape
    if len(shape) != 2 or shape[1] < 2:
        raise ConversionError(f"expert {name!r} outputs {shape}; experts output [batch, classes]")
    return shape[1]


def check_members(members: dict[str, Deployable]) -> tuple[list[TensorSpec], int]:
    """The common input specs (by position) and class count, or ConversionError."""
    if len(members) < 2:
        raise ConversionError(f"an ensemble needs at least 2 experts, got {len(members)}")
    names = list(members)
    first = members[names[0]].manifest
    classes = _output_classes(names[0], members[names[0]])
    for name in names:
        m = members[name].manifest
        if isinstance(m.time, SpikingTime) and m.time.time_major:
            raise ConversionError(
                f"expert {name!r} takes time-major input; experts take [batch, ...]"
            )
        if m.kind == "sequence":
            raise ConversionError(f"expert {name!r} is a sequence program; experts are classifiers")
        ours = [(s.shape, s.dtype) for s in m.inputs]
        want = [(s.shape, s.dtype) for s in first.inputs]
        if ours != want:
            raise ConversionError(f"expert {name!r} takes inputs {ours}; {names[0]!r} takes {want}")
        if _output_classes(name, members[name]) != classes:
            raise ConversionError(f"experts {names[0]!r} and {name!r} disagree on the classes")
    return [TensorSpec(s.name, list(s.shape), s.dtype) for s in first.inputs], classes


def train_gate(
    gate: Gate, x: torch.Tensor, p_true: torch.Tensor, epochs: int, seed: int, lr: float = 1e-2
) -> list[float]:
    """Maximize the mixture likelihood on (x, p_true); returns the loss per epoch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(gate.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        mixed = (gate(x) * p_true).sum(-1)
        loss = -torch.log(mixed.clamp_min(1e-12)).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def gate_quality(gate: np.ndarray, p_true: np.ndarray) -> dict[str, float]:
    """Calibration figures: the ensemble's Q(all), each expert's mean p_true, the oracle."""
    q_all = float(((gate * p_true).sum(-1) / gate.sum(-1)).mean())
    per_expert = p_true.mean(axis=0)
    return {
        "quality_all": q_all,
        "best_single_expert": float(per_expert.max()),
        "oracle": float(p_true.max(axis=1).mean()),
        "gate_picks_best": float((gate.argmax(-1) == p_true.argmax(-1)).mean()),
    }


def convert_ensemble(
    members: dict[str, Deployable],
    calib: dict[str, np.ndarray],
    labels: np.ndarray,
    probs: np.ndarray,
    top_k: int | None = None,
    placement: dict[str, str] | None = None,
    epochs: int = 300,
    hidden: int = 64,
    seed: int = 0,
) -> Deployable:
    """An ensemble Deployable: the members, a gate trained on ``calib`` and the cached outputs.

    calib: calibration inputs by name (the first expert's names, or ``x`` for one input);
    labels: integer labels [M]; probs: every expert's class probabilities on ``calib``,
    [M, experts, classes] in the order of ``members``. top_k: experts kept per input (None:
    every selected one).
    placement: expert -> the device profile it is meant for.
    """
    specs, classes = check_members(members)
    names = [s.name for s in specs]
    if len(names) == 1 and names[0] not in calib and "x" in calib:
        calib = {names[0]: calib["x"]}
    missing = [n for n in names if n not in calib]
    if missing:
        raise ConversionError(f"calibration data lacks input {missing[0]!r} (has {sorted(calib)})")
    inputs = {s.name: np.asarray(calib[s.name]).astype(s.dtype) for s in specs}
    count = len(next(iter(inputs.values())))
    labels = np.asarray(labels)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ConversionError(
            f"labels must be {count} integers, got {labels.dtype} {list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ConversionError(
            f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}"
        )
    if top_k is not None and not 1 <= top_k <= len(members):
        raise ConversionError(f"--top-k must be in [1, {len(members)}], got {top_k}")
    experts = list(members)
    if probs.shape != (count, len(experts), classes) or not np.isfinite(probs).all():
        raise ConversionError(
            f"expert probabilities must be finite [{count}, {len(experts)}, {classes}], "
            f"got {list(probs.shape)}"
        )
    p_true = probs[np.arange(count), :, labels]  # [M, N]
    x = torch.from_numpy(inputs[names[0]])
    features = "histogram" if specs[0].dtype.startswith("int") else "flatten"
    in_features = int(np.prod(specs[0].shape[1:])) if features == "flatten" else int(x.max()) + 1
    gate = Gate(GateConfig(experts, in_features, features, hidden))
    losses = train_gate(gate, x, torch.from_numpy(p_true).float(), epochs, seed)
    gate.eval()
    with torch.no_grad():
        weights = gate(x).double().numpy()
    calibration = {
        "gate": torch.from_numpy(weights).float(),
        "p_true": torch.from_numpy(p_true).float(),
        "labels": torch.from_numpy(labels.astype(np.int64)),
    }
    module = EnsembleProgram(gate, top_k, placement, calibration)
    report: dict[str, Any] = {
        "quality": gate_quality(weights, p_true),
        "calibration_samples": count,
        "gate_loss": {"first": losses[0], "last": losses[-1], "epochs": epochs},
    }
    manifest = Manifest(
        kind="ensemble",
        architecture="moe2_gate",
        inputs=specs,
        outputs=[TensorSpec("probs", [-1, classes]), TensorSpec("gate", [-1, len(experts)])],
        report=report,
        provenance={"converter": "ganglion.converters.ensemble", "seed": seed},
    )
    config = {**module.to_config(), "input_names": names}
    return Deployable(module, manifest, config, dict(members))
