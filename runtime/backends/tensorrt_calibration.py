"""INT8 calibration data for a step engine, and its hand-over to TensorRT in device memory.

TensorRT's calibrator asks only for the network's inputs, batch after batch. The step graph's
inputs include the incoming state (``state_in.*``), so calibration batches are taken along real
trajectories: the step graph itself, on ONNX Runtime (the bundle's ``model.onnx``; no torch),
steps through the calibration samples and every step's feeds and incoming state become one
batch. ``CalibrationBatches`` copies those batches to device memory through cuda-python and
hands TensorRT their addresses, in the order of the input names it asks for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.backends.cuda_buffers import (
    CudaRuntime,
    CudaStream,
    DeviceMemory,
    DeviceTensor,
)
from ganglion.runtime.backends.onnxruntime_backend import OnnxRuntimeSession
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.program import Program

Feed = dict[str, np.ndarray]


def calibration_feeds(
    program: Program, calibration: Any, batch: int, max_feeds: int = 64
) -> list[Feed]:
    """Up to ``max_feeds`` step-graph feeds (inputs and ``state_in.*``) of ``batch`` samples.

    calibration: ``run``'s inputs by name (or one array for a single-input program); whole
    batches are used.
    """
    manifest, kind = program.manifest, program.kind
    named = calibration if isinstance(calibration, dict) else {manifest.inputs[0].name: calibration}
    axis = kind.batch_axis(manifest)
    samples = min(np.shape(a)[axis] for a in named.values())
    if samples < batch:
        raise BackendUnavailable(
            f"tensorrt backend: calibration data has {samples} samples, fewer than the batch "
            f"of {batch}"
        )
    reference = OnnxRuntimeSession(program, "cpu", ["CPUExecutionProvider"], None)
    feeds: list[Feed] = []
    for start in range(0, samples - batch + 1, batch):
        chunk = {
            n: np.take(np.asarray(a), range(start, start + batch), axis=axis)
            for n, a in named.items()
        }
        chunk = {s.name: chunk[s.name].astype(s.dtype) for s in manifest.inputs}
        state = reference.init_state(batch)
        for inputs in kind.split_steps(manifest, chunk):
            # copies: the reference session overwrites the state arrays it returns
            feed = {
                n: np.array(a, order="C")
                for n, a in kind.onnx_feeds(manifest, inputs, state).items()
            }
            feed.update({naming.state_input(k): np.array(v, order="C") for k, v in state.items()})
            feeds.append(feed)
            if len(feeds) == max_feeds:
                return feeds
            _, state = reference.step(inputs, state)
    return feeds


class CalibrationBatches:
    """Calibration feeds handed out one at a time as device addresses (what TensorRT's
    ``IInt8Calibrator.get_batch`` returns). One device buffer per input, allocated at the
    first batch and refilled for each next one; ``close`` frees them."""

    def __init__(self, feeds: list[Feed], cuda: CudaRuntime) -> None:
        self.batch = next(iter(feeds[0].values())).shape[0] if feeds else 1
        self._feeds = iter(feeds)
        self._memory = DeviceMemory(cuda)
        self._stream = CudaStream(cuda)
        self._device: dict[str, DeviceTensor] = {}

    def next_pointers(self, names: list[str]) -> list[int] | None:
        """Device addresses of the next batch's inputs in the order of ``names`` (the copies
        have completed), or None when the data is used up."""
        feed = next(self._feeds, None)
        if feed is None:
            return None
        missing = [n for n in names if n not in feed]
        if missing:
            raise BackendUnavailable(
                f"tensorrt backend: calibration feeds lack network input(s) {missing}"
            )
        arrays = [np.ascontiguousarray(feed[name]) for name in names]  # alive until copied
        for name, array in zip(names, arrays, strict=True):
            tensor = self._device.get(name)
            if tensor is None:
                tensor = self._device[name] = self._memory.alloc(array.shape, array.dtype)
            elif (tensor.shape, tensor.dtype) != (array.shape, array.dtype):
                raise BackendUnavailable(
                    f"tensorrt backend: calibration input {name!r} changes from "
                    f"{list(tensor.shape)} {tensor.dtype} to {list(array.shape)} {array.dtype}"
                )
            self._stream.upload(tensor, array)
        self._stream.synchronize()  # TensorRT reads the buffers on its own stream
        return [self._device[name].pointer for name in names]

    def close(self) -> None:
        """Free the device buffers and the stream."""
        self._memory.release()
        self._stream.close()
