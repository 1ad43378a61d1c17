"""The ``tensorrt`` backend: an engine built from the step graph, run in a step loop on a GPU.

Load: check that ``tensorrt`` and a CUDA GPU are present (else BackendUnavailable with the
reason), plan the build (``tensorrt_plan``), take the engine from the cache or build it
(``tensorrt_cache``: keyed by ONNX SHA-256, TensorRT version, GPU name, precision, batch
profile and DLA core), deserialize it.

Step: device buffers (torch CUDA tensors) for input, output and state are allocated once per
batch size, twice; steps alternate between the two sets, so state stays on the device: when
the caller passes back the state ``step`` returned, nothing is copied to the GPU (so
in-place edits to those returned arrays are not seen; pass fresh arrays to change state). Outputs
and state come back through pinned host buffers owned by the session (overwritten two
steps later; copy to keep). Each direction's enqueue is captured once as a CUDA graph and
replayed; where capture fails the session enqueues directly. ``run`` is repeated ``step``.

Options: precision (fp32|fp16|int8|auto, default fp32: the reference's numerics),
workspace_mb, max_batch, opt_batch, dla_core, engine_cache (folder), calibration (array
shaped like ``run``'s input, for int8), cuda_graphs (default True).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, BundleError, ShapeError
from ganglion.models.manifest import Manifest, TensorSpec
from ganglion.runtime.backends.tensorrt_cache import EngineCache, EngineKey, default_cache_dir
from ganglion.runtime.backends.tensorrt_plan import (
    DEFAULT_WORKSPACE_MB,
    BuildPlan,
    build_plan,
    select_precision,
)
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import OnnxProgram, onnx_program, read_bundle_graph
from ganglion.runtime.session import Backend, Session, State, check_float_input

if TYPE_CHECKING:
    import tensorrt as trt

OPTIONS = (
    "precision",
    "workspace_mb",
    "max_batch",
    "opt_batch",
    "dla_core",
    "engine_cache",
    "calibration",
    "cuda_graphs",
)


def _shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == -1 else d for d in spec.shape)


class DeviceBuffers:
    """One batch size's device and pinned host buffers, two sets, with CUDA graphs."""

    def __init__(self, manifest: Manifest, batch: int, device: torch.device) -> None:
        def pair(spec: TensorSpec) -> list[torch.Tensor]:
            dtype = getattr(torch, spec.dtype)
            return [torch.zeros(_shape(spec, batch), dtype=dtype, device=device) for _ in range(2)]

        def pinned(spec: TensorSpec) -> list[torch.Tensor]:
            dtype = getattr(torch, spec.dtype)
            return [torch.zeros(_shape(spec, batch), dtype=dtype).pin_memory() for _ in range(2)]

        self.batch = batch
        self.input = torch.zeros(_shape(manifest.inputs[0], batch), device=device)
        self.input_host = torch.zeros(self.input.shape).pin_memory()
        self.output, self.output_host = pair(manifest.outputs[0]), pinned(manifest.outputs[0])
        self.state = {s.name: pair(s) for s in manifest.state}
        self.state_host = {s.name: pinned(s) for s in manifest.state}
        self.host_views: list[State] = [
            {n: h[k].numpy() for n, h in self.state_host.items()} for k in range(2)
        ]
        self.graphs: list[torch.cuda.CUDAGraph | None] = [None, None]

    def addresses(self, k: int) -> dict[str, int]:
        """Tensor name -> device pointer when reading state set ``k``."""
        out = {naming.INPUT: self.input.data_ptr(), naming.OUTPUT: self.output[1 - k].data_ptr()}
        for name, pair in self.state.items():
            out[naming.state_input(name)] = pair[k].data_ptr()
            out[naming.state_output(name)] = pair[1 - k].data_ptr()
        return out

    def owner(self, state: State) -> int | None:
        """Which set's host view ``state`` is (then the device already holds it), else None."""
        for k, view in enumerate(self.host_views):
            if state.keys() == view.keys() and all(state[n] is a for n, a in view.items()):
                return k
        return None


class TensorRTSession(Session):
    """A step engine with persistent device buffers."""

    backend = "tensorrt"

    def __init__(
        self,
        deployable: Deployable,
        program: OnnxProgram,
        engine: bytes,
        plan: BuildPlan,
        device: str,
        cuda_graphs: bool,
    ) -> None:
        from ganglion.runtime.backends.tensorrt_engine import deserialize

        self.manifest = deployable.manifest
        self.device = device
        self.plan = plan
        self._module = deployable.module
        self._program = program
        self._torch_device = torch.device(device)
        self._runtime, self._engine = deserialize(engine, plan.dla_core)
        self._context: trt.IExecutionContext = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(self._torch_device)
        self._cuda_graphs = cuda_graphs
        self._buffers: dict[int, DeviceBuffers] = {}

    def _buffers_for(self, batch: int) -> DeviceBuffers:
        low, _, high = self.plan.batch_profile
        if not low <= batch <= high:
            raise ShapeError(
                f"batch {batch} is outside the engine's profile [{low}, {high}]; "
                "load with a larger max_batch"
            )
        if batch not in self._buffers:
            self._buffers[batch] = DeviceBuffers(self.manifest, batch, self._torch_device)
        return self._buffers[batch]

    def _enqueue(self, buffers: DeviceBuffers, k: int) -> None:
        for name in self.plan.profile:
            shape = _shape_of(name, buffers)
            if not self._context.set_input_shape(name, shape):
                raise ShapeError(f"tensorrt backend: input {name} rejects shape {shape}")
        for name, pointer in buffers.addresses(k).items():
            self._context.set_tensor_address(name, pointer)
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise BackendUnavailable("tensorrt backend: execute_async_v3 failed")

    def _launch(self, buffers: DeviceBuffers, k: int) -> None:
        graph = buffers.graphs[k]
        if graph is not None:
            with torch.cuda.stream(self._stream):
                graph.replay()
            return
        self._enqueue(buffers, k)
        if self._cuda_graphs:  # the first enqueue has run: capture the next one
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self._stream):
                    self._enqueue(buffers, k)
                buffers.graphs[k] = graph
            except RuntimeError:
                self._cuda_graphs = False  # this engine cannot be captured; enqueue directly

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep on the GPU (see the module docstring on buffer ownership)."""
        encoded = self._program.step_input(check_float_input(x_t), state)
        buffers = self._buffers_for(encoded.shape[0])
        k = buffers.owner(state)
        with torch.cuda.stream(self._stream):
            buffers.input_host.numpy()[...] = encoded
            buffers.input.copy_(buffers.input_host, non_blocking=True)
            if k is None:
                k = 0
                for name, pair in buffers.state.items():
                    value = torch.from_numpy(np.ascontiguousarray(state[name]))
                    if tuple(value.shape) != tuple(pair[0].shape):
                        raise ShapeError(
                            f"state {name!r} must be {list(pair[0].shape)}, got {list(value.shape)}"
                        )
                    pair[0].copy_(value)
            self._launch(buffers, k)
            buffers.output_host[1 - k].copy_(buffers.output[1 - k], non_blocking=True)
            for name, pair in buffers.state.items():
                buffers.state_host[name][1 - k].copy_(pair[1 - k], non_blocking=True)
        self._stream.synchronize()
        return buffers.output_host[1 - k].numpy(), buffers.host_views[1 - k]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Whole input as repeated steps of the step engine (CUDA-graph replays)."""
        inputs = self._program.step_inputs(check_float_input(x))
        state = self.init_state(inputs[0].shape[0])
        outputs = []
        for x_t in inputs:
            out, state = self.step(x_t, state)
            outputs.append(out.copy())
        return self._program.collect(outputs)

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        return {k: v.cpu().numpy() for k, v in self._module.init_state(batch).items()}

    def close(self) -> None:
        """Release CUDA graphs and buffers (the engine goes with the session)."""
        self._buffers.clear()


def _shape_of(name: str, buffers: DeviceBuffers) -> tuple[int, ...]:
    if name == naming.INPUT:
        return tuple(buffers.input.shape)
    return tuple(buffers.state[name[len(naming.STATE_IN_PREFIX) :]][0].shape)


def _calibration_digest(calibration: Any, cache_file: Path) -> str | None:
    """SHA-256 of the int8 calibration data, else of the calibration cache it will read."""
    if calibration is not None:
        data = np.ascontiguousarray(calibration, dtype=np.float32)
        return hashlib.sha256(data.tobytes()).hexdigest()
    return hashlib.sha256(cache_file.read_bytes()).hexdigest() if cache_file.is_file() else None


def _require_tensorrt(device: str) -> str:
    """TensorRT's version, or BackendUnavailable naming what is missing."""
    missing = BackendUnavailable(
        "tensorrt backend: the 'tensorrt' package is not installed "
        "(pip install 'ganglion[tensorrt]' on a CUDA machine)"
    )
    try:
        import tensorrt
    except ImportError as exc:
        raise missing from exc
    if not hasattr(tensorrt, "Builder"):  # type stubs alone make an empty namespace package
        raise missing
    if not device.startswith("cuda"):
        raise BackendUnavailable(
            f"tensorrt backend runs on a CUDA GPU; use --device cuda, not {device!r}"
        )
    if not torch.cuda.is_available():
        raise BackendUnavailable("tensorrt backend: no CUDA GPU is visible")
    return str(tensorrt.__version__)


class TensorRTBackend(Backend):
    """TensorRT engines on NVIDIA GPUs and Jetson DLA cores."""

    name = "tensorrt"

    def load(
        self, deployable: Deployable, bundle_dir: Path | None, device: str, **options: Any
    ) -> Session:
        """Build or fetch the engine for this GPU and open a session (options: see module)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise BackendUnavailable(
                f"tensorrt backend: unknown options {unknown} (known: {', '.join(OPTIONS)})"
            )
        version = _require_tensorrt(device)
        from ganglion.runtime.backends import tensorrt_engine as engines
        from ganglion.runtime.backends.tensorrt_calibration import calibration_feeds

        try:
            program = onnx_program(deployable)
        except BundleError as exc:
            raise BackendUnavailable(f"tensorrt backend: {exc}") from exc
        onnx_bytes = read_bundle_graph(deployable, bundle_dir, "step")
        cache = EngineCache(Path(options.get("engine_cache") or default_cache_dir()))
        calibration = options.get("calibration")
        dla_core = options.get("dla_core")
        fast_fp16, fast_int8, dla_cores = engines.device_capabilities()
        if dla_core is not None and not 0 <= int(dla_core) < dla_cores:
            raise BackendUnavailable(
                f"tensorrt backend: DLA core {dla_core} asked for, this device has {dla_cores}"
            )
        onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
        calib_cache = cache.folder / f"{onnx_sha}.calib"
        precision = select_precision(
            str(options.get("precision", "fp32")),
            fast_fp16,
            fast_int8,
            dla_core is not None,
            calibration is not None or calib_cache.is_file(),
        )
        plan = build_plan(
            deployable.manifest,
            precision,
            int(options.get("max_batch", 1)),
            options.get("opt_batch"),
            int(options.get("workspace_mb", DEFAULT_WORKSPACE_MB)),
            None if dla_core is None else int(dla_core),
        )
        key = EngineKey(
            onnx_sha,
            version,
            torch.cuda.get_device_name(torch.device(device)),
            precision,
            plan.batch_profile,
            plan.dla_core,
            _calibration_digest(calibration, calib_cache) if precision == "int8" else None,
        )

        def build() -> bytes:
            calibrator = None
            if precision == "int8":
                feeds = (
                    []
                    if calibration is None
                    else calibration_feeds(
                        deployable,
                        program,
                        np.asarray(calibration, dtype=np.float32),
                        plan.batch_profile[1],
                    )
                )
                calibrator = engines.EntropyCalibrator(feeds, calib_cache)
            return engines.build_engine(onnx_bytes, plan, calibrator)

        engine, _ = cache.get_or_build(key, build)
        return TensorRTSession(
            deployable, program, engine, plan, device, bool(options.get("cuda_graphs", True))
        )
