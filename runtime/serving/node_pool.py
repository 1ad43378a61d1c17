"""The nodes the coordinator calls: a ``NodeClient`` each, which of their models are ready
now, their telemetry where they offer ``ganglion.v1``, and the coordinator's own round trips.

Health: every ``health_interval_s`` each node is asked ServerReady and ModelReady for every
model it hosts — KServe v2 calls that every server answers (ours, Triton, KServe). A node
that answers ready is admitted with its ready models. A node that fails a probe, or a call
that failed with UNAVAILABLE or DEADLINE_EXCEEDED or answered badly (``eject``), is out at
once: its ``out`` event is set, which releases the calls still waiting on it. It is probed again
over a fresh channel each time, so a restarted node is re-admitted at the next probe instead of
after gRPC's reconnect back-off, and its round trips are measured afresh; one ejected by its
calls is re-admitted no sooner than ``HOLD_S`` later, doubling with each such ejection before
its next good answer, up to ``MAX_HOLD_S``. The channel it was using
closes later, once calls still in flight on it have had their deadline.

Telemetry: every ``telemetry_interval_s`` each admitted node is asked GetTelemetry; one that
answers UNIMPLEMENTED (Triton, KServe) is not asked again until it is re-admitted.
``generation`` changes whenever any of this does; planners compare it to know when to
recompute their costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from ganglion.runtime.serving.client import NodeCallError, NodeClient
from ganglion.runtime.serving.cluster_config import NodeConfig
from ganglion.runtime.serving.security import read_token

OBSERVED_WEIGHT = 0.2  # weight of the newest round trip in the moving average
HOLD_S, MAX_HOLD_S = 0.25, 30.0  # a node ejected by a call waits this long, doubling, to return
MAX_NODE_REPLY_BYTES = 64 << 20  # a larger reply from a node is refused by gRPC (then failover)


@dataclass
class NodeState:
    """What the coordinator knows of one node now."""

    config: NodeConfig
    client: NodeClient
    admitted: bool = False
    ready_models: frozenset[str] = frozenset()
    reason: str = "not probed yet"  # why it is not admitted
    offers_telemetry: bool = True  # until it answers GetTelemetry with UNIMPLEMENTED
    telemetry: dict[str, Any] = field(default_factory=dict)  # model -> ModelTelemetry
    observed_ms: dict[str, float] = field(default_factory=dict)  # model -> round trip average
    out: asyncio.Event = field(default_factory=asyncio.Event)  # set when taken out
    in_flight: int = 0  # the coordinator's calls waiting on it now
    ejections: int = 0  # calls that took it out since its last good answer
    held_until: float = 0.0  # time.monotonic() before which no probe re-admits it

    @property
    def name(self) -> str:
        """The node's name in the cluster file."""
        return self.config.name


class NodePool:
    """Every node of the cluster, probed and polled in the background once ``start`` ran."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        health_interval_s: float,
        telemetry_interval_s: float,
        call_timeout_s: float,
        on_change: Callable[[NodeState], None] = lambda node: None,
    ) -> None:
        self.configs = list(nodes)
        self.health_interval_s = health_interval_s
        self.telemetry_interval_s = telemetry_interval_s
        self.probe_timeout_s = min(1.0, max(0.2, 2 * health_interval_s))
        self.call_timeout_s = call_timeout_s
        self.on_change = on_change
        self.nodes: dict[str, NodeState] = {}
        self.generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _client(self, config: NodeConfig) -> NodeClient:
        token = read_token(config.token_file) if config.token_file is not None else None
        return NodeClient(
            config.address,
            token,
            tls_ca=config.tls_ca,
            timeout_s=self.probe_timeout_s,
            max_reply_bytes=MAX_NODE_REPLY_BYTES,
        )

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Open a channel to every node, probe them all once, poll telemetry once, then keep
        probing and polling in the background."""
        self.nodes = {c.name: NodeState(c, self._client(c)) for c in self.configs}
        await asyncio.gather(*(self._probe(n) for n in self.nodes.values()))
        await asyncio.gather(*(self._poll(n) for n in self.nodes.values() if n.admitted))
        self._spawn(self._every(self.health_interval_s, self._probe_all))
        self._spawn(self._every(self.telemetry_interval_s, self._poll_all))

    async def close(self) -> None:
        """Stop the background work and close every channel."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for node in self.nodes.values():
            await node.client.close()

    # ---- what requests use ---------------------------------------------------------------------

    def hosts(self, model: str) -> list[NodeState]:
        """Admitted nodes where ``model`` is ready, in the cluster file's order."""
        return [n for n in self.nodes.values() if n.admitted and model in n.ready_models]

    def eject(self, node: NodeState, reason: str) -> None:
        """Take ``node`` out after a failed call or a bad answer. Probes re-admit it no sooner
        than ``HOLD_S`` later, doubled for each such ejection since its last good answer (up
        to ``MAX_HOLD_S``): a node that passes its probes but fails its calls (hung, lying)
        stops costing most requests a failed call."""
        if node.admitted:
            node.ejections += 1
            hold = min(MAX_HOLD_S, HOLD_S * 2 ** (node.ejections - 1))
            node.held_until = time.monotonic() + hold
            self._set_out(node, f"{reason} (held out {hold:g} s)")

    def model_gone(self, node: NodeState, model: str, reason: str) -> None:
        """``node`` answered that it does not have ``model`` (NOT_FOUND)."""
        if model in node.ready_models:
            node.ready_models = node.ready_models - {model}
            self.generation += 1
            if not node.ready_models:
                self._set_out(node, reason)

    def observe(self, node: NodeState, model: str, seconds: float) -> None:
        """A round trip to ``node`` for ``model`` that succeeded in ``seconds``."""
        node.ejections = 0
        ms = seconds * 1e3
        old = node.observed_ms.get(model)
        node.observed_ms[model] = ms if old is None else old + OBSERVED_WEIGHT * (ms - old)

    def observe_at_least(self, node: NodeState, model: str, seconds: float) -> None:
        """A call to ``node`` for ``model`` cut short after ``seconds`` by the request's own
        deadline: the node's round trip is at least that (no ejection: the node may be fine),
        so routing learns of a node that hangs under calls cut short."""
        ms = seconds * 1e3
        node.observed_ms[model] = max(node.observed_ms.get(model, 0.0), ms)

    # ---- background ------------------------------------------------------------------------------

    async def _every(self, interval_s: float, work: Callable[[], Coroutine[Any, Any, None]]):
        while True:
            await asyncio.sleep(interval_s)
            await work()

    async def _probe_all(self) -> None:
        await asyncio.gather(*(self._probe(n) for n in self.nodes.values()))

    async def _poll_all(self) -> None:
        await asyncio.gather(*(self._poll(n) for n in self.nodes.values() if n.admitted))
        self.generation += 1

    async def _probe(self, node: NodeState) -> None:
        """ServerReady and ModelReady of every hosted model; admit, keep or take out."""
        fresh = not node.admitted
        if fresh and time.monotonic() < node.held_until:  # ejected by calls: not yet
            return
        client = self._client(node.config) if fresh else node.client
        try:
            ready = await client.ready()
            answers = await asyncio.gather(*(client.model_ready(m) for m in node.config.models))
        except NodeCallError as exc:
            reason = f"{exc.code.name}: {exc.details}" if exc.details else exc.code.name
            await self._not_ready(node, client, fresh, reason)
            return
        models = frozenset(m for m, ok in zip(node.config.models, answers, strict=True) if ok)
        if not ready or not models:
            reason = "ServerReady is false" if not ready else "none of its models is ready"
            await self._not_ready(node, client, fresh, reason)
            return
        if fresh:
            self._retire(node.client)
            node.client = client
            node.admitted, node.ready_models, node.reason = True, models, ""
            node.out = asyncio.Event()
            node.observed_ms = {}  # another process, perhaps: measure it afresh
            node.offers_telemetry = True
            self.generation += 1
            self.on_change(node)
        elif models != node.ready_models:
            node.ready_models = models
            self.generation += 1

    async def _not_ready(
        self, node: NodeState, client: NodeClient, fresh: bool, reason: str
    ) -> None:
        if fresh:
            await client.close()
            node.reason = reason
        else:
            self._set_out(node, reason)

    def _set_out(self, node: NodeState, reason: str) -> None:
        node.admitted, node.ready_models, node.reason = False, frozenset(), reason
        node.out.set()
        self.generation += 1
        self.on_change(node)

    def _retire(self, client: NodeClient) -> None:
        """Close ``client`` once calls in flight on it have passed their deadline."""

        async def close_later() -> None:
            await asyncio.sleep(self.call_timeout_s)
            await client.close()

        self._spawn(close_later())

    async def _poll(self, node: NodeState) -> None:
        """GetTelemetry of an admitted node that offers it."""
        if not node.offers_telemetry:
            return
        try:
            reply = await node.client.telemetry(timeout_s=self.probe_timeout_s)
        except NodeCallError as exc:
            if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                node.offers_telemetry = False
                node.telemetry = {}
            return
        node.telemetry = {row.name: row for row in reply.models}
