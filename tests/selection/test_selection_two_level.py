"""Fine gating inside a subset, and the coarse subset cache keyed by telemetry version."""

from __future__ import annotations

import numpy as np
import pytest

from ganglion.models.mixture import renormalized
from ganglion.runtime.selection import SubsetCache, brute_force, gate_within
from ganglion.runtime.selection.synthetic import synthetic_problem


def test_gate_within_renormalizes_over_the_subset():
    rows = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    out = gate_within(rows, [1, 3])
    assert np.allclose(out.sum(axis=1), 1.0)
    assert (out[:, [0, 2]] == 0).all()
    assert np.allclose(out[0, [1, 3]], [0.2 / 0.6, 0.4 / 0.6])
    assert np.allclose(gate_within(rows[1], [1, 3]), out[1])  # one row in, one row out


def test_gate_within_top_k_keeps_the_largest_per_row():
    rows = np.array([[0.1, 0.5, 0.3, 0.1], [0.6, 0.1, 0.1, 0.2]])
    out = gate_within(rows, [0, 1, 2, 3], top_k=2)
    assert np.allclose(out[0], [0, 0.5 / 0.8, 0.3 / 0.8, 0])
    assert np.allclose(out[1], [0.6 / 0.8, 0, 0, 0.2 / 0.8])
    tie = gate_within(np.array([0.25, 0.25, 0.25, 0.25]), [0, 1, 2, 3], top_k=1)
    assert tie.tolist() == [1.0, 0.0, 0.0, 0.0]  # ties: the lower index


def test_top_k_keeps_exactly_k_on_ties_lower_index_first():
    # three experts tie for the largest weight: top-2 keeps 0 and 1, never all three
    rows = np.array([[0.3, 0.3, 0.3, 0.1], [0.1, 0.3, 0.3, 0.3]])
    weights = renormalized(rows, [3, 2, 1, 0], top_k=2)  # chosen order does not matter
    assert weights.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]]
    assert ((weights > 0).sum(axis=1) == 2).all()
    # inside a subset the tie goes to the lowest chosen index, not the first listed
    one = renormalized(np.array([[0.1, 0.2, 0.2, 0.2]]), [3, 2, 1], top_k=1)
    assert one.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_gate_within_and_the_mixture_agree_with_a_per_row_sort():
    rng = np.random.default_rng(3)
    rows = rng.choice([0.1, 0.2, 0.4], size=(50, 6))  # coarse values: many ties per row
    for subset, top_k in (([0, 2, 3, 5], 2), ([5, 4, 3, 2, 1], 3), ([4], 1), ([0, 5], None)):
        expected = np.zeros_like(rows)
        for i, row in enumerate(rows):
            keep = sorted(subset, key=lambda e: (-row[e], e))[: top_k or len(subset)]
            expected[i, keep] = row[keep] / row[keep].sum()
        np.testing.assert_allclose(gate_within(rows, subset, top_k), expected, rtol=1e-15)
        np.testing.assert_allclose(renormalized(rows, subset, top_k), expected, rtol=1e-15)


@pytest.mark.parametrize(
    "subset, top_k, message",
    [([], None, "subset"), ([0, 9], None, "subset"), ([1], 0, "top_k"), ([2], None, "> 0")],
)
def test_gate_within_refuses_bad_arguments(subset, top_k, message):
    with pytest.raises(ValueError, match=message):
        gate_within(np.array([0.5, 0.5, 0.0]), subset, top_k)


def test_cache_reuses_answers_until_telemetry_changes():
    rng = np.random.default_rng(0)
    problem = synthetic_problem(rng, 8, 30, "trained")
    cache = SubsetCache(max_entries=4)
    first = cache.select("chat", problem, 6.0, 60.0, telemetry_version=1)
    assert first.experts == brute_force(problem, 6.0, 60.0).experts
    assert cache.select("chat", problem, 6.0, 60.0, telemetry_version=1) is first
    assert (cache.hits, cache.solves) == (1, 1)
    dearer = synthetic_problem(np.random.default_rng(1), 8, 30, "trained")  # new node costs
    again = cache.select("chat", dearer, 6.0, 60.0, telemetry_version=2)
    assert cache.solves == 2
    assert again.experts == brute_force(dearer, 6.0, 60.0).experts


def test_cache_evicts_the_least_recently_used_and_caches_infeasible():
    problem = synthetic_problem(np.random.default_rng(2), 5, 10, "random")
    cache = SubsetCache(max_entries=2)
    assert cache.select("a", problem, 0.0, 1.0, "v") is None  # nothing fits, still cached
    cache.select("b", problem, 9.0, 90.0, "v")
    cache.select("a", problem, 0.0, 1.0, "v")  # hit: "a" is now the most recent
    cache.select("c", problem, 9.0, 90.0, "v")  # evicts "b"
    assert len(cache) == 2 and cache.hits == 1
    cache.select("b", problem, 9.0, 90.0, "v")
    assert cache.solves == 4
