"""An MoE² edge-expert ensemble from independently trained experts and a post-hoc gate.

The experts are frozen: the runtime runs them on the calibration data
(``runtime.ensemble_calibration``) and the converter gets their class probabilities (no joint
training, no access to their training data). It caches each expert's probability of the
true label ``p_true[i][e]``, then trains the gate (``models.ensemble.Gate``) to maximize the
mixture likelihood ``Σ_i log Σ_e g_ie · p_true_ie`` — the gate for the full expert set, which
expert selection renormalizes over any subset. The trained gate's weights on the calibration
data are cached beside ``p_true``, so selection never re-runs the members. The manifest's
report holds the gate's quality and how far it departs from monotone ``Q`` (``monotonicity``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganglion.models.deployable import Deployable
from ganglion.models.ensemble import EnsembleProgram, Gate, GateConfig
from ganglion.models.errors import ConversionError
from ganglion.models.manifest import Manifest, SequenceTime, SpikingTime, TensorSpec
from ganglion.models.mixture import (
    COUNTS,
    flat_features,
    member_state_name,
    prefix_histograms,
)
from ganglion.models.monotonicity import monotonicity_report


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
            raise ConversionError(
                f"expert {name!r} is a token model: build with convert_lm_ensemble "
                "(ganglion convert ensemble --corpora ...)"
            )
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
        losses.append(float(loss.detach()))
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


def gate_monotonicity(gate: np.ndarray, p_true: np.ndarray, experts: list[str]) -> dict[str, Any]:
    """How far the trained gate departs from monotone ``Q`` on the calibration data
    (``models.monotonicity``), the worst pair named by expert."""
    positive = np.maximum(gate, np.finfo(np.float64).tiny)  # a float32 softmax can underflow
    summary = monotonicity_report(positive, p_true).to_dict()
    if summary["worst"] is not None:
        worst = summary["worst"]
        summary["worst"] = {
            "subset": [experts[e] for e in worst["subset"]],
            "added": experts[worst["added"]],
        }
    return summary


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
    features = flat_features(inputs[names[0]])
    outputs = [TensorSpec("probs", [-1, classes]), TensorSpec("gate", [-1, len(experts)])]
    module, manifest = _gated(
        experts,
        features,
        p_true,
        labels,
        "flatten",
        top_k,
        placement,
        epochs,
        hidden,
        seed,
        specs,
        outputs,
        None,
    )
    config = {**module.to_config(), "input_names": names}
    return Deployable(module, manifest, config, dict(members))


def _gated(
    experts: list[str],
    features: np.ndarray,
    p_true: np.ndarray,
    labels: np.ndarray,
    kind: str,
    top_k: int | None,
    placement: dict[str, str] | None,
    epochs: int,
    hidden: int,
    seed: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    time: SequenceTime | None,
) -> tuple[EnsembleProgram, Manifest]:
    """Train the gate on (features, p_true) and build the ensemble's module and manifest."""
    x = torch.from_numpy(features)
    torch.manual_seed(seed)  # the gate's first weights too: one seed, one gate, in any process
    gate = Gate(GateConfig(experts, features.shape[1], kind, hidden))
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
        "monotonicity": gate_monotonicity(weights, p_true, experts),
        "calibration_samples": len(p_true),
        "gate_loss": {"first": losses[0], "last": losses[-1], "epochs": epochs},
    }
    manifest = Manifest(
        kind="ensemble",
        architecture="moe2_gate",
        inputs=inputs,
        outputs=outputs,
        time=time,
        report=report,
        provenance={"converter": "ganglion.converters.ensemble", "seed": seed},
    )
    return module, manifest


def convert_lm_ensemble(
    members: dict[str, Deployable],
    windows: np.ndarray,
    probs: np.ndarray,
    top_k: int | None = None,
    placement: dict[str, str] | None = None,
    epochs: int = 300,
    hidden: int = 64,
    seed: int = 0,
    max_samples: int = 16384,
) -> Deployable:
    """An ensemble of token models (e.g. one trained on prose, one on code) with a gate that
    reads the frequencies of the tokens seen so far.

    windows: calibration token windows [W, L + 1] (inputs and next-token targets, drawn from
    every corpus the experts cover); probs: each expert's next-token probabilities on
    ``windows[:, :-1]``, [W, L, experts, vocab]. Every position is a calibration sample; at
    most ``max_samples`` (evenly spaced) are cached for selection.
    """
    if len(members) < 2:
        raise ConversionError(f"an ensemble needs at least 2 experts, got {len(members)}")
    times = [m.manifest.time for m in members.values()]
    if not all(isinstance(t, SequenceTime) for t in times):
        raise ConversionError("an ensemble of token models needs sequence experts only")
    vocab = {t.vocab_size for t in times}  # type: ignore[union-attr]
    if len(vocab) != 1:
        raise ConversionError(f"the experts' vocabularies differ: {sorted(vocab)}")
    (vocab_size,) = vocab
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.dtype.kind not in "iu":
        raise ConversionError(f"windows must be integer [W, L + 1], got {list(windows.shape)}")
    count, length = windows.shape[0], windows.shape[1] - 1
    experts = list(members)
    if probs.shape != (count, length, len(experts), vocab_size) or not np.isfinite(probs).all():
        raise ConversionError(
            f"expert probabilities must be finite [{count}, {length}, {len(experts)}, "
            f"{vocab_size}], got {list(probs.shape)}"
        )
    targets = windows[:, 1:]
    p_true = np.take_along_axis(probs, targets[:, :, None, None], axis=-1)[..., 0]
    zeros = np.zeros((count, vocab_size + 1), dtype=np.float32)
    features, _ = prefix_histograms(windows[:, :-1], zeros, vocab_size)
    keep = np.linspace(0, count * length - 1, min(max_samples, count * length)).astype(np.int64)
    p_true = p_true.reshape(count * length, len(experts))[keep]
    features = features.reshape(count * length, vocab_size)[keep]
    labels = targets.reshape(-1)[keep]
    context = [t.context for t in times if t.context]  # type: ignore[union-attr]
    time = SequenceTime(vocab_size=vocab_size, context=min(context) if context else 0)
    outputs = [TensorSpec("logits", [-1, vocab_size]), TensorSpec("gate", [-1, len(experts)])]
    state = [TensorSpec(COUNTS, [-1, vocab_size + 1])]
    state += [
        TensorSpec(member_state_name(name, s.name), list(s.shape), s.dtype)
        for name, member in members.items()
        for s in member.manifest.state
    ]
    module, manifest = _gated(
        experts,
        features,
        p_true,
        labels,
        "histogram",
        top_k,
        placement,
        epochs,
        hidden,
        seed,
        [TensorSpec("ids", [-1], "int64")],
        outputs,
        time,
    )
    manifest.state = state
    config = {**module.to_config(), "input_names": ["ids"]}
    return Deployable(module, manifest, config, dict(members))
