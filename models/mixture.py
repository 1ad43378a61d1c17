"""How an ensemble mixes its experts: the gate renormalized over the experts that ran.

``probs = Σ_{e∈S} w_e · softmax(scores_e)`` with ``w_e = g_e / Σ_{e'∈S} g_e'`` — the same
renormalization as the selection objective ``Q(S)`` (``runtime/selection``). Also the gate's
input features, computed on the host: the input flattened (classifiers), or for token models
the histogram of the tokens seen so far (so the gate follows the prompt, causally, in constant
memory). numpy only: ensembles run without torch.
"""

from __future__ import annotations

import numpy as np

TIE_TOLERANCE = 1e-12  # qualities Q this close are equal (their last bits follow sum order)
COUNTS = "counts"  # a token ensemble's state: running counts [batch, vocab + 1] (last: length)


def member_state_name(member: str, name: str) -> str:
    """A token ensemble's name for member ``member``'s state tensor ``name``."""
    return f"{member}:{name}"


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis (float64, numerically stable)."""
    shifted = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def renormalized(gate: np.ndarray, chosen: list[int], top_k: int | None = None) -> np.ndarray:
    """Gate weights [B, N] kept on the ``chosen`` experts and, per row, on exactly ``top_k``
    of them (the largest; ties: the lower expert index), renormalized to sum to 1; zero
    elsewhere. The one top-k rule: the ensemble kind, the serving coordinator and
    ``selection.gate_within`` all use it."""
    members = sorted({int(e) for e in chosen})
    inside = np.asarray(gate, dtype=np.float64)[:, members]  # [B, |S|], a copy
    if top_k is not None and top_k < len(members):
        dropped = np.argsort(-inside, axis=-1, kind="stable")[:, top_k:]
        np.put_along_axis(inside, dropped, 0.0, axis=-1)
    weights = np.zeros(np.shape(gate), dtype=np.float64)
    weights[:, members] = inside / inside.sum(axis=-1, keepdims=True)
    return weights


def mix(probs: dict[int, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Σ_e weights[:, e] · probs[e] over the experts in ``probs`` ([B, C] each)."""
    total = None
    for e, p in probs.items():
        term = weights[:, e : e + 1] * p
        total = term if total is None else total + term
    assert total is not None
    return total


def flat_features(x: np.ndarray) -> np.ndarray:
    """[B, ...] -> [B, F] float32."""
    return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)


def prefix_histograms(
    ids: np.ndarray, counts: np.ndarray, vocab: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token frequencies of every prefix: ids [B, T], running counts [B, vocab + 1] (the last
    column is the length so far) -> (features [B, T, vocab], counts after the last token)."""
    one_hot = np.zeros((*ids.shape, vocab + 1), dtype=np.float32)
    np.put_along_axis(one_hot, ids[..., None].astype(np.int64), 1.0, axis=-1)
    one_hot[..., vocab] = 1.0
    running = counts[:, None, :] + np.cumsum(one_hot, axis=1)
    features = running[..., :vocab] / running[..., vocab:]
    return features.astype(np.float32), running[:, -1]
