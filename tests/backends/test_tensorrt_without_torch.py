"""The tensorrt backend's torch-free path, checked without a GPU.

``FakeCudart`` is a model of a CUDA device behind cuda-python's runtime API: every function
returns ``(cudaError_t, *values)`` with the values None on failure (as cuda-python 12 and 13
do; older releases raise RuntimeError where libcuda cannot be loaded, ``driver_missing``);
device memory is bytes at addresses above the host's, page-locked host memory is real host
memory, streams queue their work until synchronized (copies from pinned memory read it when
they run, copies from pageable memory when queued), capture records a stream's work into a
graph instead of running it, and the last error is kept until ``cudaGetLastError``.
A fake ``tensorrt`` runs the step graph on ONNX Runtime over that device memory, so the
session's buffers, ping-pong state and CUDA graphs are checked against the onnxruntime backend.
Subprocesses whose ``import torch`` fails show that loading and calibrating need no torch.
The device model is ``cuda_device_model.py`` (no torch: a subprocess loads it by path).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.backends import cuda_buffers
from ganglion.runtime.backends.cuda_buffers import (
    CudaGraph,
    CudaRuntime,
    CudaStream,
    DeviceMemory,
    pinned_array,
)
from ganglion.runtime.backends.tensorrt_calibration import CalibrationBatches

if TYPE_CHECKING:
    from ganglion.models.deployable import Deployable

ENGINE_MODULE = "ganglion.runtime.backends.tensorrt_engine"
MODEL_PATH = Path(__file__).with_name("cuda_device_model.py")


def _device_model() -> types.ModuleType:
    """``cuda_device_model.py``, loaded by path as the subprocesses load it."""
    spec = importlib.util.spec_from_file_location("cuda_device_model", MODEL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_model = _device_model()
FakeCudart, MESSAGES, OK, cudaError_t = (
    _model.FakeCudart,
    _model.MESSAGES,
    _model.OK,
    _model.cudaError_t,
)


@pytest.fixture
def device() -> FakeCudart:
    """A fresh one-GPU device model."""
    return FakeCudart()


@pytest.fixture
def cuda(device: FakeCudart) -> CudaRuntime:
    """cuda_buffers' checked runtime over the device model."""
    return CudaRuntime(device)  # type: ignore[arg-type]


# ---- cuda_buffers: errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "function,error",
    [
        ("cudaMalloc", cudaError_t.cudaErrorMemoryAllocation),
        ("cudaMallocHost", cudaError_t.cudaErrorMemoryAllocation),
        ("cudaStreamCreateWithFlags", cudaError_t.cudaErrorInvalidValue),
        ("cudaMemcpyAsync", cudaError_t.cudaErrorInvalidValue),
        ("cudaStreamSynchronize", cudaError_t.cudaErrorInvalidResourceHandle),
    ],
)
def test_a_failing_cuda_call_is_one_line_naming_call_and_error(
    function: str, error: cudaError_t
) -> None:
    device = FakeCudart(fail={function: error})
    cuda = CudaRuntime(device)  # type: ignore[arg-type]
    memory = DeviceMemory(cuda)
    with pytest.raises(BackendUnavailable) as err:
        host = pinned_array(cuda, (2, 3), "float32")
        tensor = memory.alloc((2, 3), "float32")
        stream = CudaStream(cuda)
        stream.upload(tensor, host)
        stream.synchronize()
    expected = f"CUDA {function} failed: {error.name} ({MESSAGES[int(error)]})"
    assert str(err.value) == expected
    assert device.calls[-1] == function  # nothing ran after the failing call


def test_old_cuda_python_without_a_driver_is_one_line() -> None:
    """cuda-python < 12.6 raises RuntimeError where libcuda.so.1 cannot be loaded."""
    cuda = CudaRuntime(FakeCudart(driver_missing=True))  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable, match="^CUDA cudaGetDeviceCount failed: Failed to"):
        cuda.device_count()


def test_missing_cuda_python_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in cuda_buffers.RUNTIME_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    with pytest.raises(BackendUnavailable, match="'cuda-python' package is not installed"):
        cuda_buffers.import_runtime()


@pytest.mark.parametrize("present", ["cuda.bindings.runtime", "cuda.cudart", "both"])
def test_runtime_is_found_under_either_import_path(
    present: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = {name: types.ModuleType(name) for name in cuda_buffers.RUNTIME_MODULES}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module if present in (name, "both") else None)
    expected = "cuda.cudart" if present == "cuda.cudart" else "cuda.bindings.runtime"
    assert cuda_buffers.import_runtime() is modules[expected]  # cuda-python >= 12.6 first


# ---- cuda_buffers: memory, copies, graphs ----------------------------------------------------


def test_copies_round_trip_through_device_memory(cuda: CudaRuntime, device: FakeCudart) -> None:
    memory, stream = DeviceMemory(cuda), CudaStream(cuda)
    tensor = memory.alloc((3, 4), "int64")
    source = np.arange(12, dtype=np.int64).reshape(3, 4) * 7  # pageable host memory
    back = pinned_array(cuda, (3, 4), "int64")
    stream.upload(tensor, source)
    stream.download(back, tensor)
    stream.synchronize()
    np.testing.assert_array_equal(back, source)
    assert device.read(tensor.pointer, tensor.nbytes) == source.tobytes()


def test_copy_of_the_wrong_size_is_refused_before_cuda(
    cuda: CudaRuntime, device: FakeCudart
) -> None:
    memory = DeviceMemory(cuda)
    tensor = memory.alloc((4,), "float32")
    stream = CudaStream(cuda)
    with pytest.raises(BackendUnavailable, match="8 bytes .* device tensor of 16 bytes"):
        stream.upload(tensor, np.zeros(2, np.float32))
    with pytest.raises(BackendUnavailable, match="contiguous: False"):
        stream.download(np.zeros(8, np.float32)[::2], tensor)
    assert "cudaMemcpyAsync" not in device.calls


def test_device_memory_is_freed_once(cuda: CudaRuntime, device: FakeCudart) -> None:
    memory = DeviceMemory(cuda)
    for shape in [(2,), (3, 3), (0, 5)]:
        memory.alloc(shape, "float16")
    assert len(device.device) == 3
    memory.release()
    memory.release()
    assert device.device == {} and device.calls.count("cudaFree") == 3


def test_collected_pool_and_stream_are_released(cuda: CudaRuntime, device: FakeCudart) -> None:
    memory, stream = DeviceMemory(cuda), CudaStream(cuda)
    memory.alloc((4,), "float32")
    del memory, stream
    gc.collect()
    assert device.device == {} and device.streams == {}


def test_pinned_memory_lives_as_long_as_its_arrays(cuda: CudaRuntime, device: FakeCudart) -> None:
    array = pinned_array(cuda, (2, 5), "float32")
    assert not array.any()  # zeroed, though cudaMallocHost's memory is not
    view = array[1]
    del array
    gc.collect()
    assert len(device.pinned) == 1
    view[...] = 3.0  # still valid memory
    del view
    gc.collect()
    assert device.pinned == {} and device.calls.count("cudaFreeHost") == 1


def test_captured_graph_replays_its_copies(cuda: CudaRuntime, device: FakeCudart) -> None:
    """Capturing queues nothing; each launch reruns the copies, reading the pinned source
    as it is at launch time."""
    memory = DeviceMemory(cuda)
    tensor = memory.alloc((3,), "float32")
    stream = CudaStream(cuda)
    source, back = pinned_array(cuda, (3,), "float32"), pinned_array(cuda, (3,), "float32")

    def enqueue() -> bool:
        stream.upload(tensor, source)
        return True

    graph = CudaGraph.capture(cuda, stream, enqueue)
    assert graph is not None and device.graphs == {}  # only the executable graph is kept
    for value in (1.5, -2.0):
        source[...] = value
        graph.launch(stream)
        stream.download(back, tensor)
        stream.synchronize()
        np.testing.assert_array_equal(back, np.full(3, value, np.float32))
    graph.close()
    graph.close()
    assert device.executables == {}


@pytest.mark.parametrize("how", ["enqueue refused", "capture invalidated"])
def test_failed_capture_leaves_the_stream_usable(
    how: str, cuda: CudaRuntime, device: FakeCudart
) -> None:
    memory = DeviceMemory(cuda)
    tensor = memory.alloc((2,), "float32")
    stream = CudaStream(cuda)

    def enqueue() -> bool:
        if how == "capture invalidated":  # synchronizing a capturing stream is illegal
            device.cudaStreamSynchronize(stream.handle)
        return how != "enqueue refused"

    assert CudaGraph.capture(cuda, stream, enqueue) is None
    assert device.graphs == {} and device.executables == {} and device.captures == {}
    assert device.last_error == OK  # cleared for whoever checks cudaGetLastError next
    back = np.zeros(2, np.float32)
    stream.upload(tensor, np.array([4.0, 5.0], np.float32))
    stream.download(back, tensor)
    stream.synchronize()
    np.testing.assert_array_equal(back, [4.0, 5.0])


# ---- calibration batches ---------------------------------------------------------------------


def _feeds(count: int, batch: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(count)
    return [
        {
            "input": rng.random((batch, 12), dtype=np.float32),
            "state_in.t": np.array([i], np.int64),
        }
        for i in range(count)
    ]


def test_calibration_batches_arrive_in_order_then_end(
    cuda: CudaRuntime, device: FakeCudart
) -> None:
    feeds = _feeds(3)
    batches = CalibrationBatches(feeds, cuda)
    names = ["state_in.t", "input"]  # TensorRT's order, not the feed's
    for feed in feeds:
        pointers = batches.next_pointers(names)
        assert pointers is not None and len(pointers) == 2
        for name, pointer in zip(names, pointers, strict=True):
            assert device.read(pointer, feed[name].nbytes) == feed[name].tobytes()
    assert batches.next_pointers(names) is None
    assert batches.next_pointers(names) is None


def test_calibration_buffers_are_allocated_once_and_freed(
    cuda: CudaRuntime, device: FakeCudart
) -> None:
    batches = CalibrationBatches(_feeds(3), cuda)
    first = batches.next_pointers(["input", "state_in.t"])
    assert batches.next_pointers(["input", "state_in.t"]) == first
    assert device.calls.count("cudaMalloc") == 2
    batches.close()
    assert device.device == {} and device.streams == {}


def test_calibration_batch_size_is_the_feeds_batch(cuda: CudaRuntime) -> None:
    assert CalibrationBatches(_feeds(2, batch=3), cuda).batch == 3
    empty = CalibrationBatches([], cuda)  # a calibration cache alone: TensorRT reads it
    assert empty.batch == 1 and empty.next_pointers(["input"]) is None


def test_calibration_feed_lacking_an_input_or_changing_shape_is_refused(
    cuda: CudaRuntime,
) -> None:
    with pytest.raises(BackendUnavailable, match=r"lack network input\(s\) \['state_in.v'\]"):
        CalibrationBatches(_feeds(1), cuda).next_pointers(["input", "state_in.v"])
    feeds = _feeds(1) + _feeds(1, batch=2)
    batches = CalibrationBatches(feeds, cuda)
    batches.next_pointers(["input"])
    with pytest.raises(BackendUnavailable, match=r"'input' changes from \[4, 12\]"):
        batches.next_pointers(["input"])


# ---- the GPU checks and the session, through the device model --------------------------------


ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class FakeContext:
    """An execution context: enqueues the step graph (on ONNX Runtime) as one kernel that
    reads and writes the bound device addresses, with the shapes and addresses set when it
    was enqueued (what a captured graph keeps)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if name not in self.engine.inputs:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine.io_names:
            return False
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        device, engine = self.engine.device, self.engine
        if not engine.capturable and stream_handle in device.captures:
            return False
        shapes, addresses = dict(self.shapes), dict(self.addresses)

        def kernel() -> None:
            feeds = {}
            for name, dtype in engine.inputs.items():
                count = int(np.prod(shapes[name])) * np.dtype(dtype).itemsize
                data = device.read(addresses[name], count)
                feeds[name] = np.frombuffer(data, dtype).reshape(shapes[name])
            values = engine.session.run(engine.outputs, feeds)
            for name, value in zip(engine.outputs, values, strict=True):
                device.write(addresses[name], np.ascontiguousarray(value).tobytes())

        return device.launch(stream_handle, kernel)


class FakeEngine:
    """A deserialized 'engine': the step graph's ONNX bytes run by ONNX Runtime."""

    def __init__(self, onnx_bytes: bytes, device: FakeCudart, capturable: bool) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: ORT_DTYPES[i.type] for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.io_names = [*self.inputs, *self.outputs]
        self.device, self.capturable = device, capturable

    @property
    def num_io_tensors(self) -> int:
        return len(self.io_names)

    def get_tensor_name(self, index: int) -> str:
        return self.io_names[index]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


def _fake_tensorrt(device: FakeCudart | None = None, capturable: bool = True) -> types.ModuleType:
    """A ``tensorrt`` module with the names the backend uses at import and to run engines."""
    trt = types.ModuleType("tensorrt")
    exec(FAKE_TENSORRT_SOURCE, trt.__dict__)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.DLA_core = -1

        def deserialize_cuda_engine(self, engine: bytes) -> FakeEngine:
            assert device is not None
            return FakeEngine(engine, device, capturable)

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


FAKE_TENSORRT_SOURCE = textwrap.dedent("""
    __version__ = "10.13.0"

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity

    class Builder:
        def __init__(self, logger):
            raise RuntimeError("no engines are built in this test")

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass
""")


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Callable[..., types.ModuleType]:
    """``engines(device, capturable)``: tensorrt_engine imported afresh against a fake
    ``tensorrt`` (both restored after the test)."""

    def install(device: FakeCudart, capturable: bool = True) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(device, capturable))
        spec = importlib.util.find_spec(ENGINE_MODULE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, ENGINE_MODULE, module)
        spec.loader.exec_module(module)
        return module

    return install


@pytest.fixture
def use_device(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeCudart], None]:
    """Install a device model as cuda-python's runtime module."""

    def install(device: FakeCudart) -> None:
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", device)

    return install


@pytest.mark.parametrize(
    "device,asked,reason",
    [
        (FakeCudart(gpus=0), "cuda", "no CUDA GPU is visible (CUDA cudaGetDeviceCount failed: "
         "cudaErrorNoDevice (no CUDA-capable device is detected))"),
        (FakeCudart(driver_missing=True), "cuda", "no CUDA GPU is visible (CUDA "
         "cudaGetDeviceCount failed: Failed to dlopen libcuda.so.1)"),
        (FakeCudart(gpus=1), "cuda:1", "cuda:1 asked for, 1 CUDA GPU(s) visible"),
    ],
)  # fmt: skip
def test_missing_gpu_is_refused_through_cuda_python(
    device: FakeCudart,
    asked: str,
    reason: str,
    program: Deployable,
    use_device: Callable[[FakeCudart], None],
    engines: Callable[..., types.ModuleType],
) -> None:
    from ganglion.runtime.session import load

    engines(device)  # TensorRT is there; the GPU is not
    use_device(device)
    with pytest.raises(BackendUnavailable) as err:
        load(program, backend="tensorrt", device=asked)
    assert str(err.value) == f"tensorrt backend: {reason}"


def test_gpu_name_for_the_engine_key_comes_from_cuda(
    use_device: Callable[[FakeCudart], None],
) -> None:
    from ganglion.runtime.backends.tensorrt_backend import _require_gpu

    device = FakeCudart(gpus=2, name=b"NVIDIA Jetson AGX Orin")
    use_device(device)
    _, name = _require_gpu("cuda:1")
    assert name == "NVIDIA Jetson AGX Orin" and device.current == 1


def test_entropy_calibrator_hands_tensorrt_the_batches(
    engines: Callable[..., types.ModuleType], cuda: CudaRuntime, tmp_path: Path
) -> None:
    feeds = _feeds(2)
    calibrator = engines(None).EntropyCalibrator(
        CalibrationBatches(feeds, cuda), tmp_path / "c" / "x.calib"
    )
    assert calibrator.get_batch_size() == 4
    assert len(calibrator.get_batch(["input"])) == 1
    assert len(calibrator.get_batch(["input"])) == 1
    assert calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2"))
    assert calibrator.read_calibration_cache() == b"TRT-8601-EntropyCalibration2"


def _session(program: Deployable, device: FakeCudart) -> Any:
    from ganglion.runtime.backends.tensorrt_backend import TensorRTSession
    from ganglion.runtime.backends.tensorrt_plan import build_plan
    from ganglion.runtime.onnx_export.export import bundle_graph
    from ganglion.runtime.program import Program

    in_memory = Program.in_memory(program)
    plan = build_plan(program.manifest, "fp32", 4, None, 64, None)
    step_graph = bundle_graph(in_memory, "step")
    cuda = CudaRuntime(device)  # type: ignore[arg-type]
    return TensorRTSession(in_memory, step_graph, plan, "cuda", True, cuda)


@pytest.mark.parametrize("capturable", [True, False])
def test_session_steps_through_cuda_python_like_onnxruntime(
    capturable: bool,
    program: Deployable,
    x: np.ndarray,
    device: FakeCudart,
    engines: Callable[..., types.ModuleType],
) -> None:
    """Device buffers, ping-pong state, CUDA graphs (or, where the engine cannot be captured,
    direct enqueues) give the onnxruntime backend's answers on the same step graph."""
    from ganglion.runtime.session import load

    engines(device, capturable)
    session = _session(program, device)
    with load(program, backend="onnxruntime") as reference:
        np.testing.assert_array_equal(session.run(x), reference.run(x))
        state, expected = session.init_state(3), reference.init_state(3)
        for _ in range(3):  # returned state passed back: it stays on the device
            out, state = session.step(x, state)
            want, expected = reference.step(x, expected)
            np.testing.assert_array_equal(out, want)
        fresh = {k: np.array(v) for k, v in expected.items()}  # the caller's own arrays
        out, _ = session.step(x, fresh)
        np.testing.assert_array_equal(out, reference.step(x, expected)[0])
    assert len(device.executables) == (2 if capturable else 0)  # one graph per state set
    assert ("cudaGraphLaunch" in device.calls) == capturable


def test_closed_session_frees_the_device_and_keeps_returned_arrays(
    program: Deployable, x: np.ndarray, device: FakeCudart, engines: Callable[..., types.ModuleType]
) -> None:
    engines(device)
    session = _session(program, device)
    out, state = session.step(x, session.init_state(3))
    kept = {k: v.copy() for k, v in state.items()}
    session.close()
    session.close()
    assert device.device == {} and device.streams == {} and device.executables == {}
    assert device.pinned  # what the returned arrays view is not freed under them
    for name, value in kept.items():
        np.testing.assert_array_equal(state[name], value)
    assert np.isfinite(out).all()
    with pytest.raises(BackendUnavailable, match="session is closed"):
        session.step(x, state)
    del session, out, state
    gc.collect()
    assert device.pinned == {}


# ---- where torch cannot be imported --------------------------------------------------------

BLOCK_TORCH = textwrap.dedent("""
    import os
    with open(os.environ["TORCH_ATTEMPTS"], "a") as attempts:
        attempts.write("import torch\\n")
    raise ImportError("torch is not installed on this device")
""")

NO_GPU_RUNTIME = textwrap.dedent("""
    import importlib.util
    _spec = importlib.util.spec_from_file_location("cuda_device_model", {model!r})
    _model = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_model)
    _device = _model.FakeCudart(gpus=0)

    def __getattr__(name):
        return getattr(_device, name)
""")

SCENARIOS = {
    # what the blocker folder holds besides torch -> what the refusal says
    "tensorrt missing": ({"tensorrt/__init__.py": ""}, "'tensorrt' package is not installed"),
    "cuda-python missing": (
        {"tensorrt/__init__.py": FAKE_TENSORRT_SOURCE, "cuda/__init__.py": ""},
        "'cuda-python' package is not installed",
    ),
    "no GPU": (
        {
            "tensorrt/__init__.py": FAKE_TENSORRT_SOURCE,
            "cuda/__init__.py": "",
            "cuda/bindings/__init__.py": "",
            "cuda/bindings/runtime.py": NO_GPU_RUNTIME.format(model=str(MODEL_PATH)),
        },
        "no CUDA GPU is visible (CUDA cudaGetDeviceCount failed: cudaErrorNoDevice",
    ),
}


def _without_torch(tmp_path: Path, files: dict[str, str], script: str) -> str:
    """Run ``script`` where ``import torch`` fails (and is recorded); its stdout."""
    blocker = tmp_path / "blocker"
    for name, text in {"torch/__init__.py": BLOCK_TORCH, **files}.items():
        (blocker / name).parent.mkdir(parents=True, exist_ok=True)
        (blocker / name).write_text(text)
    attempts = tmp_path / "torch-attempts.txt"
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin", "TORCH_ATTEMPTS": str(attempts)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not attempts.exists(), "something tried to import torch"
    return done.stdout


@pytest.fixture
def bundle(program: Deployable, tmp_path: Path) -> Path:
    """The spiking program saved as a bundle folder."""
    from ganglion.runtime.bundle import save_bundle

    return save_bundle(program, tmp_path / "bundle")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_tensorrt_refuses_in_one_line_where_torch_cannot_be_imported(
    scenario: str, bundle: Path, tmp_path: Path
) -> None:
    """Loading on tensorrt gets the backend's one-line reason, not torch's ImportError, and
    the tensorrt backend's modules import without torch."""
    files, reason = SCENARIOS[scenario]
    engine_module = "" if scenario == "tensorrt missing" else "tensorrt_engine,"
    out = _without_torch(
        tmp_path,
        files,
        f"""
        import json, sys
        from ganglion.models.errors import BackendUnavailable
        from ganglion.runtime import load
        try:
            load({str(bundle)!r}, backend="tensorrt", device="cuda")
            message = "loaded"
        except BackendUnavailable as exc:
            message = str(exc)
        from ganglion.runtime.backends import (
            {engine_module} cuda_buffers, tensorrt_backend, tensorrt_calibration
        )
        assert "torch" not in sys.modules
        print(json.dumps(message))
        """,
    )
    message = json.loads(out.strip().splitlines()[-1])
    assert message.startswith("tensorrt backend: ") and "\n" not in message
    assert reason in message


def test_int8_calibration_feeds_come_from_the_bundle_without_torch(
    bundle: Path, program: Deployable, tmp_path: Path
) -> None:
    """The calibration trajectories run on the bundle's step graph with torch absent and
    follow the torch reference's states."""
    from ganglion.runtime.session import load

    x = np.random.default_rng(4).uniform(0, 1, (8, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _without_torch(
        tmp_path,
        {},
        f"""
        import numpy as np
        from ganglion.runtime.backends.tensorrt_calibration import calibration_feeds
        from ganglion.runtime.bundle import open_bundle
        x = np.load({str(tmp_path / "x.npy")!r})
        with open_bundle({str(bundle)!r}) as program:
            feeds = calibration_feeds(program, x, batch=4, max_feeds=10)
        np.savez({str(tmp_path / "feeds.npz")!r}, **{{
            f"{{i}}/{{name}}": a for i, feed in enumerate(feeds) for name, a in feed.items()
        }})
        """,
    )
    saved = np.load(tmp_path / "feeds.npz")
    feeds = [
        {k.split("/", 1)[1]: saved[k] for k in saved if k.startswith(f"{i}/")} for i in range(10)
    ]
    assert len(saved.files) == 10 * len(feeds[0])  # 10 feeds: the cut at max_feeds
    assert [int(f["state_in.t"][0]) for f in feeds] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    with load(program) as reference:
        for start, first in ((0, 0), (4, 8)):  # each batch of 4 samples starts afresh
            state = reference.init_state(4)
            for i in range(first, first + 2):
                np.testing.assert_array_equal(feeds[i]["input"], x[start : start + 4])
                for name, value in state.items():
                    np.testing.assert_allclose(feeds[i][f"state_in.{name}"], value, atol=1e-6)
                _, state = reference.step(x[start : start + 4], state)
