"""KServe v2 ``inference.GRPCInferenceService`` over a node's models, so that
``tritonclient.grpc`` and any Open Inference Protocol client work unchanged.

Implemented: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer,
RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload; the rest answer UNIMPLEMENTED.
Message classes are Triton's generated ones (``tritonclient.grpc.service_pb2``).

ModelInfer: a request with a ``sequence_id`` parameter advances that sequence by one
``step`` (``runtime.serving.sequences``); one without runs the whole input with ``run``.
Requests beyond the node's ``--max-concurrency`` are answered RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.runtime.serving.kserve_tensors import request_arrays
from ganglion.runtime.serving.repository import ModelRepository
from ganglion.runtime.serving.sequences import sequence_control
from ganglion.runtime.serving.status import NodeError, status_of

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "ganglion"
EXTENSIONS = ("sequence", "model_repository", "ganglion_control")
MODEL_VERSION = "1"


class Admission:
    """Counts requests in flight against a node-wide cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def __enter__(self) -> Admission:
        if self.in_flight >= self.limit:
            raise NodeError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the node is at its limit of {self.limit} concurrent requests "
                "(--max-concurrency); retry later",
            )
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 servicer over a ``ModelRepository``."""

    def __init__(self, repository: ModelRepository, admission: Admission, version: str) -> None:
        self.repository = repository
        self.admission = admission
        self.version = version
        self.ready = False  # set once the models given at start are loaded

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready once the start-up models are loaded."""
        return pb.ServerReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self.version, extensions=EXTENSIONS
        )

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """True when the model is loaded (False for unknown models, as Triton answers)."""
        ready = request.name in self.repository.models and request.version in ("", MODEL_VERSION)
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Inputs as ``run`` takes them and outputs as it returns them (-1: any length)."""
        try:
            model = self.repository.get(request.name, request.version)
        except NodeError as exc:
            await context.abort(*status_of(exc))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[MODEL_VERSION],
            platform=f"ganglion_{model.backend}",
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
            outputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs
            ],
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One inference: ``run``, or one ``step`` of a sequence."""
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=MODEL_VERSION, id=request.id
        )
        try:
            with self.admission:
                model = self.repository.get(request.model_name, request.model_version)
                model.check_datatypes(request.inputs)
                arrays = request_arrays(request)
                control = sequence_control(request.parameters)
                wanted = [o.name for o in request.outputs]
                await model.infer(arrays, control, wanted, response)
        except Exception as exc:
            await context.abort(*status_of(exc))
        return response

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every known model with its state (READY or UNAVAILABLE and why)."""
        entry = pb.RepositoryIndexResponse.ModelIndex
        rows = [
            entry(name=name, version=MODEL_VERSION, state=state, reason=reason)
            for name, state, reason in self.repository.index()
            if state == "READY" or not request.ready
        ]
        return pb.RepositoryIndexResponse(models=rows)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Load (or reload) a known bundle."""
        try:
            async with self.repository.lock:
                await self.repository.load(request.model_name)
        except Exception as exc:
            await context.abort(*status_of(exc))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Stop serving a model (its bundle stays known)."""
        try:
            async with self.repository.lock:
                await self.repository.unload(request.model_name)
        except Exception as exc:
            await context.abort(*status_of(exc))
        return pb.RepositoryModelUnloadResponse()


def add_inference_service(service: InferenceService, server: grpc.aio.Server) -> None:
    """Register the servicer on ``server``."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
