"""How far a gate departs from MoE²'s monotone quality on calibration data.

With the optimal gate, adding an expert never lowers ``Q`` (the paper's optimality-preserving
property); a real gate can break that. The report counts pairs ``(S, e ∉ S)``, ``S`` non-empty,
where ``Q(S ∪ {e}) < Q(S) - TIE_TOLERANCE`` and the largest drop ``Q(S) - Q(S ∪ {e})``. Exact
over every pair up to ``exact_up_to`` experts (``N·2^(N-1) - N`` pairs); above, a uniform
sample: a subset size uniform in ``1..N-1``, the members and ``e`` uniform, ``numpy`` seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ganglion.models.mixture import TIE_TOLERANCE


@dataclass(frozen=True)
class MonotonicityReport:
    """Pairs checked, how many lower Q, the largest drop and the pair that shows it."""

    exact: bool  # every pair (True) or a seeded sample (False)
    pairs: int
    lowering: int
    largest_drop: float  # 0.0 when no pair lowers Q
    worst: tuple[tuple[int, ...], int] | None  # (S, e) with the largest drop
    seed: int | None  # the sample's seed; None when exact

    @property
    def fraction(self) -> float:
        """Share of the pairs where adding the expert lowers Q."""
        return self.lowering / self.pairs if self.pairs else 0.0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        worst = (
            None if self.worst is None else {"subset": list(self.worst[0]), "added": self.worst[1]}
        )
        return {
            "exact": self.exact,
            "pairs": self.pairs,
            "lowering": self.lowering,
            "fraction": self.fraction,
            "largest_drop": self.largest_drop,
            "worst": worst,
            "seed": self.seed,
        }


def _qualities(gate: np.ndarray, gp: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``[K]`` Q of each row of the 0/1 membership matrix ``[K, N]``."""
    onehot = members.astype(np.float64)
    return ((onehot @ gp.T) / (onehot @ gate.T)).mean(axis=1)


def monotonicity_report(
    gate: np.ndarray,
    p_true: np.ndarray,
    exact_up_to: int = 12,
    samples: int = 20_000,
    seed: int = 0,
) -> MonotonicityReport:
    """Measure non-monotonicity of ``Q`` for ``gate`` ``[M, N]`` (> 0) and ``p_true`` ``[M, N]``."""
    gate = np.asarray(gate, dtype=np.float64)
    p_true = np.asarray(p_true, dtype=np.float64)
    if gate.ndim != 2 or gate.shape != p_true.shape or gate.size == 0:
        raise ValueError(
            f"gate and p_true must both be [M, N], got {gate.shape} and {p_true.shape}"
        )
    if not (gate > 0).all():
        raise ValueError("gate entries must be > 0")
    n = gate.shape[1]
    if n < 2:
        return MonotonicityReport(True, 0, 0, 0.0, None, None)
    gp = gate * p_true
    if n <= exact_up_to:
        return _exact(gate, gp, n)
    return _sampled(gate, gp, n, samples, seed)


def _exact(gate: np.ndarray, gp: np.ndarray, n: int) -> MonotonicityReport:
    masks = np.arange(2**n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)  # [2^N, N]
    quality = np.zeros(2**n)
    quality[1:] = _qualities(gate, gp, bits[1:])
    pairs, lowering, largest, worst = 0, 0, 0.0, None
    for e in range(n):
        base = masks[(masks > 0) & ~bits[:, e]]  # non-empty S without e
        drop = quality[base] - quality[base | (1 << e)]
        pairs += drop.size
        lowering += int((drop > TIE_TOLERANCE).sum())
        j = int(np.argmax(drop))
        if drop[j] > largest:
            largest = float(drop[j])
            worst = (tuple(int(x) for x in np.flatnonzero(bits[base[j]])), e)
    return MonotonicityReport(True, pairs, lowering, largest, worst, None)


def _sampled(gate: np.ndarray, gp: np.ndarray, n: int, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((samples, n)), axis=1)  # a random permutation per pair
    size = rng.integers(1, n, samples)  # |S| in 1..N-1; e is the next expert in the order
    ranks = np.argsort(order, axis=1)  # position of each expert in the permutation
    inside = ranks < size[:, None]  # [samples, N] membership of S
    added = order[np.arange(samples), size]
    joined = inside.copy()
    joined[np.arange(samples), added] = True
    drop = np.concatenate(
        [
            _qualities(gate, gp, inside[s : s + 2048]) - _qualities(gate, gp, joined[s : s + 2048])
            for s in range(0, samples, 2048)
        ]
    )
    lowering = int((drop > TIE_TOLERANCE).sum())
    j = int(np.argmax(drop))
    worst = (tuple(int(e) for e in np.flatnonzero(inside[j])), int(added[j]))
    largest = max(float(drop[j]), 0.0)
    return MonotonicityReport(
        False, samples, lowering, largest, worst if largest > 0 else None, seed
    )


def monotonicity_line(summary: dict[str, Any]) -> str:
    """One line for people of a monotonicity summary (``MonotonicityReport.to_dict()``, the worst
    pair named by expert), as ``select`` and ``inspect`` print it."""
    how = (
        "every pair checked"
        if summary["exact"]
        else f"{summary['pairs']:,} pairs sampled, seed {summary['seed']}"
    )
    line = (
        f"gate monotonicity on the calibration data: adding an expert lowers quality in "
        f"{summary['lowering']:,} of {summary['pairs']:,} pairs ({summary['fraction']:.1%}; {how})"
    )
    worst = summary["worst"]
    if worst is None:
        return line
    return (
        f"{line}; largest drop {summary['largest_drop']:.4g}, adding {worst['added']} to "
        f"{{{', '.join(worst['subset'])}}}"
    )
