"""The monotonicity report against a direct count, and its exact and sampled modes."""

from __future__ import annotations

import itertools
import json

import numpy as np

from ganglion.runtime.selection import monotonicity_report
from ganglion.runtime.selection.synthetic import synthetic_problem


def test_exact_report_matches_a_direct_count():
    problem = synthetic_problem(np.random.default_rng(0), 6, 15, "adversarial")
    report = monotonicity_report(problem.gate, problem.p_true)
    pairs = lowering = 0
    largest = 0.0
    for size in range(1, 6):
        for subset in itertools.combinations(range(6), size):
            for e in set(range(6)) - set(subset):
                drop = problem.quality(subset) - problem.quality(subset + (e,))
                pairs += 1
                lowering += drop > 1e-12
                largest = max(largest, drop)
    assert report.exact and report.pairs == pairs and report.lowering == lowering
    assert abs(report.largest_drop - largest) < 1e-12
    subset, added = report.worst
    drop = problem.quality(subset) - problem.quality(tuple(sorted(subset + (added,))))
    assert abs(drop - largest) < 1e-12
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert as_json["worst"] == {"subset": list(subset), "added": added}
    assert as_json["fraction"] == lowering / pairs


def test_equally_correct_experts_never_lower_quality():
    # every expert equally right on every sample: adding any expert never changes Q
    gate = np.random.default_rng(1).uniform(0.1, 1.0, (10, 5))
    report = monotonicity_report(gate, np.full((10, 5), 0.7))
    assert report.lowering == 0 and report.largest_drop == 0.0 and report.worst is None


def test_large_problems_are_sampled_with_a_fixed_seed():
    problem = synthetic_problem(np.random.default_rng(2), 20, 12, "random")
    first = monotonicity_report(problem.gate, problem.p_true, samples=3000, seed=7)
    assert not first.exact and first.pairs == 3000 and first.seed == 7
    assert first == monotonicity_report(problem.gate, problem.p_true, samples=3000, seed=7)
    assert 0.0 < first.fraction < 1.0
    small = monotonicity_report(problem.gate[:, :13], problem.p_true[:, :13], exact_up_to=13)
    assert small.exact and small.pairs == 13 * 2**12 - 13
