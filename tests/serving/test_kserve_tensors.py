"""KServe v2 tensors on the wire and Triton's sequence parameters, without a server."""

from __future__ import annotations

import time

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import np_to_triton_dtype

from ganglion.models.manifest import DTYPES
from ganglion.runtime.serving.client import infer_request
from ganglion.runtime.serving.kserve_tensors import (
    CONTENTS_FIELD,
    DATATYPE_OF,
    WireError,
    fill_tensors,
    request_arrays,
    response_arrays,
)
from ganglion.runtime.serving.sequences import (
    SequenceControl,
    SequenceError,
    SequenceLimit,
    SequenceStore,
    sequence_control,
)


def _sample(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "bool":
        return rng.random((2, 3)) < 0.5
    if dtype.startswith("float"):
        return rng.standard_normal((2, 3)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (2, 3), endpoint=True).astype(dtype)


def test_every_manifest_dtype_has_the_datatype_tritonclient_uses() -> None:
    assert sorted(DATATYPE_OF) == sorted(DTYPES)
    for dtype, datatype in DATATYPE_OF.items():
        assert np_to_triton_dtype(np.dtype(dtype)) == datatype


@pytest.mark.parametrize("dtype", DTYPES)
def test_raw_tensors_round_trip_bit_for_bit(dtype: str) -> None:
    array = _sample(dtype)
    request = infer_request("m", {"x": array})
    assert request.inputs[0].datatype == DATATYPE_OF[dtype]
    got = request_arrays(request)["x"]
    assert got.dtype == array.dtype and np.array_equal(got, array)
    response = pb.ModelInferResponse()
    fill_tensors(response.outputs, response.raw_output_contents, {"y": array})
    back = response_arrays(response)["y"]
    assert back.dtype == array.dtype and np.array_equal(back, array)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if DATATYPE_OF[d] in CONTENTS_FIELD])
def test_typed_contents_read_like_raw_bytes(dtype: str) -> None:
    array = _sample(dtype)
    datatype = DATATYPE_OF[dtype]
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    got = request_arrays(request)["x"]
    assert got.dtype == array.dtype and np.array_equal(got, array)


def _typed(datatype: str, field: str, values: list, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(
    "request_, words",
    [
        (_typed("FP16", "fp32_contents", [1.0], [1]), "FP16 travels only in raw_input_contents"),
        (_typed("FP32", "int_contents", [1], [1]), "belongs in fp32_contents, got int_contents"),
        (_typed("FP32", "fp32_contents", [1.0, 2.0], [3]), "2 values in fp32_contents"),
        (_typed("INT8", "int_contents", [300], [1]), "outside INT8"),
        (_typed("UINT16", "uint_contents", [1], [1]), "'UINT16' is not supported"),
        (_typed("FP32", "fp32_contents", [], [-1, 0]), "negative dimension"),
        (_typed("FP32", "fp32_contents", [], [1] * 9), "9 dimensions"),
    ],
    ids=["fp16-typed", "wrong-field", "count", "range", "uint16", "negative", "rank"],
)
def test_bad_typed_contents_name_the_problem(request_: pb.ModelInferRequest, words: str) -> None:
    with pytest.raises(WireError, match="input 'x'") as caught:
        request_arrays(request_)
    assert words in str(caught.value)


def test_huge_declared_shape_is_refused_before_allocation() -> None:
    request = infer_request("m", {"x": np.zeros(4, np.float32)})
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend([1 << 40, 1 << 40])
    with pytest.raises(WireError, match="has a dimension above 16777216"):
        request_arrays(request)


def test_duplicate_input_names_are_refused() -> None:
    request = infer_request("m", {"x": np.zeros(2, np.float32)})
    request.inputs.add(name="x", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.zeros(2, "<f4").tobytes())
    with pytest.raises(WireError, match="appears twice"):
        request_arrays(request)


def _params(**values: object) -> dict[str, pb.InferParameter]:
    out = {}
    for key, value in values.items():
        param = pb.InferParameter()
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = str(value)
        out[key] = param
    return out


def test_sequence_parameters_follow_triton() -> None:
    assert sequence_control({}) == SequenceControl(None)
    assert sequence_control(_params(sequence_id=0)) == SequenceControl(None)
    with pytest.raises(SequenceError, match="needs a non-zero sequence_id"):
        sequence_control(_params(sequence_id=0, sequence_start=True))  # Triton refuses it too
    assert sequence_control(_params(sequence_id="")).id is None
    got = sequence_control(_params(sequence_id=7, sequence_start=True, sequence_end=False))
    assert got == SequenceControl(7, True, False)
    assert sequence_control(_params(sequence_id="chat-1", sequence_end=True)).end
    with pytest.raises(SequenceError, match="must be a bool"):
        sequence_control(_params(sequence_id=7, sequence_start="yes"))
    with pytest.raises(SequenceError, match="must not be negative"):
        sequence_control(_params(sequence_id=-3))


def test_store_caps_live_sequences_and_forgets_idle_ones() -> None:
    store = SequenceStore(max_sequences=2, idle_s=0.2)
    fresh = {"h": np.zeros(2)}
    for key in (1, 2):
        control = SequenceControl(key, start=True)
        store.commit(control, store.begin(control, lambda: fresh))
    with pytest.raises(SequenceLimit, match="2 sequences are live"):
        store.begin(SequenceControl(3, start=True), lambda: fresh)
    restarted = store.begin(SequenceControl(1, start=True), lambda: {"h": np.ones(2)})
    assert restarted["h"][0] == 1.0  # restarting a live id starts from fresh state
    store.commit(SequenceControl(2, end=True), fresh)
    assert len(store) == 1
    time.sleep(0.3)
    with pytest.raises(SequenceError, match="not live"):
        store.begin(SequenceControl(1), lambda: fresh)
    assert len(store) == 0


def test_store_keeps_a_copy_of_the_state() -> None:
    store = SequenceStore(max_sequences=1, idle_s=60)
    buffer = {"h": np.zeros(3)}
    store.commit(SequenceControl(5, start=True), buffer)
    buffer["h"][:] = 9.0  # a backend reusing its output buffer
    assert np.array_equal(store.begin(SequenceControl(5), dict)["h"], np.zeros(3))


def test_store_bounds_state_bytes_and_steps_and_a_refused_step_keeps_the_state() -> None:
    store = SequenceStore(max_sequences=4, idle_s=60, max_bytes=64, context=2)
    first = SequenceControl(1, start=True)
    store.commit(first, store.begin(first, lambda: {"h": np.zeros(4)}, 32, 1), 1)
    with pytest.raises(SequenceLimit, match="state of 40 bytes does not fit"):
        store.begin(SequenceControl(2, start=True), lambda: {"h": np.zeros(5)}, 40, 1)
    with pytest.raises(SequenceLimit, match="grew to 80 bytes"):
        store.commit(SequenceControl(1), {"h": np.ones(10)}, 1)
    assert store.nbytes == 32 and not store.begin(SequenceControl(1), dict, batch=1)["h"].any()
    with pytest.raises(SequenceError, match="started with batch 1; this step sends batch 3"):
        store.begin(SequenceControl(1), dict, batch=3)
    store.commit(SequenceControl(1), {"h": np.ones(4)}, 1)
    with pytest.raises(SequenceError, match="has taken 2 tokens, the model's context"):
        store.begin(SequenceControl(1), dict, batch=1)
    store.commit(SequenceControl(1, end=True), {})
    assert store.nbytes == 0 and len(store) == 0
