"""A node's limits and refusals, with limits set low so that the tests reach them without
allocating much: the reply's size is checked before a call runs (1 MiB messages here), live
sequence state is bounded in bytes (1 MiB here) and a refused step keeps the state it had, a
token model's context and an empty time axis are INVALID_ARGUMENT, Triton options the node
does not implement are refused, and unimplemented calls say so in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import onnx
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.serving.status import status_of

if TYPE_CHECKING:
    from tests.serving.conftest import NodeProcess

CONTEXT = 8  # of the ``gam`` model
MiB = 1 << 20


@pytest.fixture(scope="module")
def gam_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny token model with learned positions: a context of ``CONTEXT`` tokens."""
    torch.manual_seed(0)
    config = {"vocab_size": 32, "d_model": 16, "n_layers": 1, "slots": 8, "context": CONTEXT}
    model = sequence_model_class("gam").from_config(config)
    return save_bundle(sequence_deployable(model), tmp_path_factory.mktemp("gam") / "gam")


@pytest.fixture(scope="module")
def node(
    bundles: dict[str, Path],
    gam_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
    launch_node,
) -> Iterator[NodeProcess]:
    folder = tmp_path_factory.mktemp("limits")
    args = [str(bundles[n]) for n in ("snn", "rwkv", "dense")] + [str(gam_bundle)]
    args += ["--backend", "onnxruntime", "--max-message-mb", "1", "--max-sequence-state-mb", "1"]
    args += ["--simulate-energy"]
    with launch_node(args, folder) as process:
        yield process


def _ids(*shape: int, value: int = 1) -> triton.InferInput:
    tensor = triton.InferInput("ids", list(shape), "INT64")
    tensor.set_data_from_numpy(np.full(shape, value, dtype=np.int64))
    return tensor


def _features(batch: int = 2) -> triton.InferInput:
    tensor = triton.InferInput("input", [batch, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((batch, 8), np.float32))
    return tensor


def _refused(call, status: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == f"StatusCode.{status}", caught.value.message()
    message = caught.value.message()
    assert "\n" not in message
    return message


def _state_bytes_per_sample(bundle: Path) -> int:
    with load(bundle, backend="onnxruntime") as session:
        return sum(v.nbytes for v in session.init_state(1).values())


def test_a_reply_over_the_message_limit_is_refused_before_running(
    client: triton.InferenceServerClient,
) -> None:
    # 9000 x 1 x 32 float32 logits: 1.15 MB out of a 72 kB request
    message = _refused(lambda: client.infer("rwkv", [_ids(9000, 1)]), "RESOURCE_EXHAUSTED")
    assert "'logits'" in message and "[9000, 1, 32] FP32" in message
    assert str(MiB) in message and "--max-message-mb" in message
    assert client.infer("rwkv", [_ids(2000, 1)]).as_numpy("logits").shape == (2000, 1, 32)
    twice = [triton.InferRequestedOutput("logits") for _ in range(2)]  # no reply counted twice
    message = _refused(
        lambda: client.infer("rwkv", [_ids(5000, 1)], outputs=twice), "INVALID_ARGUMENT"
    )
    assert message == "output 'logits' already exists in request"


def test_a_sequence_step_whose_reply_is_too_large_keeps_no_state(
    client: triton.InferenceServerClient,
) -> None:
    start = lambda: client.infer("rwkv", [_ids(9000)], sequence_id=31, sequence_start=True)  # noqa: E731
    message = _refused(start, "RESOURCE_EXHAUSTED")
    assert "[9000, 32] FP32" in message
    step = lambda: client.infer("rwkv", [_ids(1)], sequence_id=31)  # noqa: E731
    assert "not live" in _refused(step, "INVALID_ARGUMENT")


def test_live_sequence_state_is_bounded_in_bytes(
    client: triton.InferenceServerClient, bundles: dict[str, Path]
) -> None:
    per_sample = _state_bytes_per_sample(bundles["rwkv"])
    batch = int(0.6 * MiB) // per_sample  # two of these do not fit in 1 MiB
    client.infer("rwkv", [_ids(batch)], sequence_id=41, sequence_start=True)
    message = _refused(
        lambda: client.infer("rwkv", [_ids(batch)], sequence_id=42, sequence_start=True),
        "RESOURCE_EXHAUSTED",
    )
    assert f"state of {batch * per_sample} bytes does not fit" in message
    assert "--max-sequence-state-mb" in message
    client.infer("rwkv", [_ids(batch)], sequence_id=41, sequence_end=True)
    client.infer("rwkv", [_ids(batch)], sequence_id=42, sequence_start=True, sequence_end=True)


def test_a_token_model_beyond_its_context_is_invalid_argument(
    node: NodeProcess, client: triton.InferenceServerClient
) -> None:
    message = _refused(lambda: client.infer("gam", [_ids(1, CONTEXT + 1)]), "INVALID_ARGUMENT")
    assert f"holds {CONTEXT + 1} tokens" in message and f"context is {CONTEXT}" in message
    for t in range(CONTEXT):
        client.infer("gam", [_ids(1)], sequence_id=51, sequence_start=t == 0)
    step = lambda: client.infer("gam", [_ids(1)], sequence_id=51)  # noqa: E731
    for _ in range(2):  # refused, and the sequence stays as it was
        assert f"has taken {CONTEXT} tokens, the model's context" in _refused(
            step, "INVALID_ARGUMENT"
        )
    client.infer("gam", [_ids(1)], sequence_id=51, sequence_start=True, sequence_end=True)
    assert "Non-zero status code" not in node.log_text()  # nothing reached ONNX Runtime


def test_an_empty_batch_or_time_axis_is_invalid_argument(
    client: triton.InferenceServerClient,
) -> None:
    message = _refused(lambda: client.infer("rwkv", [_ids(1, 0)]), "INVALID_ARGUMENT")
    assert "[1, 0] has an empty time axis" in message
    message = _refused(lambda: client.infer("snn", [_features(0)]), "INVALID_ARGUMENT")
    assert "[0, 8] has an empty batch axis" in message


def test_class_count_and_shared_memory_are_refused(client: triton.InferenceServerClient) -> None:
    ranked = triton.InferRequestedOutput("output", class_count=3)
    message = _refused(
        lambda: client.infer("dense", [_features()], outputs=[ranked]), "INVALID_ARGUMENT"
    )
    assert "classification (class_count) is not supported" in message
    shared = triton.InferInput("input", [2, 8], "FP32")
    shared.set_shared_memory("region", 64)
    message = _refused(lambda: client.infer("dense", [shared]), "INVALID_ARGUMENT")
    assert "input 'input': shared memory is not supported" in message
    to_shared = triton.InferRequestedOutput("output")
    to_shared.set_shared_memory("region", 32)
    message = _refused(
        lambda: client.infer("dense", [_features()], outputs=[to_shared]), "INVALID_ARGUMENT"
    )
    assert "output 'output': shared memory is not supported" in message


def test_load_overrides_are_unimplemented(node: NodeProcess) -> None:
    with grpc.insecure_channel(node.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for key, value in (("config", "string_param"), ("file:1/model.onnx", "bytes_param")):
            request = pb.RepositoryModelLoadRequest(model_name="dense")
            setattr(request.parameters[key], value, b"x" if value == "bytes_param" else "{}")
            with pytest.raises(grpc.RpcError) as caught:
                stub.RepositoryModelLoad(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert f"load parameter {key!r} is not supported" in caught.value.details()


def test_unimplemented_calls_and_step_mistakes_say_what_is_wrong(
    client: triton.InferenceServerClient,
) -> None:
    message = _refused(lambda: client.get_trace_settings(), "UNIMPLEMENTED")
    assert message == "TraceSetting is not implemented by the ganglion node"
    config = client.get_model_config("dense", as_json=True)["config"]  # as Triton's clients read it
    assert config["max_batch_size"] == 64  # the bound it was exported with; dims without it
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("input", "TYPE_FP32", ["8"])
    ]
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [("output", "TYPE_FP32")]
    stats = client.get_inference_statistics("dense", as_json=True)["model_stats"]
    assert [s["name"] for s in stats] == ["dense"]
    client.infer("dense", [_features()])
    after = client.get_inference_statistics("dense", as_json=True)["model_stats"][0]
    assert int(after.get("inference_count", 0)) == int(stats[0].get("inference_count", 0)) + 1
    two_d = lambda: client.infer("rwkv", [_ids(1, 3)], sequence_id=61, sequence_start=True)  # noqa: E731
    message = _refused(two_d, "INVALID_ARGUMENT")
    assert "a sequence step takes ids [batch] (one step per request), got ids [1, 3]" in message
    client.infer("rwkv", [_ids(1)], sequence_id=61, sequence_start=True)
    message = _refused(lambda: client.infer("rwkv", [_ids(3)], sequence_id=61), "INVALID_ARGUMENT")
    assert "sequence 61 was started with batch 1; this step sends batch 3" in message
    client.infer("rwkv", [_ids(1)], sequence_id=61, sequence_end=True)


def test_onnx_external_data_outside_the_bundle_is_invalid_argument(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    bundle = shutil.copytree(bundles["dense"], tmp_path / "extdata")
    model = onnx.load(str(bundle / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../../etc/hostname"), ("offset", "0"), ("length", "4")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(bundle / "model.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"]["model.onnx"] = sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception) as caught:
        load(bundle, backend="onnxruntime")
    code, message = status_of(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert "refers to external data" in message
