"""TensorRT engine building and loading (imports ``tensorrt``; import it only when present).

``build_engine`` parses the step graph with ``OnnxParser`` and builds a serialized engine
for a ``BuildPlan``: workspace limit, precision flags, one optimization profile spanning the
batch range, an INT8 entropy calibrator with a cache file, and a DLA core when asked.
Calibration batches reach TensorRT as device addresses from ``CalibrationBatches``
(cuda-python); nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

import tensorrt as trt

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.backends.tensorrt_calibration import CalibrationBatches
from ganglion.runtime.backends.tensorrt_plan import BuildPlan

LOGGER = trt.Logger(trt.Logger.WARNING)


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
    """Feeds TensorRT the calibration batches' device addresses; keeps TensorRT's cache in
    ``cache_file``."""

    def __init__(self, batches: CalibrationBatches, cache_file: Path) -> None:
        super().__init__()
        self._batches = batches
        self._cache_file = cache_file

    def get_batch_size(self) -> int:
        """Samples per calibration batch."""
        return self._batches.batch

    def get_batch(self, names: list[str]) -> list[int] | None:  # type: ignore[override]
        """Device pointers of the next batch's inputs in ``names`` order, or None when done."""
        return self._batches.next_pointers(names)

    def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]
        """The cache from an earlier calibration, if any."""
        return self._cache_file.read_bytes() if self._cache_file.is_file() else None

    def write_calibration_cache(self, cache: bytes) -> None:  # type: ignore[override]
        """Keep the calibration cache for the next build."""
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        self._cache_file.write_bytes(bytes(cache))


def device_capabilities() -> tuple[bool, bool, int]:
    """(fast fp16, fast int8, DLA cores) of this platform, as TensorRT's builder sees it."""
    builder = trt.Builder(LOGGER)
    return builder.platform_has_fast_fp16, builder.platform_has_fast_int8, builder.num_DLA_cores


def _parse(
    builder: trt.Builder, onnx_bytes: bytes
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """(network, parser): the parser owns weights the network uses, so both stay alive."""
    import onnx

    from ganglion.converters.onnx_file import check_self_contained

    check_self_contained(onnx.load_model_from_string(onnx_bytes), "the ONNX step graph")
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, LOGGER)
    if not parser.parse(onnx_bytes):
        reason = parser.get_error(0).desc() if parser.num_errors else "unknown parser error"
        raise BackendUnavailable(f"tensorrt backend: cannot parse the ONNX step graph: {reason}")
    return network, parser


def build_engine(onnx_bytes: bytes, plan: BuildPlan, calibrator: EntropyCalibrator | None) -> bytes:
    """A serialized engine of the step graph ``onnx_bytes`` built as ``plan`` says."""
    builder = trt.Builder(LOGGER)
    network, _parser = _parse(builder, onnx_bytes)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in plan.profile.items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    if plan.precision == "int8":
        if calibrator is None:
            raise BackendUnavailable("tensorrt backend: int8 needs a calibrator")
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable("tensorrt backend: the engine build failed (see TensorRT's log)")
    return bytes(memoryview(serialized))


def deserialize(engine: bytes, dla_core: int | None) -> tuple[trt.Runtime, trt.ICudaEngine]:
    """(runtime, engine) from serialized bytes; the runtime must outlive the engine."""
    runtime = trt.Runtime(LOGGER)
    if dla_core is not None:
        runtime.DLA_core = dla_core
    cuda_engine = runtime.deserialize_cuda_engine(engine)
    if cuda_engine is None:
        raise BackendUnavailable("tensorrt backend: the engine does not deserialize here")
    return runtime, cuda_engine


def io_tensor_names(engine: trt.ICudaEngine) -> set[str]:
    """Names of the engine's input and output tensors."""
    return {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
