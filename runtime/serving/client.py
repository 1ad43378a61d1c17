"""``NodeClient``: an async client of one node (inference, health, telemetry, upload) that
the CLI and the coordinator share.

One channel per client, reused by every call; each call has a deadline (``timeout_s``);
read-only calls (health, metadata, telemetry) are retried by gRPC on UNAVAILABLE, never
ModelInfer or uploads (a sequence step must not apply twice). A failed call raises
``NodeCallError`` carrying the status code (``.code``) and the node's one-line message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.models.errors import BundleError, GanglionError
from ganglion.runtime.bundle_archive import write_bundle_tar
from ganglion.runtime.serving.control_service import control_stub
from ganglion.runtime.serving.kserve_tensors import (
    MAX_MESSAGE_BYTES,
    fill_tensors,
    response_arrays,
)
from ganglion.runtime.serving.protos import control_pb2
from ganglion.runtime.serving.security import bearer_metadata, channel_credentials
from ganglion.runtime.serving.signing import signature_path

CHUNK_BYTES = 256 << 10  # archive bytes per upload message (well under any node's limit)
RETRIED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")
ParameterValue = bool | int | float | str


class NodeCallError(GanglionError):
    """A call the node refused or that failed on the way; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message


def _service_config() -> str:
    retry = {
        "maxAttempts": 3,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": "inference.GRPCInferenceService", "method": m} for m in RETRIED]
    names += [
        {"service": "grpc.health.v1.Health", "method": "Check"},
        {"service": "ganglion.v1.Control", "method": "GetTelemetry"},
    ]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": retry}]})


def _parameter(message: Any, value: ParameterValue) -> None:
    if isinstance(value, bool):
        message.bool_param = value
    elif isinstance(value, int):
        message.int64_param = value
    elif isinstance(value, float):
        message.double_param = value
    else:
        message.string_param = str(value)


def response_parameters(response: Any) -> dict[str, ParameterValue]:
    """A ``ModelInferResponse``'s parameters as plain values (a coordinator's chosen experts,
    nodes, energy and latency; empty for most nodes)."""
    values: dict[str, ParameterValue] = {}
    for key in sorted(response.parameters):
        which = response.parameters[key].WhichOneof("parameter_choice")
        if which is not None:
            values[key] = getattr(response.parameters[key], which)
    return values


def infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = (),
    parameters: Mapping[str, ParameterValue] | None = None,
) -> Any:
    """A ``ModelInferRequest`` with raw tensors (what ``NodeClient.infer`` sends)."""
    request = pb.ModelInferRequest(model_name=model)
    fill_tensors(request.inputs, request.raw_input_contents, dict(inputs))
    for name in outputs:
        request.outputs.add(name=name)
    for key, value in (parameters or {}).items():
        _parameter(request.parameters[key], value)
    return request


class NodeClient:
    """Calls to one node over one reused channel (``async with NodeClient(...) as node``);
    create it inside the event loop that uses it (grpc.aio channels belong to one loop)."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls: bool = False,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        timeout_s: float = 30.0,
        max_reply_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),  # the node's limit decides
            ("grpc.max_receive_message_length", max_reply_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config()),
        ]
        if tls or tls_ca is not None:
            creds = channel_credentials(tls_ca, tls_cert, tls_key)
            self.channel = grpc.aio.secure_channel(target, creds, options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options)
        self.target = target
        self.timeout_s = timeout_s
        self.call_metadata = bearer_metadata(token)
        self._inference = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._control = control_stub(self.channel)

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def _call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return await method(
                request, timeout=timeout_s or self.timeout_s, metadata=self.call_metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise NodeCallError(exc.code(), exc.details() or "") from None

    # ---- health and metadata ------------------------------------------------------------------

    async def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """The health status name of ``service`` ("" is the whole node): SERVING, ..."""
        request = health_pb2.HealthCheckRequest(service=service)
        reply = await self._call(self._health.Check, request, timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def live(self) -> bool:
        """ServerLive."""
        return (await self._call(self._inference.ServerLive, pb.ServerLiveRequest())).live

    async def ready(self) -> bool:
        """ServerReady."""
        return (await self._call(self._inference.ServerReady, pb.ServerReadyRequest())).ready

    async def model_ready(self, model: str) -> bool:
        """ModelReady."""
        request = pb.ModelReadyRequest(name=model)
        return (await self._call(self._inference.ModelReady, request)).ready

    async def metadata(self, model: str) -> Any:
        """ModelMetadata (a ``ModelMetadataResponse``)."""
        return await self._call(self._inference.ModelMetadata, pb.ModelMetadataRequest(name=model))

    async def index(self) -> list[Any]:
        """RepositoryIndex: every model the node knows, with its state."""
        reply = await self._call(self._inference.RepositoryIndex, pb.RepositoryIndexRequest())
        return list(reply.models)

    async def load_model(self, model: str, timeout_s: float | None = None) -> None:
        """RepositoryModelLoad."""
        request = pb.RepositoryModelLoadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelLoad, request, timeout_s)

    async def unload_model(self, model: str) -> None:
        """RepositoryModelUnload."""
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelUnload, request)

    # ---- inference ----------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] = (),
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """ModelInfer with raw tensors; the outputs by name. A sequence step passes
        ``parameters={"sequence_id": 7, "sequence_start": True}`` (Triton's convention)."""
        request = infer_request(model, inputs, outputs, parameters)
        return response_arrays(await self.model_infer(request, timeout_s))

    async def model_infer(self, request: Any, timeout_s: float | None = None) -> Any:
        """ModelInfer with a request built elsewhere (a proxy forwarding it as it is);
        returns the ``ModelInferResponse`` with its parameters."""
        return await self._call(self._inference.ModelInfer, request, timeout_s)

    async def telemetry(self, timeout_s: float | None = None) -> Any:
        """GetTelemetry (a ``ganglion.v1.Telemetry``)."""
        request = control_pb2.TelemetryRequest()
        return await self._call(self._control["telemetry"], request, timeout_s)

    # ---- bundles ------------------------------------------------------------------------------

    async def upload(
        self,
        bundle: Path,
        name: str,
        load: bool = False,
        replace: bool = False,
        signature: Path | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Upload a bundle folder or archive under ``name``; the signature beside it
        (``NAME.sig``) travels along when present. Returns the node's ``UploadReply``."""
        bundle = Path(bundle)
        if not bundle.exists():
            raise BundleError(f"{bundle}: no such bundle")
        sig = signature if signature is not None else signature_path(bundle)
        signed = sig.read_bytes() if sig.is_file() else b""
        with tempfile.TemporaryDirectory(prefix="ganglion-deploy-") as tmp:
            archive = bundle
            if bundle.is_dir():
                archive = write_bundle_tar(bundle, Path(tmp) / "bundle.tar")
            header = control_pb2.UploadHeader(
                name=name,
                size=archive.stat().st_size,
                sha256=_sha256(archive),
                load=load,
                replace=replace,
                signature=signed,
            )
            return await self.upload_archive(header, archive, timeout_s)

    async def upload_archive(
        self, header: Any, archive: Path, timeout_s: float | None = None
    ) -> Any:
        """Send ``archive`` under a prepared ``UploadHeader`` as it is (``upload`` fills in
        size and SHA-256): the header, the node's ``accepted``, the bytes, the reply."""
        call = self._control["upload"](
            timeout=timeout_s or self.timeout_s, metadata=self.call_metadata
        )
        try:
            await call.write(control_pb2.UploadChunk(header=header))
            await _next_event(call, "accepted")
            with open(archive, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
                    await call.write(control_pb2.UploadChunk(data=block))
            await call.done_writing()
            return (await _next_event(call, "reply")).reply
        except grpc.aio.AioRpcError as exc:
            raise NodeCallError(exc.code(), exc.details() or "") from None
        except asyncio.InvalidStateError:  # a write after the node ended the call
            raise NodeCallError(await call.code(), await call.details() or "") from None


async def _next_event(call: Any, expected: str) -> Any:
    """The node's next UploadEvent, which must be ``expected``."""
    event = await call.read()
    if event is grpc.aio.EOF:
        raise NodeCallError(await call.code(), await call.details() or "ended early")
    if event.WhichOneof("event") != expected:
        raise NodeCallError(grpc.StatusCode.INTERNAL, f"the node answered out of turn ({event})")
    return event


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
