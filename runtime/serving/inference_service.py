"""KServe v2 ``inference.GRPCInferenceService`` over a node's models, so that
``tritonclient.grpc`` and any Open Inference Protocol client work unchanged.

Implemented: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer,
RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload; the rest answer UNIMPLEMENTED
naming the call (``answer_unimplemented``). Message classes are Triton's generated ones
(``tritonclient.grpc.service_pb2``).

ModelInfer: a request with a ``sequence_id`` parameter advances that sequence by one
``step`` (``runtime.serving.sequences``); one without runs the whole input with ``run``.
Requests beyond the node's ``--max-concurrency`` are answered RESOURCE_EXHAUSTED at once.
Triton options the node does not implement are refused: shared memory and ``classification``
on a tensor (INVALID_ARGUMENT), and RepositoryModelLoad's ``config`` and ``file:`` overrides
(UNIMPLEMENTED: a valid Triton request this server does not support; a changed bundle is
installed by upload, ``ganglion deploy --replace``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.runtime.serving.kserve_tensors import (
    BUDGET_PARAMETERS,
    WireError,
    request_arrays,
    requested_outputs,
)
from ganglion.runtime.serving.repository import ModelRepository
from ganglion.runtime.serving.sequences import sequence_control
from ganglion.runtime.serving.served_model import ServedModel
from ganglion.runtime.serving.status import NodeError, is_served_version, status_of
from ganglion.runtime.tensors import MAX_BATCH

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "ganglion"
EXTENSIONS = ("sequence", "model_repository", "ganglion_control")
MODEL_VERSION = "1"
Servicer = TypeVar("Servicer", bound=type)


def model_config(model: ServedModel) -> Any:
    """``model``'s Triton ``ModelConfig``: where every tensor leads with the batch axis,
    ``max_batch_size`` (the manifest's bound, else the node's ``MAX_BATCH``) and dims without
    it, as Triton's batching clients (PyTriton's ``infer_batch``) expect; else
    ``max_batch_size`` 0 and the whole shapes (a time-major input)."""
    from tritonclient.grpc import model_config_pb2 as mc

    first = 1 if model.batch_first else 0
    limit = model.session.manifest.max_batch or MAX_BATCH

    def tensors(cls: Any, infos: Any) -> list[Any]:
        kind = mc.DataType.Value
        return [cls(name=t.name, data_type=kind(f"TYPE_{t.datatype}"), dims=t.shape[first:])
                for t in infos]  # fmt: skip

    return mc.ModelConfig(
        name=model.name,
        platform=f"ganglion_{model.backend}",
        max_batch_size=limit if model.batch_first else 0,
        input=tensors(mc.ModelInput, model.inputs),
        output=tensors(mc.ModelOutput, model.outputs),
    )


def answer_unimplemented(server: str) -> Callable[[Servicer], Servicer]:
    """Class decorator: every KServe RPC the servicer does not define answers UNIMPLEMENTED
    naming the call and ``server`` (not gRPC's "Unexpected <class 'NotImplementedError'>")."""

    def decorate(servicer: Servicer) -> Servicer:
        base = pb_grpc.GRPCInferenceServiceServicer
        for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
            if getattr(servicer, method.name) is getattr(base, method.name):
                setattr(servicer, method.name, _unimplemented(method.name, server))
        return servicer

    return decorate


def _unimplemented(name: str, server: str) -> Callable[..., Any]:
    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by {server}")

    answer.__name__ = name
    return answer


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


@answer_unimplemented(f"the {SERVER_NAME} node")
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
        ready = request.name in self.repository.models and is_served_version(request.version)
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

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The model's configuration as Triton's clients read it (PyTriton's ModelClient asks
        for it first): ``model_config``."""
        try:
            model = self.repository.get(request.name, request.version)
        except NodeError as exc:
            await context.abort(*status_of(exc))
        return pb.ModelConfigResponse(config=model_config(model))

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Inference counts per loaded model (``name`` empty: every one), as Triton answers
        them; ganglion keeps no per-phase durations, so those stay 0."""
        try:
            if request.name:
                models = [self.repository.get(request.name, request.version)]
            else:
                models = list(self.repository.models.values())
        except NodeError as exc:
            await context.abort(*status_of(exc))
        return pb.ModelStatisticsResponse(
            model_stats=[
                pb.ModelStatistics(
                    name=m.name,
                    version=MODEL_VERSION,
                    inference_count=m.inferences,
                    execution_count=m.inferences,
                    inference_stats=pb.InferStatistics(
                        success=pb.StatisticDuration(count=m.inferences),
                        fail=pb.StatisticDuration(count=m.failures),
                    ),
                )
                for m in models
            ]
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One inference: ``run``, or one ``step`` of a sequence."""
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=MODEL_VERSION, id=request.id
        )
        try:
            with self.admission:
                model = self.repository.get(request.model_name, request.model_version)
                budgets = [key for key in BUDGET_PARAMETERS if key in request.parameters]
                if budgets:  # silently ignored, they would read as kept
                    raise WireError(
                        f"parameter {budgets[0]!r} is read by a coordinator (ganglion cluster): "
                        f"a node runs {request.model_name!r} whole, whatever the budget"
                    )
                model.check_datatypes(request.inputs)
                arrays = request_arrays(request)
                control = sequence_control(request.parameters)
                wanted = requested_outputs(request)
                await model.infer(arrays, control, wanted, response, context.time_remaining())
        except asyncio.CancelledError:  # the client left, or the node stops past its grace
            await context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
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
        """Load (or reload) a known bundle, as it is (no overrides)."""
        try:
            if request.parameters:
                raise NodeError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"load parameter {sorted(request.parameters)[0]!r} is not supported: the node "
                    "loads bundles as they are; upload a changed one (ganglion deploy --replace)",
                )
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
