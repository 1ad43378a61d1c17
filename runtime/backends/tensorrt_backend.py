"""The ``tensorrt`` backend: an engine built from the step graph, run in a step loop on a GPU.

No torch anywhere on this path: CUDA memory, streams and graphs come from NVIDIA's
cuda-python (``cuda_buffers``), calibration batches from the step graph on ONNX Runtime.

Load: check that ``tensorrt``, ``cuda-python`` and a CUDA GPU are present (else
BackendUnavailable with the reason), plan the build (``tensorrt_plan``), take the engine from
the cache or build it (``tensorrt_cache``: keyed by ONNX SHA-256, TensorRT version, GPU name,
precision, batch profile and DLA core), deserialize it.

Step: device buffers for input, output and state are allocated once per batch size, twice;
steps alternate between the two sets, so state stays on the device: when the caller passes back
the state ``step`` returned, nothing is copied to the GPU (so in-place edits to those returned
arrays are not seen; pass fresh arrays to change state). Outputs and state come back through
pinned host buffers owned by the session (overwritten two steps later, whichever thread takes
them: threads that share one session copy what they keep; they stay valid after ``close``).
Each direction's enqueue is captured once as a CUDA graph and replayed; where capture fails
the session enqueues directly. ``run`` is repeated ``step``. Programs whose
state grows between steps (a KV cache) are refused: engines need fixed shapes.

Options: precision (fp32|fp16|int8|auto, default fp32: the reference's numerics),
workspace_mb, max_batch, opt_batch, dla_core, engine_cache (folder), calibration (``run``'s
inputs by name, or one array for a single-input program, for int8), cuda_graphs (default True).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.manifest import Manifest, TensorSpec
from ganglion.runtime.backends.cuda_buffers import (
    CudaGraph,
    CudaRuntime,
    CudaStream,
    DeviceMemory,
    DeviceTensor,
    pinned_array,
)
from ganglion.runtime.backends.tensorrt_cache import EngineCache, EngineKey, default_cache_dir
from ganglion.runtime.backends.tensorrt_plan import (
    BuildPlan,
    build_plan,
    engine_options,
    select_precision,
)
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import bundle_graph
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

Arrays = dict[str, np.ndarray]

if TYPE_CHECKING:
    import tensorrt as trt


def _shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == -1 else d for d in spec.shape)


class DeviceBuffers:
    """One batch size's device and pinned host buffers (two sets of outputs and state, so
    steps alternate without copies), and a CUDA graph per direction."""

    def __init__(
        self, cuda: CudaRuntime, memory: DeviceMemory, manifest: Manifest, feeds: Arrays
    ) -> None:
        batch = next(iter(feeds.values())).shape[0]

        def pair(spec: TensorSpec) -> list[DeviceTensor]:
            return [memory.alloc(_shape(spec, batch), spec.dtype) for _ in range(2)]

        def pinned(spec: TensorSpec, count: int) -> list[np.ndarray]:
            return [pinned_array(cuda, _shape(spec, batch), spec.dtype) for _ in range(count)]

        self.batch = batch
        self.inputs = {n: memory.alloc(a.shape, a.dtype) for n, a in feeds.items()}
        self.inputs_host = {n: pinned_array(cuda, a.shape, a.dtype) for n, a in feeds.items()}
        self.outputs = {s.name: pair(s) for s in manifest.outputs}
        self.outputs_host = {s.name: pinned(s, 2) for s in manifest.outputs}
        self.state = {s.name: pair(s) for s in manifest.state}
        self.state_host = {s.name: pinned(s, 2) for s in manifest.state}
        self.state_staging = {s.name: pinned(s, 1)[0] for s in manifest.state}  # caller's state
        self.host_views: list[State] = [
            {n: h[k] for n, h in self.state_host.items()} for k in range(2)
        ]
        self.graphs: list[CudaGraph | None] = [None, None]

    def addresses(self, k: int) -> dict[str, int]:
        """Tensor name -> device pointer when reading state set ``k``."""
        out = {name: t.pointer for name, t in self.inputs.items()}
        out.update({name: pair[1 - k].pointer for name, pair in self.outputs.items()})
        for name, pair in self.state.items():
            out[naming.state_input(name)] = pair[k].pointer
            out[naming.state_output(name)] = pair[1 - k].pointer
        return out

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Step-graph input name -> shape."""
        shapes = {name: t.shape for name, t in self.inputs.items()}
        shapes.update({naming.state_input(n): p[0].shape for n, p in self.state.items()})
        return shapes

    def owner(self, state: State) -> int | None:
        """Which set's host view ``state`` is (then the device already holds it), else None."""
        for k, view in enumerate(self.host_views):
            if state.keys() == view.keys() and all(state[n] is a for n, a in view.items()):
                return k
        return None

    def close(self) -> None:
        """Destroy the CUDA graphs (the memory belongs to the session's pool)."""
        for graph in self.graphs:
            if graph is not None:
                graph.close()
        self.graphs = [None, None]


class TensorRTSession(Session):
    """A step engine with persistent device buffers."""

    backend = "tensorrt"

    def __init__(
        self,
        program: Program,
        engine: bytes,
        plan: BuildPlan,
        device: str,
        cuda_graphs: bool,
        cuda: CudaRuntime,
    ) -> None:
        from ganglion.runtime.backends.tensorrt_engine import deserialize, io_tensor_names

        super().__init__(program, device)
        self.plan = plan
        self._cuda = cuda
        self._gpu = gpu_index(device)
        cuda.use_device(self._gpu)
        self._runtime, self._engine = deserialize(engine, plan.dla_core)
        self._engine_tensors = io_tensor_names(self._engine)
        self._context: trt.IExecutionContext = self._engine.create_execution_context()
        self._memory: DeviceMemory | None = DeviceMemory(cuda)
        self._stream = CudaStream(cuda)
        self._cuda_graphs = cuda_graphs
        self._buffers: dict[int, DeviceBuffers] = {}

    def _buffers_for(self, feeds: Arrays) -> DeviceBuffers:
        batch = next(iter(feeds.values())).shape[0]
        low, _, high = self.plan.batch_profile
        if not low <= batch <= high:
            raise ShapeError(
                f"batch {batch} is outside the engine's profile [{low}, {high}]; "
                "load with a larger max_batch"
            )
        if self._memory is None:
            raise BackendUnavailable("tensorrt backend: this session is closed")
        if batch not in self._buffers:
            buffers = DeviceBuffers(self._cuda, self._memory, self.manifest, feeds)
            ours = set(buffers.addresses(0))
            if ours != self._engine_tensors:
                raise BackendUnavailable(
                    f"tensorrt backend: the engine's tensors {sorted(self._engine_tensors)} "
                    f"are not the step graph's {sorted(ours)}"
                )
            self._buffers[batch] = buffers
        return self._buffers[batch]

    def _enqueue(self, buffers: DeviceBuffers, k: int) -> bool:
        """Queue one engine execution reading state set ``k``; False where TensorRT refuses."""
        for name, shape in buffers.input_shapes().items():
            if not self._context.set_input_shape(name, shape):
                raise ShapeError(f"tensorrt backend: input {name} rejects shape {shape}")
        for name, pointer in buffers.addresses(k).items():
            if not self._context.set_tensor_address(name, pointer):
                raise BackendUnavailable(f"tensorrt backend: tensor {name} refuses its address")
        return bool(self._context.execute_async_v3(self._stream.pointer))

    def _launch(self, buffers: DeviceBuffers, k: int) -> None:
        graph = buffers.graphs[k]
        if graph is not None:
            graph.launch(self._stream)
            return
        if not self._enqueue(buffers, k):
            raise BackendUnavailable("tensorrt backend: execute_async_v3 failed")
        if self._cuda_graphs:  # the first enqueue has run: capture the next one
            graph = CudaGraph.capture(self._cuda, self._stream, lambda: self._enqueue(buffers, k))
            if graph is None:
                self._cuda_graphs = False  # this engine cannot be captured; enqueue directly
                return
            buffers.graphs[k] = graph  # capturing ran nothing: the direct enqueue did the step

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        """One step on the GPU (see the module docstring on buffer ownership)."""
        feeds = self.kind.onnx_feeds(self.manifest, inputs, state)
        self._cuda.use_device(self._gpu)
        buffers = self._buffers_for(feeds)
        k = buffers.owner(state)
        stream = self._stream
        for name, array in feeds.items():
            buffers.inputs_host[name][...] = array
            stream.upload(buffers.inputs[name], buffers.inputs_host[name])
        if k is None:
            k = 0
            for name, pair in buffers.state.items():
                buffers.state_staging[name][...] = state[name]
                stream.upload(pair[0], buffers.state_staging[name])
        self._launch(buffers, k)
        for name, pair in buffers.outputs.items():
            stream.download(buffers.outputs_host[name][1 - k], pair[1 - k])
        for name, pair in buffers.state.items():
            stream.download(buffers.state_host[name][1 - k], pair[1 - k])
        stream.synchronize()
        outputs = {name: host[1 - k] for name, host in buffers.outputs_host.items()}
        return outputs, dict(buffers.host_views[1 - k])  # the caller's own dict of the views

    def _run(self, inputs: Arrays) -> Arrays:
        """Whole input as repeated steps of the step engine (CUDA-graph replays)."""
        batch = next(iter(inputs.values())).shape[self.kind.batch_axis(self.manifest)]
        return self._prefill(inputs, self._fresh_state(self._checked_batch(batch)))[0]

    def _release(self) -> None:
        """Release CUDA graphs, device buffers and the stream (the engine goes with the
        session); host arrays already returned stay valid."""
        memory, self._memory = self._memory, None
        if memory is None:
            return
        try:
            self._cuda.use_device(self._gpu)
            self._stream.synchronize()
        finally:
            for buffers in self._buffers.values():
                buffers.close()
            self._buffers.clear()
            memory.release()
            self._stream.close()


def _calibration_digest(calibration: Any, cache_file: Path) -> str | None:
    """SHA-256 of the int8 calibration data, else of the calibration cache it will read."""
    if calibration is not None:
        digest = hashlib.sha256()
        named = calibration if isinstance(calibration, dict) else {"": calibration}
        for name in sorted(named):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(named[name]).tobytes())
        return digest.hexdigest()
    return hashlib.sha256(cache_file.read_bytes()).hexdigest() if cache_file.is_file() else None


def gpu_index(device: str) -> int:
    """The GPU index of ``cuda`` (0) or ``cuda:N``."""
    found = re.fullmatch(r"cuda(?::(\d+))?", device)
    if found is None:
        raise BackendUnavailable(
            f"tensorrt backend runs on a CUDA GPU; use --device cuda or cuda:N, not {device!r}"
        )
    return int(found.group(1) or 0)


def _require_tensorrt(device: str) -> str:
    """TensorRT's version, or BackendUnavailable naming what is missing."""
    missing = BackendUnavailable(
        "tensorrt backend: the 'tensorrt' package is not installed "
        "(pip install -e '.[tensorrt]' on a CUDA machine)"
    )
    try:
        import tensorrt
    except ImportError as exc:
        raise missing from exc
    if not hasattr(tensorrt, "Builder"):  # type stubs alone make an empty namespace package
        raise missing
    gpu_index(device)
    return str(tensorrt.__version__)


def _require_gpu(device: str) -> tuple[CudaRuntime, str]:
    """(cuda-python's runtime with ``device`` current, the GPU's name), or BackendUnavailable
    naming what is missing: cuda-python, a driver, a GPU."""
    index = gpu_index(device)
    try:
        cuda = CudaRuntime()
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"tensorrt backend: {exc}") from exc
    try:
        count = cuda.device_count()
    except BackendUnavailable as exc:  # no driver, or cudaErrorNoDevice
        raise BackendUnavailable(f"tensorrt backend: no CUDA GPU is visible ({exc})") from exc
    if count == 0:
        raise BackendUnavailable("tensorrt backend: no CUDA GPU is visible")
    if index >= count:
        raise BackendUnavailable(
            f"tensorrt backend: {device} asked for, {count} CUDA GPU(s) visible"
        )
    try:
        cuda.use_device(index)
        return cuda, cuda.device_name(index)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"tensorrt backend: {exc}") from exc


def unavailable_reason(device: str = "cuda") -> str | None:
    """Why this backend cannot run on ``device`` here (TensorRT, cuda-python or a GPU is
    missing), or None when it can."""
    try:
        _require_tensorrt(device)
        _require_gpu(device)
    except BackendUnavailable as exc:
        return str(exc)
    return None


class TensorRTBackend(Backend):
    """TensorRT engines on NVIDIA GPUs and Jetson DLA cores."""

    name = "tensorrt"

    def load(self, program: Program, device: str, **options: Any) -> Session:
        """Build or fetch the engine for this GPU and open a session (options: see module)."""
        opts = engine_options(options)
        version = _require_tensorrt(device)
        cuda, gpu_name = _require_gpu(device)
        from ganglion.runtime.backends import tensorrt_engine as engines
        from ganglion.runtime.backends.tensorrt_calibration import (
            CalibrationBatches,
            calibration_feeds,
        )

        growing = [s.name for s in program.manifest.state if -1 in s.shape[1:]]
        if growing:
            raise BackendUnavailable(
                f"tensorrt backend: state {growing[0]!r} grows between steps; TensorRT engines "
                "need fixed-size state (use --backend onnxruntime)"
            )
        try:
            onnx_bytes = bundle_graph(program, "step")
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"tensorrt backend: {exc}") from exc
        cache = EngineCache(Path(opts.engine_cache or default_cache_dir()))
        calibration, dla_core = opts.calibration, opts.dla_core
        fast_fp16, fast_int8, dla_cores = engines.device_capabilities()
        if dla_core is not None and dla_core >= dla_cores:
            raise BackendUnavailable(
                f"tensorrt backend: DLA core {dla_core} asked for, this device has {dla_cores}"
            )
        onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
        calib_cache = cache.folder / f"{onnx_sha}.calib"
        precision = select_precision(
            opts.precision,
            fast_fp16,
            fast_int8,
            dla_core is not None,
            calibration is not None or calib_cache.is_file(),
        )
        plan = build_plan(
            program.manifest,
            precision,
            opts.max_batch,
            opts.opt_batch,
            opts.workspace_mb,
            dla_core,
        )
        key = EngineKey(
            onnx_sha,
            version,
            gpu_name,
            precision,
            plan.batch_profile,
            plan.dla_core,
            _calibration_digest(calibration, calib_cache) if precision == "int8" else None,
        )

        def build() -> bytes:
            if precision != "int8":
                return engines.build_engine(onnx_bytes, plan, None)
            feeds = (
                []
                if calibration is None
                else calibration_feeds(program, calibration, plan.batch_profile[1])
            )
            batches = CalibrationBatches(feeds, cuda)
            try:
                return engines.build_engine(
                    onnx_bytes, plan, engines.EntropyCalibrator(batches, calib_cache)
                )
            finally:
                batches.close()

        engine, _ = cache.get_or_build(key, build)
        return TensorRTSession(program, engine, plan, device, opts.cuda_graphs, cuda)
