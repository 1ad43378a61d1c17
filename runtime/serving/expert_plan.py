"""Which experts answer a request: MoE²'s exact subset selection over the experts that some
admitted node hosts now, at the cost of the replica that would serve each.

Costs: each replica's cost comes from ``expert_costs`` (observed round trips, node telemetry,
or the device profile). An expert is planned at one replica's cost, seen two ways: the
``latency`` view takes its fastest admitted replica (then the least energy, then the cluster
file's order), the ``energy`` view its least-energy one (then the fastest). A request without
an energy budget is planned in the latency view; one with only an energy budget in the energy
view; one with both in each, keeping the better predicted quality (the latency view on a tie).

The energy budget binds what the response reports: with a finite budget, each chosen expert
may be served only by a replica whose energy stays within what the plan set aside for it (its
planned energy plus an equal share of the plan's slack, ``Plan.allowances``), so the energy
of the replicas that answered, E(S) = Σ (energy_j + tx_energy_j), never exceeds the budget.
The latency budget bounds the plan's predicted latency; the request's deadline bounds the
real one. Calls go to the allowed replica with the least latency once the calls already
waiting on each node are counted (``route``).

The solved subsets are cached (``SubsetCache``) per view, set of available experts and
budgets, under a telemetry version that changes only when an expert's cost moves by more than
``COST_TOLERANCE`` or an expert comes or goes, so a steady cluster solves once per budget; a
cached subset that no longer fits the budgets at the current costs is solved afresh. A solve
takes at most ``PLAN_TIME_LIMIT_S`` (then the best subset found, which fits: a few ms for up to
16 experts, so only a large, hard ensemble reaches it).

Re-planning after a failure: the experts that already answered cost nothing more (their
energy is spent, their answer is at hand), the failed ones are left out, and the budgets are
what remains of the request's: the energy not yet spent and the latency not yet elapsed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ganglion.runtime.selection import Expert, SelectionProblem, SubsetCache, solve
from ganglion.runtime.serving.coordinated_ensemble import CoordinatedEnsemble
from ganglion.runtime.serving.expert_costs import (
    ReplicaCost,
    changed,
    energy_parts,
    figure_kind,
    latency_parts,
    replica_cost,
)
from ganglion.runtime.serving.node_pool import NodePool, NodeState

COST_TOLERANCE = 0.25  # relative change of an expert's cost that makes a new telemetry version
PLAN_TIME_LIMIT_S = 1.0  # a solve on a request's path answers the best found by then
FREE = ReplicaCost(0.0, 0.0, 0.0, 0.0, "measured", "measured", "answered")
LATENCY, ENERGY = "latency", "energy"  # the replica an expert is planned at: fastest, cheapest
VIEWS = (LATENCY, ENERGY)


@dataclass(frozen=True)
class Figures:
    """Predicted energy and latency of a set of replica costs, each marked by kind."""

    energy_j: float
    latency_ms: float
    energy_kind: str
    latency_kind: str


@dataclass(frozen=True)
class Plan:
    """The chosen experts (indices into the ensemble's experts, increasing), the cost each is
    planned at, and what the selection predicts for them."""

    indices: tuple[int, ...]
    names: tuple[str, ...]
    costs: tuple[ReplicaCost, ...]  # per name
    quality: float
    figures: Figures

    def allowances(self, energy_budget: float) -> dict[str, float]:
        """The most energy each chosen expert's replica may cost so that the plan stays
        within ``energy_budget``: its planned energy plus an equal share of the slack
        (unbounded without a budget)."""
        if math.isinf(energy_budget):
            return {name: math.inf for name in self.names}
        share = max(energy_budget - self.figures.energy_j, 0.0) / len(self.names)
        return {
            name: c.total_energy_j + share for name, c in zip(self.names, self.costs, strict=True)
        }


def figures(costs: Iterable[ReplicaCost], base_ms: float, per_expert_ms: float) -> Figures:
    """E(S) and L(S) of the experts at ``costs`` as ``SelectionProblem`` adds them up (in the
    ensemble's expert order: pass the costs in that order)."""
    used = list(costs)
    energy = 0.0
    for cost in used:
        energy += cost.total_energy_j
    slowest = max(c.total_latency_ms for c in used)
    return Figures(
        energy_j=energy,
        latency_ms=(slowest + base_ms) + per_expert_ms * len(used),
        energy_kind=figure_kind(energy_parts(used)),
        latency_kind=figure_kind(latency_parts(used)),
    )


def planning_views(energy_budget: float, latency_budget: float) -> tuple[str, ...]:
    """The views a request is planned in (see the module docstring)."""
    if math.isinf(energy_budget):
        return (LATENCY,)
    return (ENERGY,) if math.isinf(latency_budget) else VIEWS


class Planner:
    """The selection for one ensemble over the pool's nodes."""

    def __init__(self, ensemble: CoordinatedEnsemble, pool: NodePool) -> None:
        self.ensemble = ensemble
        self.pool = pool
        self.cache = SubsetCache(time_limit_s=PLAN_TIME_LIMIT_S)
        self.version = 0
        # view -> available expert -> the cost it is planned at (as of the last refresh)
        self.costs: dict[str, dict[str, ReplicaCost]] = {view: {} for view in VIEWS}
        self._seen_generation = -1
        self._problems: dict[tuple[str, tuple[str, ...]], SelectionProblem] = {}

    # ---- costs -------------------------------------------------------------------------------

    def replicas(self, expert: str, view: str = LATENCY) -> list[tuple[NodeState, ReplicaCost]]:
        """Admitted hosts of ``expert`` with their cost, best first in ``view``."""
        found = []
        for order, node in enumerate(self.pool.hosts(expert)):
            simulated = self.ensemble.simulated[(expert, node.config.device)]
            cost = replica_cost(simulated, node.telemetry.get(expert), node.observed_ms.get(expert))
            key = (cost.total_latency_ms, cost.total_energy_j)
            found.append(((*(key if view == LATENCY else key[::-1]), order), node, cost))
        found.sort(key=lambda row: row[0])
        return [(node, cost) for _, node, cost in found]

    def route(
        self, expert: str, tried: set[str], max_energy_j: float = math.inf
    ) -> tuple[NodeState, ReplicaCost] | None:
        """The replica to call for ``expert`` now, among those not ``tried`` that cost at most
        ``max_energy_j``: the least latency once the calls already waiting on each node are
        counted (so load spreads over replicas and each keeps being measured); None when
        none is left."""
        best = None
        for order, (node, cost) in enumerate(self.replicas(expert)):
            if node.name in tried or cost.total_energy_j > max_energy_j:
                continue
            key = (cost.total_latency_ms * (1 + node.in_flight), order)
            if best is None or key < best[0]:
                best = (key, node, cost)
        return None if best is None else (best[1], best[2])

    def refresh(self) -> None:
        """Recompute costs when the pool changed; a new version when availability changed or
        a cost moved by more than ``COST_TOLERANCE``."""
        if self.pool.generation == self._seen_generation:
            return
        self._seen_generation = self.pool.generation
        costs: dict[str, dict[str, ReplicaCost]] = {view: {} for view in VIEWS}
        for expert in self.ensemble.experts:
            for view in VIEWS:
                replicas = self.replicas(expert, view)
                if replicas:
                    costs[view][expert] = replicas[0][1]
        moved = any(
            set(costs[view]) != set(self.costs[view])
            or any(
                changed(self.costs[view].get(e), c, COST_TOLERANCE) for e, c in costs[view].items()
            )
            for view in VIEWS
        )
        self.costs = costs
        if moved:
            self.version += 1
            self._problems.clear()

    @property
    def available(self) -> tuple[str, ...]:
        """The experts some admitted node can serve now (as of the last refresh)."""
        return tuple(e for e in self.ensemble.experts if e in self.costs[LATENCY])

    # ---- selection -------------------------------------------------------------------------------

    def plan(self, energy_budget: float, latency_budget: float) -> Plan | None:
        """The best subset of the available experts within the budgets, or None."""
        self.refresh()
        best = None
        for view in planning_views(energy_budget, latency_budget):
            costs = self.costs[view]
            names = tuple(e for e in self.ensemble.experts if e in costs)
            if not names:
                return None
            problem = self._problems.get((view, names))
            if problem is None:
                problem = self._problem(names, costs)
                self._problems[(view, names)] = problem
            category = (view, names)
            chosen = self.cache.select(
                category, problem, energy_budget, latency_budget, self.version
            )
            plan = (
                None
                if chosen is None
                else self.predicted([names[i] for i in chosen.experts], costs)
            )
            if plan is not None and not _fits(plan, energy_budget, latency_budget):
                plan = self._solve(names, costs, energy_budget, latency_budget)
            if plan is not None and (best is None or plan.quality > best.quality):
                best = plan
        return best

    def replan(
        self,
        energy_left: float,
        latency_left: float,
        answered: Iterable[str],
        failed: Iterable[str],
        views: tuple[str, ...],
    ) -> Plan | None:
        """After a failure: the best subset of the experts that answered (free now) and the
        available ones that did not fail, within what is left of the budgets, planned in
        ``views`` (the request's)."""
        self.refresh()
        answered, failed = set(answered), set(failed)
        best = None
        for view in views:
            costs = {e: c for e, c in self.costs[view].items() if e not in failed}
            costs.update({e: FREE for e in answered})
            names = tuple(e for e in self.ensemble.experts if e in costs)
            if not names:
                return None
            plan = self._solve(names, costs, max(energy_left, 0.0), max(latency_left, 0.0))
            if plan is not None and (best is None or plan.quality > best.quality):
                best = plan
        return best

    def least_cost(self) -> tuple[float, float] | None:
        """The smallest energy and the smallest latency a single available expert needs."""
        self.refresh()
        if not self.available:
            return None
        problem = self.ensemble.problem
        energy = min(c.total_energy_j for c in self.costs[ENERGY].values())
        latency = min(c.total_latency_ms for c in self.costs[LATENCY].values())
        return energy, latency + problem.base_ms + problem.per_expert_ms

    def _solve(
        self, names: tuple[str, ...], costs: dict[str, ReplicaCost], energy: float, latency: float
    ) -> Plan | None:
        chosen = solve(self._problem(names, costs), energy, latency, PLAN_TIME_LIMIT_S)
        return None if chosen is None else self.predicted([names[i] for i in chosen.experts], costs)

    def _problem(self, names: tuple[str, ...], costs: dict[str, ReplicaCost]) -> SelectionProblem:
        base = self.ensemble.problem
        columns = [self.ensemble.experts.index(e) for e in names]
        experts: tuple[Expert, ...] = tuple(costs[e].as_expert(e) for e in names)
        return SelectionProblem(
            experts=experts,
            base_ms=base.base_ms,
            per_expert_ms=base.per_expert_ms,
            gate=np.ascontiguousarray(base.gate[:, columns]),
            p_true=np.ascontiguousarray(base.p_true[:, columns]),
        )

    def predicted(self, experts: Iterable[str], costs: dict[str, ReplicaCost]) -> Plan:
        """The plan of ``experts`` at ``costs``: the quality on the calibration data, energy
        and latency as ``SelectionProblem`` adds them up."""
        order = self.ensemble.experts
        indices = tuple(sorted(order.index(e) for e in experts))
        names = tuple(order[i] for i in indices)
        used = tuple(costs[name] for name in names)
        base = self.ensemble.problem
        return Plan(
            indices=indices,
            names=names,
            costs=used,
            quality=base.quality(indices),
            figures=figures(used, base.base_ms, base.per_expert_ms),
        )


def _fits(plan: Plan, energy_budget: float, latency_budget: float) -> bool:
    return plan.figures.energy_j <= energy_budget and plan.figures.latency_ms <= latency_budget
