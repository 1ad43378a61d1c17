"""An expert's cost on a node comes from the best source at hand, and each figure says
whether it was measured or simulated."""

from __future__ import annotations

import pytest

from ganglion.runtime.selection import Expert
from ganglion.runtime.serving.expert_costs import figure_kind, replica_cost
from ganglion.runtime.serving.protos import control_pb2

PROFILE = Expert("e1", energy_j=0.5, latency_ms=20.0, tx_energy_j=0.01, tx_latency_ms=3.0)


def _telemetry(inferences: int, energy_kind: str) -> control_pb2.ModelTelemetry:
    warm_up = control_pb2.Measurement(
        runs=5, latency_p50_s=0.004, energy_per_inference_j=0.2, energy_kind=energy_kind
    )
    return control_pb2.ModelTelemetry(
        name="e1", inferences=inferences, latency_p50_s=0.007, measurement=warm_up
    )


def test_without_telemetry_every_figure_is_the_profiles_and_simulated() -> None:
    cost = replica_cost(PROFILE, None, None)
    assert (cost.energy_j, cost.latency_ms, cost.tx_latency_ms) == (0.5, 20.0, 3.0)
    assert (cost.energy_kind, cost.latency_kind, cost.latency_source) == (
        "simulated",
        "simulated",
        "profile",
    )


@pytest.mark.parametrize(("inferences", "latency_ms"), [(0, 4.0), (12, 7.0)])
def test_telemetry_gives_the_nodes_latency_before_and_after_it_served(
    inferences: int, latency_ms: float
) -> None:
    cost = replica_cost(PROFILE, _telemetry(inferences, "measured"), None)
    assert cost.latency_ms == pytest.approx(latency_ms) and cost.tx_latency_ms == 3.0
    assert (cost.energy_j, cost.energy_kind, cost.latency_kind) == (0.2, "measured", "measured")


def test_a_node_whose_meter_is_simulated_gives_simulated_energy() -> None:
    cost = replica_cost(PROFILE, _telemetry(3, "simulated"), None)
    assert (cost.energy_j, cost.energy_kind) == (0.2, "simulated")


def test_observed_round_trips_replace_latency_and_link_time() -> None:
    cost = replica_cost(PROFILE, _telemetry(3, "measured"), 9.5)
    assert (cost.latency_ms, cost.tx_latency_ms, cost.latency_source) == (9.5, 0.0, "observed")
    assert cost.tx_energy_j == 0.01  # the link's energy stays (simulated)


def test_a_sum_is_measured_only_when_every_nonzero_part_is() -> None:
    assert figure_kind([(1.0, "measured"), (0.0, "simulated")]) == "measured"
    assert figure_kind([(1.0, "simulated"), (2.0, "simulated")]) == "simulated"
    assert figure_kind([(1.0, "measured"), (2.0, "simulated")]) == "measured+simulated"


@pytest.mark.parametrize("bad", [float("nan"), -5.0, float("inf"), 1e300, 0.0, 1e-12])
def test_a_nodes_absurd_telemetry_falls_back_to_the_profile(bad: float) -> None:
    """One node reporting NaN, negative or infinite costs used to fail every request of the
    ensemble (the selection problem refuses them), even with an honest replica up; one
    reporting nothing or next to nothing (below a thousandth of the device profile's best
    case) would have made its expert free, so it took every budget."""
    telemetry = _telemetry(4, "measured")
    telemetry.latency_p50_s = bad
    telemetry.measurement.energy_per_inference_j = bad
    cost = replica_cost(PROFILE, telemetry, None)
    assert (cost.energy_j, cost.energy_kind) == (0.5, "simulated")
    assert (cost.latency_ms, cost.latency_source) == (20.0, "profile")


def test_telemetry_far_below_the_profile_is_not_believed_but_near_it_is() -> None:
    telemetry = _telemetry(4, "measured")
    telemetry.latency_p50_s = 0.0004 * PROFILE.latency_ms / 1e3  # under a thousandth
    telemetry.measurement.energy_per_inference_j = 0.002 * PROFILE.energy_j
    cost = replica_cost(PROFILE, telemetry, None)
    assert (cost.latency_source, cost.energy_kind) == ("profile", "measured")
    assert cost.energy_j == pytest.approx(0.001)
