"""Run an ensemble's frozen experts on calibration data (what the gate is trained from)."""

from __future__ import annotations

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.mixture import softmax
from ganglion.runtime.kinds.ensemble import expert_probs
from ganglion.runtime.session import load


def expert_probabilities(
    member: Deployable, inputs: dict[str, np.ndarray], name: str = "expert"
) -> np.ndarray:
    """Class probabilities [M, C] of one expert (``name``, for errors) on inputs given by
    position (torch where the expert has a torch form, else ONNX Runtime), in batches of the
    member's ``max_batch``; ShapeError naming the first sample whose scores are not finite."""
    renamed = {s.name: v for s, v in zip(member.manifest.inputs, inputs.values(), strict=True)}
    try:
        session = load(member)
    except BackendUnavailable:
        session = load(member, backend="onnxruntime")
    rows = len(next(iter(renamed.values())))
    step = member.manifest.max_batch or rows  # a member exported with a bounded batch
    with session:
        try:
            parts = [
                next(iter(session.run({k: v[i : i + step] for k, v in renamed.items()}).values()))
                for i in range(0, rows, step)
            ]
        except ShapeError as exc:  # the calibration inputs do not fit this expert
            raise ShapeError(f"expert {name!r}: {exc}") from None
    return expert_probs({"": np.concatenate(parts)}, name)


def all_expert_probabilities(
    members: dict[str, Deployable], inputs: dict[str, np.ndarray]
) -> np.ndarray:
    """[M, experts, classes] for every member, in the order of ``members``."""
    return np.stack([expert_probabilities(m, inputs, n) for n, m in members.items()], axis=1)


def token_expert_probabilities(members: dict[str, Deployable], windows: np.ndarray) -> np.ndarray:
    """Next-token probabilities [W, L, experts, vocab] of every token model on
    ``windows[:, :-1]`` (windows [W, L + 1]), in the order of ``members``."""
    out = []
    for member in members.values():
        with load(member) as session:
            logits = session.run({"ids": np.ascontiguousarray(windows[:, :-1])})["logits"]
        out.append(softmax(logits))
    return np.stack(out, axis=2)
