"""A node as a separate process, driven by ``tritonclient.grpc`` unchanged: live, ready,
metadata, inference equal to the in-process Session, sequences, the repository, telemetry,
and bad requests answered with the right status while the node stays up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from ganglion.runtime import load
from ganglion.runtime.cli.app import main
from ganglion.runtime.serving.client import NodeCallError, NodeClient

if TYPE_CHECKING:
    from tests.serving.conftest import NodeProcess

IDLE_S = 2.0


@pytest.fixture(scope="module")
def node(
    bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, launch_node
) -> Iterator[NodeProcess]:
    """One node for the module: three bundles, small limits so the tests can reach them."""
    folder = tmp_path_factory.mktemp("node")
    args = [str(bundles[n]) for n in ("snn", "rwkv", "dense")]
    args += ["--backend", "onnxruntime", "--max-message-mb", "1", "--max-concurrency", "4"]
    args += ["--max-sequences", "3", "--sequence-idle-s", str(IDLE_S), "--simulate-energy"]
    with launch_node(args, folder) as process:
        yield process


def _input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _refused(call, status: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == f"StatusCode.{status}", caught.value.message()
    return caught.value.message()


def _features(batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 8), dtype=np.float32)


def test_tritonclient_sees_a_live_ready_server(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "ganglion" and "sequence" in metadata.extensions
    assert client.is_model_ready("snn") and not client.is_model_ready("absent")


def test_model_metadata_states_run_shapes(client: triton.InferenceServerClient) -> None:
    snn = client.get_model_metadata("snn")
    assert [(t.name, t.datatype, list(t.shape)) for t in snn.inputs] == [("input", "FP32", [-1, 8])]
    assert [(t.name, list(t.shape)) for t in snn.outputs] == [("output", [-1, 4])]
    rwkv = client.get_model_metadata("rwkv")
    assert [(t.datatype, list(t.shape)) for t in rwkv.inputs] == [("INT64", [-1, -1])]
    assert [list(t.shape) for t in rwkv.outputs] == [[-1, -1, 32]]


@pytest.mark.parametrize("model", ["snn", "dense"])
def test_infer_equals_the_in_process_session(
    client: triton.InferenceServerClient, bundles: dict[str, Path], model: str
) -> None:
    x = _features()
    got = client.infer(model, [_input("input", x, "FP32")]).as_numpy("output")
    with load(bundles[model], backend="onnxruntime") as session:
        np.testing.assert_array_equal(got, session.run(x))


def test_typed_contents_are_accepted(node: NodeProcess, bundles: dict[str, Path]) -> None:
    x = _features(2, seed=1)
    request = pb.ModelInferRequest(model_name="dense")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 8])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(node.address) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(list(reply.outputs[0].shape))
    with load(bundles["dense"], backend="onnxruntime") as session:
        np.testing.assert_array_equal(got, session.run(x))


def _rwkv_steps(bundle: Path, tokens: list[int]) -> list[np.ndarray]:
    with load(bundle, backend="onnxruntime") as session:
        state, out = session.init_state(1), []
        for token in tokens:
            step, state = session.step({"ids": np.array([token])}, state)
            out.append(np.array(step["logits"]))
    return out


def test_interleaved_sequences_each_keep_their_state(
    client: triton.InferenceServerClient, bundles: dict[str, Path]
) -> None:
    a, b = [3, 7, 1, 4], [9, 9, 2, 0]
    got: dict[int, list[np.ndarray]] = {11: [], 12: []}
    for t in range(4):
        for seq, tokens in ((11, a), (12, b)):
            ids = _input("ids", np.array([tokens[t]], dtype=np.int64), "INT64")
            reply = client.infer(
                "rwkv", [ids], sequence_id=seq, sequence_start=t == 0, sequence_end=t == 3
            )
            got[seq].append(reply.as_numpy("logits"))
    for seq, tokens in ((11, a), (12, b)):
        want = _rwkv_steps(bundles["rwkv"], tokens)
        for step_got, step_want in zip(got[seq], want, strict=True):
            np.testing.assert_allclose(step_got, step_want, rtol=1e-6, atol=1e-6)
    ids = _input("ids", np.array([1], dtype=np.int64), "INT64")
    message = _refused(lambda: client.infer("rwkv", [ids], sequence_id=11), "INVALID_ARGUMENT")
    assert "not live" in message


def test_same_token_gives_new_logits_as_the_state_advances(
    client: triton.InferenceServerClient,
) -> None:
    ids = _input("ids", np.array([5], dtype=np.int64), "INT64")
    first = client.infer("rwkv", [ids], sequence_id="s-1", sequence_start=True).as_numpy("logits")
    second = client.infer("rwkv", [ids], sequence_id="s-1", sequence_end=True).as_numpy("logits")
    assert not np.allclose(first, second)


def test_live_sequences_are_capped_and_idle_ones_expire(
    client: triton.InferenceServerClient,
) -> None:
    ids = _input("ids", np.array([1], dtype=np.int64), "INT64")
    for seq in (21, 22, 23):
        client.infer("rwkv", [ids], sequence_id=seq, sequence_start=True)
    message = _refused(
        lambda: client.infer("rwkv", [ids], sequence_id=24, sequence_start=True),
        "RESOURCE_EXHAUSTED",
    )
    assert "3 sequences" in message
    client.infer("rwkv", [ids], sequence_id=21, sequence_end=True)
    client.infer("rwkv", [ids], sequence_id=24, sequence_start=True)
    asyncio.run(asyncio.sleep(IDLE_S + 1.0))
    _refused(lambda: client.infer("rwkv", [ids], sequence_id=22), "INVALID_ARGUMENT")
    client.infer("rwkv", [ids], sequence_id=25, sequence_start=True, sequence_end=True)


def test_unknown_model_is_not_found_as_triton_words_it(
    client: triton.InferenceServerClient,
) -> None:
    message = _refused(
        lambda: client.infer("nope", [_input("input", _features(), "FP32")]), "NOT_FOUND"
    )
    assert message == "Request for unknown model: 'nope' is not found"
    assert client.is_server_live()


@pytest.mark.parametrize(
    "version, status, words",
    [
        ("2", "NOT_FOUND", "Request for unknown model: 'snn' version 2 is not found"),
        ("latest", "INVALID_ARGUMENT", "from specified version string 'latest'"),
        ("9" * 5000, "NOT_FOUND", "version 9999"),  # compared as text: int() refuses it
    ],
)
def test_a_version_other_than_1_is_refused_as_triton_words_it(
    client: triton.InferenceServerClient, version: str, status: str, words: str
) -> None:
    tensor = _input("input", _features(), "FP32")
    message = _refused(lambda: client.infer("snn", [tensor], model_version=version), status)
    assert message == words or words in message
    assert client.infer("snn", [tensor], model_version="01").as_numpy("output").shape[0] == 3
    assert not client.is_model_ready("snn", version) and client.is_model_ready("snn", "01")


def test_sequence_flags_need_an_id_and_a_string_id_is_bounded(
    node: NodeProcess, client: triton.InferenceServerClient
) -> None:
    request = pb.ModelInferRequest(model_name="rwkv")  # tritonclient never sends id 0
    request.inputs.add(name="ids", datatype="INT64", shape=[1])
    request.raw_input_contents.append(np.array([5], "<i8").tobytes())
    request.parameters["sequence_id"].int64_param = 0
    request.parameters["sequence_start"].bool_param = True
    with grpc.insecure_channel(node.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs a non-zero sequence_id" in caught.value.details()
    tensor = _input("ids", np.array([5], np.int64), "INT64")
    message = _refused(
        lambda: client.infer("rwkv", [tensor], sequence_id="s" * 129, sequence_start=True),
        "INVALID_ARGUMENT",
    )
    assert "129 characters (at most 128" in message
    reply = client.infer(
        "rwkv", [tensor], sequence_id="s" * 128, sequence_start=True, sequence_end=True
    )
    assert reply.as_numpy("logits") is not None


def _raw_request(**change) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="snn")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 8])
    request.raw_input_contents.append(np.zeros(8, "<f4").tobytes())
    for key, value in change.items():
        if key == "raw":
            del request.raw_input_contents[:]
            request.raw_input_contents.extend(value)
        elif key == "output":
            request.outputs.add(name=value)
        elif key == "outputs":
            for name in value:
                request.outputs.add(name=name)
        else:
            setattr(request.inputs[0], key, value)
    return request


@pytest.mark.parametrize(
    "change, words",
    [
        ({"datatype": "FP64"}, "data-type is 'FP64', but model 'snn' expects 'FP32'"),
        ({"datatype": "BYTES"}, "BYTES tensors are not supported"),
        ({"datatype": "FLOAT"}, "not a KServe datatype"),
        ({"name": "pixels"}, "unknown input 'pixels'"),
        ({"raw": [b"\x00" * 31]}, "31 bytes for shape [1, 8] FP32 (expects 32)"),
        ({"raw": [b"", b""]}, "2 tensors for 1 inputs"),
        ({"output": "probabilities"}, "unknown output 'probabilities'; model 'snn' has outputs"),
        ({"outputs": ["output", "output"]}, "output 'output' already exists in request"),
    ],
    ids=["dtype", "bytes", "datatype", "name", "byte-count", "raw-count", "output", "twice"],
)
def test_malformed_requests_are_invalid_argument_and_the_node_stays_up(
    node: NodeProcess, client: triton.InferenceServerClient, change: dict, words: str
) -> None:
    with grpc.insecure_channel(node.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_raw_request(**change), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()
    assert client.is_server_live()


def test_a_request_naming_many_outputs_or_long_names_is_answered_at_once(
    node: NodeProcess, client: triton.InferenceServerClient
) -> None:
    """60,000 distinct output names (600 kB) took 18 s of the node's event loop when each was
    looked up in a list; a 20,000-character name echoed whole made the status too large for
    gRPC's headers (the client saw RESOURCE_EXHAUSTED instead of the answer)."""
    many = _raw_request(outputs=[f"o{i}" for i in range(60_000)])
    long_model = _raw_request()
    long_model.model_name = "m" * 20_000
    long_output = _raw_request(output="q" * 20_000)
    with grpc.insecure_channel(node.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for request, code in (
            (many, grpc.StatusCode.INVALID_ARGUMENT),
            (long_model, grpc.StatusCode.NOT_FOUND),
            (long_output, grpc.StatusCode.INVALID_ARGUMENT),
        ):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=30)
            assert caught.value.code() == code, caught.value.details()
            assert len(caught.value.details()) <= 500 and time.monotonic() - started < 5
    assert client.is_server_live()


def test_a_budget_parameter_is_refused_by_a_node(node: NodeProcess) -> None:
    """Budgets are a coordinator's: a node that ignored them would seem to keep them."""
    request = _raw_request()
    request.parameters["energy_budget_j"].double_param = 1e-4
    with grpc.insecure_channel(node.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'energy_budget_j' is read by a coordinator" in caught.value.details()


def test_wrong_shape_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    x = np.zeros((2, 7), np.float32)
    message = _refused(
        lambda: client.infer("snn", [_input("input", x, "FP32")]), "INVALID_ARGUMENT"
    )
    assert "must be [batch, 8], got [2, 7]" in message
    assert client.is_server_live()


def test_stateless_model_refuses_a_sequence(client: triton.InferenceServerClient) -> None:
    tensor = _input("input", _features(), "FP32")
    message = _refused(
        lambda: client.infer("dense", [tensor], sequence_id=3, sequence_start=True),
        "INVALID_ARGUMENT",
    )
    assert "stateless" in message


def test_message_over_the_limit_is_resource_exhausted_naming_it(
    client: triton.InferenceServerClient,
) -> None:
    x = np.zeros((40_000, 8), np.float32)  # 1.28 MB against --max-message-mb 1
    message = _refused(
        lambda: client.infer("snn", [_input("input", x, "FP32")]), "RESOURCE_EXHAUSTED"
    )
    assert str(1 << 20) in message
    assert client.is_server_live()


def test_requests_over_capacity_are_resource_exhausted(node: NodeProcess) -> None:
    x = {"input": _features(16384)}  # 512 KiB: milliseconds each, too large to run inline

    async def burst() -> list[object]:
        async with NodeClient(node.address) as nodes:
            calls = [nodes.infer("snn", x) for _ in range(24)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, NodeCallError)]
    assert refused and all(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert "limit of 4 concurrent requests" in refused[0].details
    assert len(refused) < len(results)  # the admitted ones were answered


def test_repository_index_unload_and_load(client: triton.InferenceServerClient) -> None:
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index == {"dense": "READY", "rwkv": "READY", "snn": "READY"}
    client.unload_model("dense")
    assert not client.is_model_ready("dense")
    states = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
    assert states["dense"] == ("UNAVAILABLE", "unloaded")
    _refused(lambda: client.infer("dense", [_input("input", _features(), "FP32")]), "NOT_FOUND")
    client.load_model("dense")
    assert client.is_model_ready("dense")
    _refused(lambda: client.load_model("nothing-here"), "NOT_FOUND")


def test_health_and_reflection_list_the_services(node: NodeProcess) -> None:
    async def ask() -> tuple[str, set[str]]:
        async with NodeClient(node.address) as nodes:
            status = await nodes.health("")
        channel = grpc.aio.insecure_channel(node.address)
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in reply.list_services_response.service}
        await channel.close()
        return status, names

    status, names = asyncio.run(ask())
    assert status == "SERVING"
    assert {
        "inference.GRPCInferenceService",
        "ganglion.v1.Control",
        "grpc.health.v1.Health",
    } <= names


def test_telemetry_reports_latency_energy_and_queue(node: NodeProcess) -> None:
    async def ask():
        async with NodeClient(node.address) as nodes:
            await nodes.infer("snn", {"input": _features()})
            return await nodes.telemetry()

    telemetry = asyncio.run(ask())
    assert telemetry.device.profile and telemetry.device.meter_kind == "simulated"
    assert telemetry.device.energy_j > 0 and telemetry.max_concurrency == 4
    snn = {m.name: m for m in telemetry.models}["snn"]
    assert snn.inferences >= 1 and snn.latency_p50_s > 0 and snn.queue_depth == 0
    assert snn.measurement.energy_kind == "simulated" and snn.measurement.energy_per_inference_j > 0
    assert snn.measurement.runs >= 5 and snn.measurement.latency_p50_s > 0


def test_infer_command_writes_the_outputs(
    node: NodeProcess, bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = _features(2, seed=3)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(SystemExit) as done:
        main(
            [
                "infer",
                "--to",
                node.address,
                "--model",
                "snn",
                "--input",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / "y.npz"),
            ]
        )
    printed = capsys.readouterr()
    assert done.value.code in (0, None), printed.err
    assert f"written to {tmp_path / 'y.npz'}" in printed.out
    with load(bundles["snn"], backend="onnxruntime") as session:
        np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["output"], session.run(x))
