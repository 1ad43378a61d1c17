"""The coordinator: the KServe v2 gRPC inference API for ensembles, answered by calling the
ensembles' experts on the cluster's nodes.

It talks to nodes only through KServe v2 (ServerReady, ModelReady, ModelInfer) and, where a
node offers it, ``ganglion.v1`` telemetry, so a node may be ``ganglion serve``, NVIDIA Triton
Inference Server or a KServe deployment. Per request (``ensemble_request``): its gate, the
MoE² selection under the request's budgets (parameters ``energy_budget_j`` and
``latency_budget_ms``, else the ensemble's defaults) at live costs (``expert_plan``), the
chosen experts' nodes called in parallel with deadlines, failover and re-planning, the
ensemble's own mixture, and the chosen experts, nodes, predicted quality, energy and latency
(each marked measured or simulated) and retries in the response parameters.

Besides inference it serves ``grpc.health.v1``: "" and the inference service while it runs,
and ``node/<name>`` SERVING while that node is admitted (NOT_SERVING otherwise).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.runtime.selection.bounds import warm_up
from ganglion.runtime.serving.cluster_config import ClusterConfig, ClusterConfigError
from ganglion.runtime.serving.coordinated_ensemble import CoordinatedEnsemble
from ganglion.runtime.serving.ensemble_request import EnsembleRequest
from ganglion.runtime.serving.expert_plan import Planner
from ganglion.runtime.serving.inference_service import SERVICE, Admission, answer_unimplemented
from ganglion.runtime.serving.lifecycle import serve_until_signal
from ganglion.runtime.serving.node_pool import NodePool, NodeState
from ganglion.runtime.serving.security import TokenInterceptor, read_token
from ganglion.runtime.serving.settings import package_version
from ganglion.runtime.serving.status import (
    check_version,
    is_served_version,
    status_of,
    unknown_model,
)

SERVER_NAME = "ganglion-coordinator"
MODEL_VERSION = "1"
MAX_MESSAGE_BYTES = 64 << 20
DEADLINE_MARGIN_S = 0.05  # answered this long before the client's deadline (or 10 % of it)
GRACE_S = 5.0
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _log(message: str) -> None:
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


@answer_unimplemented(f"the {SERVER_NAME}")
class CoordinatorService(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 inference over the coordinator's ensembles."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.ready = False

    def _entry(self, name: str, version: str = "") -> tuple[CoordinatedEnsemble, Planner]:
        entry = self.coordinator.ensembles.get(name)
        if entry is None:
            raise unknown_model(name)
        check_version(name, version)
        return entry

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready once the ensembles are loaded and the nodes probed."""
        return pb.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Name; no protocol extension (of model_repository it answers RepositoryIndex only)."""
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=package_version(), extensions=[])

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """True while some admitted node hosts one of the ensemble's experts."""
        entry = self.coordinator.ensembles.get(request.name)
        ready = entry is not None and is_served_version(request.version) and _available(entry[1])
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The ensemble's inputs and its outputs ``probs`` and ``gate``."""
        try:
            ensemble, _ = self._entry(request.name, request.version)
        except Exception as exc:
            await context.abort(*status_of(exc))
        return ensemble.metadata()

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One ensemble inference through the cluster (``ensemble_request``)."""
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=MODEL_VERSION, id=request.id
        )
        coordinator = self.coordinator
        try:
            with coordinator.admission:
                ensemble, planner = self._entry(request.model_name, request.model_version)
                run = EnsembleRequest(
                    ensemble,
                    planner,
                    coordinator.pool,
                    coordinator.deadline(context.time_remaining()),
                    coordinator.config.coordinator.call_timeout_ms / 1e3,
                )
                await run.answer(request, response)
        except Exception as exc:
            await context.abort(*status_of(exc))
        return response

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every ensemble: READY while one of its experts is available, else UNAVAILABLE."""
        entry = pb.RepositoryIndexResponse.ModelIndex
        rows = []
        for name, (_, planner) in sorted(self.coordinator.ensembles.items()):
            ready = _available(planner)
            if ready or not request.ready:
                state, reason = ("READY", "") if ready else ("UNAVAILABLE", "no expert available")
                rows.append(entry(name=name, version=MODEL_VERSION, state=state, reason=reason))
        return pb.RepositoryIndexResponse(models=rows)


def _available(planner: Planner) -> bool:
    planner.refresh()
    return bool(planner.available)


class Coordinator:
    """A running coordinator; ``start`` loads, binds and probes, ``stop`` shuts down."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        settings = config.coordinator
        self.pool = NodePool(
            config.nodes,
            settings.health_interval_ms / 1e3,
            settings.telemetry_interval_ms / 1e3,
            settings.call_timeout_ms / 1e3,
            self._node_changed,
        )
        self.admission = Admission(settings.max_concurrency)
        self.service = CoordinatorService(self)
        self.health = health.aio.HealthServicer()
        self.ensembles: dict[str, tuple[CoordinatedEnsemble, Planner]] = {}
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._health_updates: set[asyncio.Task[None]] = set()

    def deadline(self, client_remaining_s: float | None) -> float:
        """The monotonic time a request must be answered by: the client's deadline less a
        margin, or the configured request timeout when the client set none."""
        limit = self.config.coordinator.request_timeout_ms / 1e3
        if client_remaining_s is not None:
            margin = min(DEADLINE_MARGIN_S, 0.1 * client_remaining_s)
            limit = min(limit, client_remaining_s - margin)
        return time.monotonic() + limit

    def _node_changed(self, node: NodeState) -> None:
        status = SERVING if node.admitted else NOT_SERVING
        if node.admitted:
            _log(f"node {node.name} admitted: {', '.join(sorted(node.ready_models))}")
        else:
            _log(f"node {node.name} out: {node.reason}")
        task = asyncio.ensure_future(self.health.set(f"node/{node.name}", status))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    def _load(self) -> None:
        """Open every ensemble bundle and build its selection problem (blocking)."""
        config = self.config
        devices: dict[str, list[str]] = {}
        for node in config.nodes:
            for model in node.models:
                devices.setdefault(model, []).append(node.device)
        experts: set[str] = set()
        for entry in config.ensembles:
            ensemble, origin = CoordinatedEnsemble.load(
                entry, devices, config.coordinator.device, config.coordinator.link
            )
            experts |= set(ensemble.experts)
            self.ensembles[entry.name] = (ensemble, Planner(ensemble, self.pool))
            hosted = ", ".join(
                f"{e} on {'/'.join(origin.devices.get(e, [])) or 'no node'}"
                for e in ensemble.experts
            )
            _log(f"ensemble {entry.name}: gate on {origin.requester}; {hosted}")
        for node in config.nodes:
            strangers = sorted(set(node.models) - experts)
            if strangers:
                raise ClusterConfigError(
                    f"{config.path}: node {node.name!r} hosts {strangers[0]!r}, "
                    "which is no ensemble's expert"
                )

    def _build(self) -> grpc.aio.Server:
        settings = self.config.coordinator
        interceptors = []
        if settings.token_file is not None:
            interceptors.append(TokenInterceptor(read_token(settings.token_file)))
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(interceptors=interceptors, options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = settings.address
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ClusterConfigError(f"cannot listen on {address} ({exc})") from exc
        if self.port == 0:
            raise ClusterConfigError(f"cannot listen on {address} (in use or not an address)")
        return server

    async def start(self) -> None:
        """Load the ensembles, bind, probe every node once, then report SERVING."""
        for service in ("", SERVICE):
            await self.health.set(service, NOT_SERVING)
        await asyncio.to_thread(self._load)
        await asyncio.to_thread(warm_up)  # the solver's compiled loops, not in the first request
        self.server = self._build()
        await self.server.start()
        for node in self.config.nodes:
            await self.health.set(f"node/{node.name}", NOT_SERVING)
        await self.pool.start()
        self.service.ready = True
        for service in ("", SERVICE):
            await self.health.set(service, SERVING)

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """NOT_SERVING, let requests in flight finish (up to ``grace_s``), close the pool."""
        await self.health.enter_graceful_shutdown()
        self.service.ready = False
        if self.server is not None:
            await self.server.stop(grace_s)
        await self.pool.close()

    async def wait(self) -> None:
        """Until the server stops."""
        assert self.server is not None
        await self.server.wait_for_termination()


async def run_coordinator(config: ClusterConfig, on_ready: Callable[[Coordinator], None]) -> None:
    """Start a coordinator, call ``on_ready`` and serve until SIGTERM or SIGINT."""
    await serve_until_signal(Coordinator(config), on_ready)
