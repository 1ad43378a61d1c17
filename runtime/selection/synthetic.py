"""Synthetic MoE² selection problems for tests and benchmarks (no real data involved).

Samples belong to one of a few topics; expert ``e`` has a skill per topic, sample ``i`` a
difficulty, so ``p_true[i, e] = sigmoid(skill[e, topic_i] - difficulty_i + noise)``. Three gates:

- ``trained``: a softmax that follows the experts' correctness (the gate MoE² assumes);
- ``random``: a softmax of noise, unrelated to correctness (Q far from monotone);
- ``adversarial``: a softmax that favours the *wrong* experts (adding a weak expert with a
  large weight lowers Q, so Q is as far from monotone as it gets).

``duplicates`` appends exact copies of random experts (same costs and columns) to create ties.
"""

from __future__ import annotations

import numpy as np

from ganglion.runtime.selection.problem import Expert, SelectionProblem

GATES = ("trained", "random", "adversarial")


def synthetic_problem(
    rng: np.random.Generator,
    n_experts: int,
    n_samples: int,
    gate: str = "trained",
    duplicates: int = 0,
    topics: int = 4,
) -> SelectionProblem:
    """A random problem with ``n_experts`` experts (the last ``duplicates`` are copies)."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    if not 0 <= duplicates < n_experts:
        raise ValueError(f"duplicates must be in [0, {n_experts}), got {duplicates}")
    base = n_experts - duplicates
    topic = rng.integers(0, topics, n_samples)
    skill = rng.normal(0.0, 1.5, (base, topics))
    logit = skill[:, topic].T - rng.normal(0.0, 1.0, (n_samples, 1))
    logit = logit + rng.normal(0.0, 0.5, (n_samples, base))  # [M, base]
    scores = {
        "trained": 1.5 * logit + rng.normal(0.0, 0.5, logit.shape),
        "random": rng.normal(0.0, 1.0, logit.shape),
        "adversarial": -2.0 * logit,
    }[gate]
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights = np.maximum(weights / weights.sum(axis=1, keepdims=True), 1e-12)
    p_true = 1.0 / (1.0 + np.exp(-logit))
    costs = np.column_stack(
        [
            rng.uniform(0.5, 5.0, base),  # energy_j
            rng.uniform(5.0, 50.0, base),  # latency_ms
            rng.uniform(0.0, 0.5, base),  # tx_energy_j
            rng.uniform(0.0, 5.0, base),  # tx_latency_ms
        ]
    )
    copies = rng.integers(0, base, duplicates)
    cols = np.concatenate([np.arange(base), copies])
    experts = tuple(Expert(f"e{j}", *(float(v) for v in costs[src])) for j, src in enumerate(cols))
    return SelectionProblem(experts, 1.0, 0.5, weights[:, cols], p_true[:, cols])


def binding_budgets(problem: SelectionProblem, rng: np.random.Generator) -> tuple[float, float]:
    """(energy J, latency ms) budgets that bind: 10-40 % of all experts' energy, and a
    latency that leaves out the slowest experts and caps the subset size."""
    energy = float(problem.cost_j.sum() * rng.uniform(0.1, 0.4))
    slowest = float(np.quantile(problem.delay_ms, rng.uniform(0.5, 0.95)))
    size = rng.uniform(2.0, max(2.0, problem.n_experts / 2))
    return energy, slowest + problem.base_ms + problem.per_expert_ms * size


def edge_budgets(problem: SelectionProblem, rng: np.random.Generator) -> tuple[float, float]:
    """Budgets exactly equal to a random subset's E and L (that subset is just feasible)."""
    size = int(rng.integers(1, problem.n_experts + 1))
    subset = tuple(sorted(int(e) for e in rng.choice(problem.n_experts, size, replace=False)))
    return problem.energy(subset), problem.latency(subset)
