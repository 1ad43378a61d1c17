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
Programs whose state grows between steps (a KV cache) are refused: engines need fixed shapes.

Options: precision (fp32|fp16|int8|auto, default fp32: the reference's numerics),
workspace_mb, max_batch, opt_batch, dla_core, engine_cache (folder), calibration (``run``'s
inputs by name, or one array for a single-input program, for int8), cuda_graphs (default True).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.manifest import Manifest, TensorSpec
from ganglion.runtime.backends.tensorrt_cache import EngineCache, EngineKey, default_cache_dir
from ganglion.runtime.backends.tensorrt_plan import (
    DEFAULT_WORKSPACE_MB,
    BuildPlan,
    build_plan,
    select_precision,
)
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import bundle_graph
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

Arrays = dict[str, np.ndarray]

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
    """One batch size's device and pinned host buffers (two sets of outputs and state, so
    steps alternate without copies), and a CUDA graph per direction."""

    def __init__(self, manifest: Manifest, feeds: Arrays, device: torch.device) -> None:
        batch = next(iter(feeds.values())).shape[0]

        def pair(spec: TensorSpec) -> list[torch.Tensor]:
            dtype = getattr(torch, spec.dtype)
            return [torch.zeros(_shape(spec, batch), dtype=dtype, device=device) for _ in range(2)]

        def pinned(spec: TensorSpec) -> list[torch.Tensor]:
            dtype = getattr(torch, spec.dtype)
            return [torch.zeros(_shape(spec, batch), dtype=dtype).pin_memory() for _ in range(2)]

        self.batch = batch
        self.inputs = {n: torch.from_numpy(np.zeros_like(a)).to(device) for n, a in feeds.items()}
        self.inputs_host = {
            n: torch.from_numpy(np.zeros_like(a)).pin_memory() for n, a in feeds.items()
        }
        self.outputs = {s.name: pair(s) for s in manifest.outputs}
        self.outputs_host = {s.name: pinned(s) for s in manifest.outputs}
        self.state = {s.name: pair(s) for s in manifest.state}
        self.state_host = {s.name: pinned(s) for s in manifest.state}
        self.host_views: list[State] = [
            {n: h[k].numpy() for n, h in self.state_host.items()} for k in range(2)
        ]
        self.graphs: list[torch.cuda.CUDAGraph | None] = [None, None]

    def addresses(self, k: int) -> dict[str, int]:
        """Tensor name -> device pointer when reading state set ``k``."""
        out = {name: t.data_ptr() for name, t in self.inputs.items()}
        out.update({name: pair[1 - k].data_ptr() for name, pair in self.outputs.items()})
        for name, pair in self.state.items():
            out[naming.state_input(name)] = pair[k].data_ptr()
            out[naming.state_output(name)] = pair[1 - k].data_ptr()
        return out

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Step-graph input name -> shape."""
        shapes = {name: tuple(t.shape) for name, t in self.inputs.items()}
        shapes.update({naming.state_input(n): tuple(p[0].shape) for n, p in self.state.items()})
        return shapes

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
        self, program: Program, engine: bytes, plan: BuildPlan, device: str, cuda_graphs: bool
    ) -> None:
        from ganglion.runtime.backends.tensorrt_engine import deserialize

        super().__init__(program, device)
        self.plan = plan
        self._torch_device = torch.device(device)
        self._runtime, self._engine = deserialize(engine, plan.dla_core)
        self._context: trt.IExecutionContext = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(self._torch_device)
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
        if batch not in self._buffers:
            self._buffers[batch] = DeviceBuffers(self.manifest, feeds, self._torch_device)
        return self._buffers[batch]

    def _enqueue(self, buffers: DeviceBuffers, k: int) -> None:
        for name, shape in buffers.input_shapes().items():
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

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        """One step on the GPU (see the module docstring on buffer ownership)."""
        feeds = self.kind.onnx_feeds(self.manifest, inputs, state)
        buffers = self._buffers_for(feeds)
        k = buffers.owner(state)
        with torch.cuda.stream(self._stream):
            for name, array in feeds.items():
                buffers.inputs_host[name].numpy()[...] = array
                buffers.inputs[name].copy_(buffers.inputs_host[name], non_blocking=True)
            if k is None:
                k = 0
                for name, pair in buffers.state.items():
                    pair[0].copy_(torch.from_numpy(np.ascontiguousarray(state[name])))
            self._launch(buffers, k)
            for name, pair in buffers.outputs.items():
                buffers.outputs_host[name][1 - k].copy_(pair[1 - k], non_blocking=True)
            for name, pair in buffers.state.items():
                buffers.state_host[name][1 - k].copy_(pair[1 - k], non_blocking=True)
        self._stream.synchronize()
        outputs = {name: host[1 - k].numpy() for name, host in buffers.outputs_host.items()}
        return outputs, buffers.host_views[1 - k]

    def _run(self, inputs: Arrays) -> Arrays:
        """Whole input as repeated steps of the step engine (CUDA-graph replays)."""
        batch = next(iter(inputs.values())).shape[self.kind.batch_axis(self.manifest)]
        return self._prefill(inputs, self.init_state(batch))[0]

    def close(self) -> None:
        """Release CUDA graphs and buffers (the engine goes with the session)."""
        self._buffers.clear()


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

    def load(self, program: Program, device: str, **options: Any) -> Session:
        """Build or fetch the engine for this GPU and open a session (options: see module)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise BackendUnavailable(
                f"tensorrt backend: unknown options {unknown} (known: {', '.join(OPTIONS)})"
            )
        version = _require_tensorrt(device)
        from ganglion.runtime.backends import tensorrt_engine as engines
        from ganglion.runtime.backends.tensorrt_calibration import calibration_feeds

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
            program.manifest,
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
                    else calibration_feeds(program, calibration, plan.batch_profile[1])
                )
                calibrator = engines.EntropyCalibrator(feeds, calib_cache)
            return engines.build_engine(onnx_bytes, plan, calibrator)

        engine, _ = cache.get_or_build(key, build)
        return TensorRTSession(
            program, engine, plan, device, bool(options.get("cuda_graphs", True))
        )
