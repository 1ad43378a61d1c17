"""A Ganglion node: one grpc.aio server with KServe v2 inference, ``grpc.health.v1``, server
reflection and the ``ganglion.v1.Control`` service, over the models in a ``ModelRepository``.

Start-up: load the start-up models, bind (loopback unless told otherwise; SO_REUSEPORT off, so
two nodes never share a port), start, then report SERVING on health and ready on ServerReady.
Shutdown (SIGTERM, SIGINT or ``stop``): NOT_SERVING first, a grace period for calls in flight,
then every session closes and the meter stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ganglion.runtime.serving.control_service import ControlService
from ganglion.runtime.serving.inference_service import (
    SERVICE,
    Admission,
    InferenceService,
    add_inference_service,
)
from ganglion.runtime.serving.lifecycle import serve_until_signal
from ganglion.runtime.serving.protos import SERVICE as CONTROL_SERVICE
from ganglion.runtime.serving.repository import ModelRepository
from ganglion.runtime.serving.security import TokenInterceptor, read_token, server_credentials
from ganglion.runtime.serving.settings import (
    NodeSettings,
    SettingsError,
    grpc_address,
    package_version,
)
from ganglion.runtime.serving.telemetry import NodeTelemetry

GRACE_S = 5.0
SWEEP_EVERY_S = 5.0
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def server_options(settings: NodeSettings) -> list[tuple[str, int]]:
    """Channel arguments of the node's server: message limits both ways, no port sharing."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


class Node:
    """A running node; ``start`` loads and binds, ``stop`` shuts down gracefully."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings.check()
        self.telemetry = NodeTelemetry(
            settings.device, settings.simulate_energy, settings.root, settings.backend_device
        )
        self.repository = ModelRepository(settings, self.telemetry.meter)
        self.admission = Admission(settings.max_concurrency)
        self.inference = InferenceService(self.repository, self.admission, package_version())
        self.control = ControlService(self.repository, self.telemetry, self.admission)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.failed: dict[str, str] = {}  # repository models that did not load, and why
        self.server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _build(self) -> grpc.aio.Server:
        settings = self.settings
        interceptors = []
        if settings.token_file is not None:
            interceptors.append(TokenInterceptor(read_token(settings.token_file)))
        server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
        add_inference_service(self.inference, server)
        server.add_generic_rpc_handlers((self.control.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE, CONTROL_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = grpc_address(settings.host, settings.port)
        try:
            if settings.tls:
                assert settings.tls_cert is not None and settings.tls_key is not None
                creds = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_ca)
                self.port = server.add_secure_port(address, creds)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SettingsError(f"cannot listen on {address} ({exc})") from exc
        if self.port == 0:
            raise SettingsError(f"cannot listen on {address} (in use or not an address here)")
        return server

    async def start(self) -> None:
        """Load the start-up models, then bind, start and report SERVING.

        Loading comes first (as Triton loads its repository before it listens) so that a
        backend that forks worker processes, Lava, forks before gRPC runs threads: a fork
        beside gRPC's polling threads can leave a worker dead and Lava waiting on it.
        """
        for service in ("", SERVICE, CONTROL_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.failed = await self.repository.load_all()
            self.server = self._build()
            await self.server.start()
        except BaseException:
            await self.stop()
            raise
        self.inference.ready = True
        for service in ("", SERVICE, CONTROL_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        every = min(SWEEP_EVERY_S, self.settings.sequence_idle_s / 2)
        while True:
            await asyncio.sleep(every)
            self.repository.sweep_sequences()

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """NOT_SERVING, let calls in flight finish (up to ``grace_s``), release everything."""
        await self.health.enter_graceful_shutdown()
        self.inference.ready = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.server is not None:
            await self.server.stop(grace_s)
        self.repository.close()
        self.telemetry.close()

    async def wait(self) -> None:
        """Until the server stops."""
        assert self.server is not None
        await self.server.wait_for_termination()


async def run_node(settings: NodeSettings, on_ready: Callable[[Node], None]) -> None:
    """Start a node, call ``on_ready`` and serve until SIGTERM or SIGINT."""
    await serve_until_signal(Node(settings), on_ready)
