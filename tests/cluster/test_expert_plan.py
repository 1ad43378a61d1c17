"""The planner keeps the energy it reports within the request's budget: an expert is planned
at its cheapest replica under an energy budget and never routed to a replica beyond its
allowance, however much faster that one is; without a budget the fastest replica serves.

Two nodes without processes (the planner reads only the pool's state): ``fast`` hosts e1 at
1 J and 1 ms, ``frugal`` hosts e1 and e2 at 0.1 J and 5 ms each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from ganglion.runtime.selection import Expert, SelectionProblem
from ganglion.runtime.serving.cluster_config import NodeConfig
from ganglion.runtime.serving.expert_plan import ENERGY, LATENCY, Planner
from ganglion.runtime.serving.node_pool import NodePool, NodeState

COSTS = {  # (expert, device) -> (energy J, latency ms)
    ("e1", "fast"): (1.0, 1.0),
    ("e1", "frugal"): (0.1, 5.0),
    ("e2", "frugal"): (0.1, 5.0),
}


@dataclass(frozen=True)
class TwoExperts:
    """What the planner reads of a ``CoordinatedEnsemble``."""

    experts: list[str]
    simulated: dict[tuple[str, str], Expert]
    problem: SelectionProblem


@pytest.fixture
def planner() -> Planner:
    simulated = {(e, d): Expert(e, j, ms, 0.0, 0.0) for (e, d), (j, ms) in COSTS.items()}
    mine = np.repeat(np.eye(2), 8, axis=0)  # [16, 2]: the expert each sample belongs to
    problem = SelectionProblem(  # each expert is right on its own samples: both beat one
        experts=(simulated[("e1", "fast")], simulated[("e2", "frugal")]),
        base_ms=0.5,
        per_expert_ms=0.1,
        gate=0.1 + 0.8 * mine,
        p_true=0.2 + 0.7 * mine,
    )
    nodes = [
        NodeConfig("fast", 9001, ("e1",), device="fast"),
        NodeConfig("frugal", 9002, ("e1", "e2"), device="frugal"),
    ]
    pool = NodePool(nodes, 1.0, 1.0, 1.0)
    pool.nodes = {
        c.name: NodeState(c, client=None, admitted=True, ready_models=frozenset(c.models))
        for c in nodes
    }
    pool.generation = 1
    return Planner(TwoExperts(["e1", "e2"], simulated, problem), pool)


def test_each_view_plans_an_expert_at_its_fastest_or_its_cheapest_replica(planner) -> None:
    planner.refresh()
    assert planner.costs[LATENCY]["e1"].total_energy_j == 1.0
    assert planner.costs[ENERGY]["e1"].total_energy_j == pytest.approx(0.1)
    assert planner.available == ("e1", "e2")


def test_without_an_energy_budget_the_fastest_replica_serves(planner) -> None:
    plan = planner.plan(math.inf, math.inf)
    assert plan is not None and plan.names == ("e1", "e2")
    allowance = plan.allowances(math.inf)["e1"]
    node, cost = planner.route("e1", set(), allowance)
    assert node.name == "fast" and cost.total_energy_j == 1.0


def test_under_an_energy_budget_no_replica_beyond_its_allowance_is_called(planner) -> None:
    budget = 0.25  # both experts fit only at their frugal replicas (0.2 J)
    plan = planner.plan(budget, math.inf)
    assert plan is not None and plan.names == ("e1", "e2")
    assert plan.figures.energy_j == pytest.approx(0.2)
    allowances = plan.allowances(budget)
    assert sum(allowances.values()) == pytest.approx(budget)
    routed = [planner.route(e, set(), allowances[e]) for e in plan.names]
    assert [node.name for node, _ in routed] == ["frugal", "frugal"]
    assert sum(cost.total_energy_j for _, cost in routed) <= budget
    assert planner.route("e1", {"frugal"}, allowances["e1"]) is None  # not the 1 J one instead


def test_a_latency_budget_alone_keeps_planning_at_the_fastest_replicas(planner) -> None:
    plan = planner.plan(math.inf, 3.0)  # e2 (5 ms) cannot fit; e1 fits only at 1 ms
    assert plan is not None and plan.names == ("e1",)
    assert plan.figures.latency_ms == pytest.approx((1.0 + 0.5) + 0.1)
