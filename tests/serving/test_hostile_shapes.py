"""Hostile shapes on the KServe wire: a zero-element tensor with a huge other axis (numpy
cannot size it: it answered INTERNAL "array is too big"), an axis above the manifest's
largest, an empty or oversized batch whose reply would be too large (RESOURCE_EXHAUSTED came
first). Each is INVALID_ARGUMENT naming the tensor: the decoding functions refuse the shape
before any array of it exists, and a node on 127.0.0.1 checks a request's inputs before it
sizes the reply, and stays up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.models.manifest import MAX_DIM
from ganglion.runtime.serving.kserve_tensors import (
    MAX_MESSAGE_BYTES,
    WireError,
    array_from_contents,
    array_from_raw,
    request_arrays,
    response_arrays,
)

if TYPE_CHECKING:
    from tests.serving.conftest import NodeProcess

# (shape, datatype): no element, and an axis numpy cannot size or above MAX_DIM
EMPTY_AND_HUGE = [
    ([2**62, 0], "FP32"),
    ([0, 2**62], "FP32"),
    ([2**61, 0], "INT64"),
    ([2**40, 0], "FP32"),
    ([MAX_DIM + 1, 0], "BOOL"),
]
# every axis within MAX_DIM, but the nonempty ones more than a message holds
EMPTY_AND_WIDE = [([MAX_DIM, MAX_DIM, MAX_DIM, 0], "FP32"), ([0, 2**16, 2**16], "INT64")]


def _request(name: str, datatype: str, shape: list[int], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="dense")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    else:
        tensor.contents.SetInParent()  # typed contents, no values
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize(("shape", "datatype"), EMPTY_AND_HUGE)
def test_an_empty_tensor_with_a_huge_axis_is_a_wire_error(
    shape: list[int], datatype: str, raw: bool
) -> None:
    refused = rf"^input 'x': shape \[.*\] has a dimension above {MAX_DIM}$"
    with pytest.raises(WireError, match=refused):
        request_arrays(_request("x", datatype, shape, raw))


@pytest.mark.parametrize(("shape", "datatype"), EMPTY_AND_WIDE)
def test_an_empty_tensor_whose_other_axes_exceed_a_message_is_a_wire_error(
    shape: list[int], datatype: str
) -> None:
    with pytest.raises(WireError, match=rf"^input 'x': .* {MAX_MESSAGE_BYTES} bytes"):
        array_from_raw("x", datatype, shape, b"")
    with pytest.raises(WireError, match=rf"{MAX_MESSAGE_BYTES} bytes"):
        array_from_contents("x", datatype, shape, pb.InferTensorContents())


def test_a_reply_with_such_a_shape_is_refused_too() -> None:
    response = pb.ModelInferResponse()
    response.outputs.add(name="y", datatype="FP32", shape=[2**62, 0])
    response.raw_output_contents.append(b"")
    with pytest.raises(WireError, match="^output 'y': shape"):
        response_arrays(response)


def test_empty_tensors_within_the_bounds_still_decode() -> None:
    # the Session, not the wire, refuses an empty batch (it names the axis)
    assert array_from_raw("x", "FP32", [MAX_DIM, 0], b"").shape == (MAX_DIM, 0)
    assert array_from_contents("x", "INT64", [0, 8], pb.InferTensorContents()).shape == (0, 8)


# ---- a node ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(
    bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, launch_node
) -> Iterator[NodeProcess]:
    """A node serving the dense and token bundles with its default limits (64 MiB messages)."""
    folder = tmp_path_factory.mktemp("hostile-shapes")
    args = [str(bundles["dense"]), str(bundles["rwkv"]), "--backend", "onnxruntime"]
    with launch_node([*args, "--simulate-energy"], folder) as process:
        yield process


@pytest.fixture(scope="module")
def stub(node: NodeProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """A raw KServe stub of the module's node (no client-side checks in the way)."""
    with grpc.insecure_channel(node.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _status(
    stub: pb_grpc.GRPCInferenceServiceStub, model: str, name: str, datatype: str, shape: list[int]
) -> tuple[grpc.StatusCode, str]:
    request = _request(name, datatype, shape, raw=True)
    request.model_name = model
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    return caught.value.code(), caught.value.details()


@pytest.mark.parametrize(
    ("model", "name", "datatype", "shape"),
    [
        ("dense", "input", "FP32", [2**62, 0]),
        ("dense", "input", "FP32", [0, 2**62]),
        ("dense", "input", "FP32", [2**40, 0]),
        ("rwkv", "ids", "INT64", [2**61, 0]),
        ("rwkv", "ids", "INT64", [0, 2**62]),
        ("dense", "input", "FP32", [MAX_DIM, MAX_DIM, 0]),
    ],
)
def test_the_node_answers_invalid_argument_naming_the_tensor(
    stub: pb_grpc.GRPCInferenceServiceStub, model: str, name: str, datatype: str, shape: list[int]
) -> None:
    code, details = _status(stub, model, name, datatype, shape)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"input {name!r}: shape ") and "\n" not in details


def test_inputs_are_checked_before_the_reply_is_sized(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    # [MAX_DIM, 0] decodes; its reply [MAX_DIM, 4] FP32 (256 MiB) would be over 64 MiB
    code, details = _status(stub, "dense", "input", "FP32", [MAX_DIM, 0])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"input 'input' has a batch of {MAX_DIM}, more than the" in details
    code, details = _status(stub, "dense", "input", "FP32", [0, 8])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty batch axis" in details


def test_the_node_still_serves_after_them(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="dense")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 8])
    request.raw_input_contents.append(np.ones((2, 8), "<f4").tobytes())
    reply = stub.ModelInfer(request, timeout=30)
    assert list(reply.outputs[0].shape) == [2, 4]
