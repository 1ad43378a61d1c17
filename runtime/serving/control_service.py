"""``ganglion.v1.Control``: bundle upload and device telemetry (``protos/ganglion_control.proto``).

The handlers are registered through grpc's generic handler API with the compiled message
classes (the .proto is compiled in memory, without generated service stubs); ``control_stub``
is the client-side counterpart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ganglion.runtime.serving.inference_service import Admission
from ganglion.runtime.serving.protos import SERVICE, control_pb2
from ganglion.runtime.serving.repository import ModelRepository
from ganglion.runtime.serving.status import status_of
from ganglion.runtime.serving.telemetry import NodeTelemetry, measurement_message
from ganglion.runtime.serving.upload import (
    check_header,
    first_header,
    install_upload,
    received_archive,
)

UPLOAD = f"/{SERVICE}/UploadBundle"
TELEMETRY = f"/{SERVICE}/GetTelemetry"


class ControlService:
    """Upload and telemetry over a node's repository, meter and admission counter."""

    def __init__(
        self, repository: ModelRepository, telemetry: NodeTelemetry, admission: Admission
    ) -> None:
        self.repository = repository
        self.telemetry = telemetry
        self.admission = admission

    async def upload_bundle(
        self, chunks: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Check the header, accept it, receive, prove and install the bundle; the last
        event is the reply saying how it ran here."""
        repository = self.repository
        try:
            header = await first_header(chunks)
            check_header(header, repository.settings, set(repository.given))
            yield control_pb2.UploadEvent(accepted=control_pb2.UploadAccepted())
            async with received_archive(header, chunks, repository.settings) as got:
                installed = await asyncio.to_thread(
                    install_upload, got, repository.settings, repository.meter
                )
                if installed.model is not None:
                    async with repository.lock:
                        repository.add(installed.model)
        except Exception as exc:
            await context.abort(*status_of(exc))
        reply = control_pb2.UploadReply(
            name=header.name,
            sha256=got.sha256,
            bytes=got.size,
            kind=installed.kind,
            backend=installed.backend,
            loaded=installed.model is not None,
            signed_by=installed.signed_by,
            measurement=measurement_message(installed.measurement),
        )
        yield control_pb2.UploadEvent(reply=reply)

    async def get_telemetry(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The node's device, meter and per-model figures now."""
        models = list(self.repository.models.values())
        return self.telemetry.message(models, self.admission.limit)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler serving ``ganglion.v1.Control``."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "UploadBundle": grpc.stream_stream_rpc_method_handler(
                    self.upload_bundle,
                    request_deserializer=control_pb2.UploadChunk.FromString,
                    response_serializer=control_pb2.UploadEvent.SerializeToString,
                ),
                "GetTelemetry": grpc.unary_unary_rpc_method_handler(
                    self.get_telemetry,
                    request_deserializer=control_pb2.TelemetryRequest.FromString,
                    response_serializer=control_pb2.Telemetry.SerializeToString,
                ),
            },
        )


def control_stub(channel: grpc.aio.Channel) -> dict[str, Callable[..., Any]]:
    """Client callables of ``ganglion.v1.Control`` on ``channel``: upload and telemetry."""
    return {
        "upload": channel.stream_stream(
            UPLOAD,
            request_serializer=control_pb2.UploadChunk.SerializeToString,
            response_deserializer=control_pb2.UploadEvent.FromString,
        ),
        "telemetry": channel.unary_unary(
            TELEMETRY,
            request_serializer=control_pb2.TelemetryRequest.SerializeToString,
            response_deserializer=control_pb2.Telemetry.FromString,
        ),
    }
