"""``ganglion profile`` notes a noisy machine when a measured p99 exceeds
``NOISY_P99_OVER_P50`` times the p50, and only then (synthetic per-call times, no sleeping)."""

from __future__ import annotations

import pytest

from ganglion.device import OpCounts, SimulatedMeter, get_profile, predict
from ganglion.runtime.profiling import NOISY_P99_OVER_P50, ProfileResult, measured_result

BASE_S = 2.0**-10  # a power of two: tail / BASE_S is exactly the factor the tail was made with
RUNS = 100


def _measured(tail_over_p50: float) -> ProfileResult:
    """A measured result of RUNS calls: BASE_S each, but the slowest two ``tail_over_p50``
    times as long, so p50 is BASE_S and p99 (between the two slowest) is the tail."""
    times = [BASE_S] * (RUNS - 2) + [BASE_S * tail_over_p50] * 2
    profile = get_profile("rtx-4090")
    counts = OpCounts(macs={"fp32": 1e6})
    meter = SimulatedMeter(profile.mode().watts, "test power limit")
    wall = sum(times)
    return measured_result(
        profile, "torch", 1, times, wall * 100.0, wall, meter, predict(counts, profile), counts
    )


def _noisy_notes(result: ProfileResult) -> list[str]:
    return [note for note in result.notes if note.startswith("noisy machine")]


@pytest.mark.parametrize(
    "factor",
    [1.0, (1.0 + NOISY_P99_OVER_P50) / 2, NOISY_P99_OVER_P50],
    ids=["flat", "mild", "limit"],
)
def test_no_note_while_p99_over_p50_is_within_the_limit(factor: float) -> None:
    result = _measured(factor)
    assert result.latency is not None and result.latency.spread == factor
    assert _noisy_notes(result) == []


@pytest.mark.parametrize("factor", [NOISY_P99_OVER_P50 * 1.01, 10.0], ids=["above", "far"])
def test_note_names_the_spread_once_p99_over_p50_exceeds_the_limit(factor: float) -> None:
    result = _measured(factor)
    assert result.latency is not None and result.latency.spread == pytest.approx(factor)
    (note,) = _noisy_notes(result)
    assert f"p99 is {factor:.1f}x p50" in note
    assert note in result.to_dict()["notes"]  # what --json prints
