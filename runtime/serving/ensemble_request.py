"""One ensemble request through the cluster: the gate, the plan, the chosen experts' nodes
called in parallel with deadlines, failover, the mixture, and the response parameters.

Inputs an expert of the plan cannot take (its manifest's ``max_batch`` or ``value_ranges``)
are the request's fault: INVALID_ARGUMENT, naming the expert, before any node is called.

Scores that are not finite are judged by the replicas: where another replica's are finite, the
node that gave them is ejected; where every replica asked gives them, the input is beyond the
expert's range: INVALID_ARGUMENT, nobody ejected (the gate's own weights are checked first).

Failover: a call that fails (any status from the node, a reply over ``MAX_NODE_REPLY_BYTES``)
or whose answer is not the member's declared output — its name, datatype, the batch asked for,
the ensemble's classes, finite scores (``CoordinatedEnsemble.expert_probs``) — moves to the
expert's next admitted replica within its energy allowance (``Plan.allowances``: so that the
energy reported never exceeds the budget). The failed node is ejected for UNAVAILABLE,
DEADLINE_EXCEEDED (only when the call had its full ``call_timeout_s``: a call cut short by the
client's own deadline ejects nothing, but its time is a lower bound on the node's round trip,
``NodePool.observe_at_least``) and a bad answer, its model marked gone for NOT_FOUND. A
node's message enters ours and the log as its first line, at most ``MAX_NODE_WORDS``
characters. An expert with no replica left fails, and the experts are
re-planned without it within what is left of the budgets (``Planner.replan``).
A call still waiting on a node that is taken out meanwhile (a probe or another request found
it dead or hung) moves on at once. Every call's deadline is the smaller of ``call_timeout_s``
and the time left to the request's deadline, so a request answers — its mixture or an
explicit error — before that deadline.

Mixing is the ensemble's own (``runtime.kinds.ensemble.mixture_outputs``, ``models.mixture``):
the gate renormalized over the chosen experts, their probabilities weighted and summed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from ganglion.models.errors import first_line
from ganglion.models.mixture import renormalized
from ganglion.runtime.kinds.ensemble import mixture_outputs
from ganglion.runtime.serving.client import NodeCallError
from ganglion.runtime.serving.coordinated_ensemble import CoordinatedEnsemble, NonFiniteScores
from ganglion.runtime.serving.expert_costs import MEASURED, ReplicaCost
from ganglion.runtime.serving.expert_plan import Plan, Planner, figures, planning_views
from ganglion.runtime.serving.kserve_tensors import (
    BUDGET_PARAMETERS,
    WireError,
    check_datatypes,
    fill_tensors,
    request_arrays,
    requested_outputs,
)
from ganglion.runtime.serving.node_pool import NodePool, NodeState
from ganglion.runtime.serving.sequences import sequence_control
from ganglion.runtime.serving.status import NodeError

Code = grpc.StatusCode
EJECT = frozenset({Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED})
MAX_NODE_WORDS = 200  # characters of a node's message quoted in ours


@dataclass(frozen=True)
class Answer:
    """An expert's class probabilities, the node that gave them and what it was predicted
    to cost there."""

    probs: np.ndarray
    node: str
    cost: ReplicaCost


@dataclass
class _Attempts:
    """What happened to one request's calls."""

    answers: dict[str, Answer] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    retries: int = 0  # calls that failed and were tried elsewhere or re-planned
    replans: int = 0


def request_budgets(
    parameters: Any, energy_default: float, latency_default: float
) -> tuple[float, float]:
    """(energy J, latency ms) from the request's parameters, else the ensemble's defaults."""
    values = {"energy_budget_j": energy_default, "latency_budget_ms": latency_default}
    for key in BUDGET_PARAMETERS:
        if key not in parameters:
            continue
        param = parameters[key]
        which = param.WhichOneof("parameter_choice")
        if which not in ("double_param", "int64_param", "uint64_param"):
            given = "nothing" if which is None else f"{which.removesuffix('_param')} "
            if which is not None:
                shown = repr(getattr(param, which))
                given += shown if len(shown) <= 40 else shown[:37] + "..."
            raise WireError(f"parameter {key} must be a number, got {given}")
        value = float(getattr(param, which))
        if math.isnan(value) or value < 0:
            raise WireError(f"parameter {key} must be a number >= 0, got {value}")
        values[key] = value
    return values["energy_budget_j"], values["latency_budget_ms"]


async def _together(work: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await everything at once; on a failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _unless_out(node: NodeState, call: Awaitable[Any]) -> Any:
    """``call``'s answer, or UNAVAILABLE as soon as ``node`` is taken out (by a probe or
    another request's failed call) while it is waiting."""
    answer = asyncio.ensure_future(call)
    out = asyncio.ensure_future(node.out.wait())
    try:
        await asyncio.wait({answer, out}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        out.cancel()
        if not answer.done():
            answer.cancel()
    if not answer.done():
        raise NodeCallError(Code.UNAVAILABLE, f"node {node.name} was taken out ({node.reason})")
    return answer.result()


class EnsembleRequest:
    """One request: ``answer`` fills a ``ModelInferResponse`` or raises ``NodeError``."""

    def __init__(
        self,
        ensemble: CoordinatedEnsemble,
        planner: Planner,
        pool: NodePool,
        deadline: float,
        call_timeout_s: float,
    ) -> None:
        self.ensemble = ensemble
        self.planner = planner
        self.pool = pool
        self.deadline = deadline  # time.monotonic() by which the request must be answered
        self.call_timeout_s = call_timeout_s
        self.started = time.monotonic()
        self.attempts = _Attempts()

    async def answer(self, request: Any, response: Any) -> None:
        """Gate, plan, call, fail over, mix; the outputs and parameters go into ``response``."""
        ensemble = self.ensemble
        if sequence_control(request.parameters).id is not None:
            raise WireError(f"ensemble {ensemble.name!r} is stateless; it takes no sequence_id")
        wanted = requested_outputs(request)
        names = [s.name for s in ensemble.manifest.outputs]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise WireError(
                f"unknown output {unknown[0]!r}; {ensemble.name!r} has outputs "
                f"{', '.join(map(repr, names))}"
            )
        check_datatypes(ensemble.name, ensemble.manifest.inputs, request.inputs)
        inputs = ensemble.check(request_arrays(request))
        energy, latency = request_budgets(
            request.parameters, ensemble.config.energy_budget_j, ensemble.config.latency_budget_ms
        )
        gate = ensemble.gate(inputs)
        plan = self.planner.plan(energy, latency)
        if plan is None:
            raise self._no_plan(energy, latency)
        plan = await self._collect(plan, gate, inputs, energy, latency)
        experts = ensemble.experts
        probs, weights = mixture_outputs(
            gate,
            list(plan.indices),
            ensemble.top_k,
            lambda e: self.attempts.answers[experts[e]].probs,
        )
        outputs = {"probs": probs.astype(np.float32), "gate": weights.astype(np.float32)}
        fill_tensors(response.outputs, response.raw_output_contents, outputs, wanted)
        self._parameters(response.parameters, plan, energy, latency)

    async def _collect(
        self,
        plan: Plan,
        gate: np.ndarray,
        inputs: dict[str, np.ndarray],
        energy: float,
        latency: float,
    ) -> Plan:
        """Call the plan's experts (those with weight on some input) until all answered,
        each within its energy allowance, re-planning without the ones that failed; the plan
        that was answered."""
        attempts = self.attempts
        energy_left = energy
        while True:
            self.ensemble.check_experts(list(plan.names), inputs)
            weights = renormalized(gate, list(plan.indices), self.ensemble.top_k)
            needed = [
                name
                for e, name in zip(plan.indices, plan.names, strict=True)
                if weights[:, e].any() and name not in attempts.answers
            ]
            if not needed:
                return plan
            allowances = plan.allowances(energy_left)
            await _together(self._call(name, inputs, allowances[name]) for name in needed)
            if not any(name in attempts.failed for name in needed):
                continue
            if time.monotonic() >= self.deadline:  # the client's own: not the cluster's fault
                raise NodeError(
                    Code.DEADLINE_EXCEEDED,
                    f"{self.ensemble.name}: the request's deadline passed before expert "
                    f"{', '.join(sorted(attempts.failed))} answered ({'; '.join(attempts.errors)})",
                )
            attempts.replans += 1
            energy_left = energy - sum(a.cost.total_energy_j for a in attempts.answers.values())
            elapsed_ms = (time.monotonic() - self.started) * 1e3
            replanned = self.planner.replan(
                energy_left,
                latency - elapsed_ms,
                attempts.answers,
                attempts.failed,
                planning_views(energy, latency),
            )
            if replanned is None:
                raise NodeError(
                    Code.UNAVAILABLE,
                    f"{self.ensemble.name}: expert {', '.join(sorted(attempts.failed))} failed "
                    f"({'; '.join(attempts.errors)}) and no subset of the rest fits what is left "
                    f"of the budgets ({energy_left:.4g} J, {latency - elapsed_ms:.4g} ms)",
                )
            plan = replanned

    async def _call(self, expert: str, inputs: dict[str, np.ndarray], max_energy_j: float) -> None:
        """Ask ``expert``'s replicas that cost at most ``max_energy_j`` in turn
        (``Planner.route``) until one answers."""
        attempts, pool = self.attempts, self.pool
        request = self.ensemble.member_request(expert, inputs)
        batch = int(next(iter(inputs.values())).shape[0])  # the rows each answer must hold
        tried: set[str] = set()
        overflowed: list[NodeState] = []  # nodes whose scores were not finite: judged below
        while True:
            replica = self.planner.route(expert, tried, max_energy_j)
            left = self.deadline - time.monotonic()
            if replica is None and overflowed and len(overflowed) == len(tried):
                raise NodeError(  # every replica asked agrees: the input, not the nodes
                    Code.INVALID_ARGUMENT,
                    f"expert {expert!r} gives non-finite scores for this input on "
                    f"{', '.join(n.name for n in overflowed)}: the input is beyond the range "
                    "the expert works in",
                )
            if replica is None or left <= 0:
                why = "no replica left within its energy allowance"
                why = why if left > 0 else "the request's deadline passed"
                attempts.errors.append(f"{expert}: {why}")
                attempts.failed.add(expert)
                return
            node, cost = replica
            tried.add(node.name)
            sent = time.monotonic()
            cut_short = left < self.call_timeout_s  # by the request's own deadline
            node.in_flight += 1
            try:
                response = await _unless_out(
                    node, node.client.model_infer(request, min(self.call_timeout_s, left))
                )
            except NodeCallError as exc:
                details = _node_words(exc.details)
                attempts.errors.append(f"{expert}@{node.name}: {exc.code.name} {details}")
                attempts.retries += 1  # any failure of a node: its other replicas may answer
                if cut_short and exc.code == Code.DEADLINE_EXCEEDED:  # the node took longer
                    pool.observe_at_least(node, expert, time.monotonic() - sent)
                elif exc.code in EJECT:
                    pool.eject(node, f"{exc.code.name}: {details}")
                elif exc.code == Code.NOT_FOUND:
                    pool.model_gone(node, expert, details)
                continue
            finally:
                node.in_flight -= 1
            pool.observe(node, expert, time.monotonic() - sent)
            try:
                probs = self.ensemble.expert_probs(expert, response, batch)
            except NonFiniteScores as exc:
                attempts.errors.append(f"{expert}@{node.name}: {exc}")
                attempts.retries += 1
                overflowed.append(node)
                continue
            except Exception as exc:  # noqa: BLE001 - a node's answer is checked, not trusted
                why = _node_words(str(exc))
                attempts.errors.append(f"{expert}@{node.name}: a bad answer ({why})")
                attempts.retries += 1
                pool.eject(node, f"a bad answer for {expert!r}: {why}")
                continue
            for liar in overflowed:  # another replica's scores were finite on this input
                why = f"non-finite scores for {expert!r} where {node.name}'s were finite"
                pool.eject(liar, why)
            attempts.answers[expert] = Answer(probs, node.name, cost)
            return

    def _no_plan(self, energy: float, latency: float) -> NodeError:
        """Why no subset could be planned: nothing admitted, or budgets below every expert."""
        planner = self.planner
        least = planner.least_cost()
        if least is None:
            down = "; ".join(
                f"{n.name}: {n.reason}" for n in self.pool.nodes.values() if not n.admitted
            )
            return NodeError(
                Code.UNAVAILABLE,
                f"{self.ensemble.name}: no node hosting one of its experts is admitted ({down})",
            )
        missing = [e for e in self.ensemble.experts if e not in planner.available]
        gone = f" while {', '.join(missing)} is unavailable" if missing else ""
        return NodeError(
            Code.UNAVAILABLE if missing else Code.INVALID_ARGUMENT,
            f"{self.ensemble.name}: no subset of experts fits energy_budget_j={energy:.4g} and "
            f"latency_budget_ms={latency:.4g}{gone}; the cheapest needs {least[0]:.4g} J "
            f"and {least[1]:.4g} ms",
        )

    def _parameters(self, params: Any, plan: Plan, energy: float, latency: float) -> None:
        """Chosen experts, the nodes that answered them, predicted figures of every answer
        (and their kinds), latency, retries. An expert of the plan with no weight on any input
        (top-k gating) was not called: it has no node and costs nothing; an expert that
        answered before a re-plan left it out still spent its energy."""
        attempts = self.attempts
        answered = [name for name in plan.names if name in attempts.answers]
        base = self.ensemble.problem
        every = [attempts.answers[e].cost for e in self.ensemble.experts if e in attempts.answers]
        spent = figures(every, base.base_ms, base.per_expert_ms)
        params["experts"].string_param = ",".join(plan.names)
        params["nodes"].string_param = ",".join(
            f"{name}={attempts.answers[name].node}" for name in answered
        )
        params["quality"].double_param = plan.quality
        params["energy_j"].double_param = spent.energy_j
        params["energy_kind"].string_param = spent.energy_kind
        params["predicted_latency_ms"].double_param = spent.latency_ms
        params["predicted_latency_kind"].string_param = spent.latency_kind
        params["latency_ms"].double_param = (time.monotonic() - self.started) * 1e3
        params["latency_kind"].string_param = MEASURED
        params["energy_budget_j"].double_param = energy
        params["latency_budget_ms"].double_param = latency
        params["retries"].int64_param = attempts.retries
        params["replans"].int64_param = attempts.replans


def _node_words(text: str) -> str:
    """A node's (or a node answer's) message as it may enter our messages and log: its first
    line, at most ``MAX_NODE_WORDS`` characters (a node must not forge log lines)."""
    return first_line(text, MAX_NODE_WORDS)
