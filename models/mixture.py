"""How an ensemble mixes its experts: the gate renormalized over the experts that ran.

``probs = Σ_{e∈S} w_e · softmax(scores_e)`` with ``w_e = g_e / Σ_{e'∈S} g_e'`` — the same
renormalization as the selection objective ``Q(S)`` (``runtime/selection``). numpy only.
"""

from __future__ import annotations

import numpy as np


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis (float64, numerically stable)."""
    shifted = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def renormalized(gate: np.ndarray, chosen: list[int], top_k: int | None = None) -> np.ndarray:
    """Gate weights [B, N] kept on ``chosen`` experts (and, per row, their ``top_k`` largest),
    renormalized to sum to 1; zero elsewhere."""
    weights = np.zeros_like(gate, dtype=np.float64)
    weights[:, chosen] = gate[:, chosen]
    if top_k is not None and top_k < len(chosen):
        cut = -np.sort(-weights, axis=-1)[:, top_k - 1 : top_k]
        weights = np.where(weights >= cut, weights, 0.0)
    return weights / weights.sum(axis=-1, keepdims=True)


def mix(probs: dict[int, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Σ_e weights[:, e] · probs[e] over the experts in ``probs`` ([B, C] each)."""
    total = None
    for e, p in probs.items():
        term = weights[:, e : e + 1] * p
        total = term if total is None else total + term
    assert total is not None
    return total
