"""CUDA device memory, pinned host memory, a stream and CUDA graphs through NVIDIA's cuda-python.

What the tensorrt backend needs from CUDA without torch: the runtime module of ``cuda-python``
(``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6). cuda-python returns
every call's result as a tuple ``(cudaError_t, *values)``; ``CudaRuntime.call`` checks the
error of each call and raises a one-line ``BackendUnavailable`` naming the call and the error
(older cuda-python raises ``RuntimeError`` where the driver library cannot be loaded: that
becomes the same one-line error).

Ownership: ``DeviceMemory`` frees its allocations together (``release``, or when collected);
a ``pinned_array`` frees its page-locked memory when its last numpy view is gone, so arrays a
session returned stay valid after the session closes; ``CudaStream`` and ``CudaGraph`` are
destroyed by ``close`` or when collected.
"""

from __future__ import annotations

import ctypes
import importlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable, first_line

# cuda-python >= 12.6 (and 13, which dropped the old name); then the pre-12.6 module.
RUNTIME_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


def import_runtime() -> ModuleType:
    """cuda-python's CUDA runtime module, or BackendUnavailable when cuda-python is missing."""
    for name in RUNTIME_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailable(
        "the 'cuda-python' package is not installed (pip install -e '.[tensorrt]' on a CUDA "
        "machine)"
    )


class CudaRuntime:
    """cuda-python's runtime API with every returned ``cudaError_t`` checked."""

    def __init__(self, module: ModuleType | None = None) -> None:
        self.rt = import_runtime() if module is None else module

    def call(self, function: str, *args: Any) -> Any:
        """``function(*args)``'s value (None, one value, or a tuple of several);
        BackendUnavailable naming the call and the CUDA error when it fails."""
        try:
            result = getattr(self.rt, function)(*args)
        except RuntimeError as exc:  # cuda-python < 12.6 where libcuda cannot be loaded
            reason = first_line(exc)
            raise BackendUnavailable(f"CUDA {function} failed: {reason}") from exc
        error, values = result[0], tuple(result[1:])
        if error != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailable(f"CUDA {function} failed: {self.describe(error)}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def describe(self, error: Any) -> str:
        """``cudaErrorName (what it means)`` for a ``cudaError_t``."""
        _, name = self.rt.cudaGetErrorName(error)
        _, text = self.rt.cudaGetErrorString(error)
        return f"{_text(name) or int(error)} ({_text(text)})"

    def clear_error(self) -> None:
        """Reset the runtime's last-error state after a failure already handled (a failed
        capture), so that later callers checking ``cudaGetLastError`` do not see it. Its return
        value is the error being cleared, not a failure of this call."""
        self.rt.cudaGetLastError()

    def device_count(self) -> int:
        """The number of CUDA GPUs visible here."""
        return int(self.call("cudaGetDeviceCount"))

    def use_device(self, index: int) -> None:
        """Make GPU ``index`` current for this thread (allocations, streams, TensorRT)."""
        self.call("cudaSetDevice", index)

    def device_name(self, index: int) -> str:
        """GPU ``index``'s name as CUDA reports it (what torch.cuda.get_device_name returns)."""
        return _text(self.call("cudaGetDeviceProperties", index).name)


def _text(value: Any) -> str:
    """cuda-python's ``bytes`` strings (names, messages) as text; "" for None."""
    if value is None:
        return ""
    return value.decode(errors="replace").split("\0")[0] if isinstance(value, bytes) else str(value)


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) * dtype.itemsize


@dataclass(frozen=True)
class DeviceTensor:
    """A device allocation holding one tensor: its address, shape and dtype."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the tensor takes."""
        return _nbytes(self.shape, self.dtype)


def _free_all(cuda: CudaRuntime, pointers: list[int]) -> None:
    """cudaFree every pointer (each once, all tried), then raise the first failure."""
    pending, pointers[:] = list(pointers), []
    failure: BackendUnavailable | None = None
    for pointer in pending:
        try:
            cuda.call("cudaFree", pointer)
        except BackendUnavailable as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


class DeviceMemory:
    """Device allocations freed together by ``release`` (or when the pool is collected)."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self._cuda = cuda
        self._pointers: list[int] = []
        self._release = weakref.finalize(self, _free_all, cuda, self._pointers)
        self._release.atexit = False  # the process's exit frees device memory

    def alloc(self, shape: Sequence[int], dtype: np.dtype | str) -> DeviceTensor:
        """An uninitialised device tensor of ``shape`` and ``dtype``."""
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        pointer = int(self._cuda.call("cudaMalloc", max(_nbytes(shape, dtype), 1)))
        self._pointers.append(pointer)
        return DeviceTensor(pointer, shape, dtype)

    def release(self) -> None:
        """Free every allocation (once; later calls do nothing)."""
        self._release()


def pinned_array(cuda: CudaRuntime, shape: Sequence[int], dtype: np.dtype | str) -> np.ndarray:
    """A zeroed numpy array in page-locked host memory (``cudaMallocHost``), freed with
    ``cudaFreeHost`` when the last array viewing it is gone."""
    dtype = np.dtype(dtype)
    nbytes = _nbytes(shape, dtype)
    pointer = int(cuda.call("cudaMallocHost", max(nbytes, 1)))
    memory = (ctypes.c_byte * max(nbytes, 1)).from_address(pointer)
    weakref.finalize(memory, cuda.call, "cudaFreeHost", pointer).atexit = False
    array = np.frombuffer(memoryview(memory), np.uint8)[:nbytes].view(dtype).reshape(tuple(shape))
    array.fill(0)
    return array


def _host_pointer(array: np.ndarray, tensor: DeviceTensor) -> int:
    if not array.flags.c_contiguous or array.nbytes != tensor.nbytes:
        raise BackendUnavailable(
            f"CUDA copy: host array of {array.nbytes} bytes (contiguous: "
            f"{array.flags.c_contiguous}) does not match a device tensor of {tensor.nbytes} bytes"
        )
    return int(array.ctypes.data)


class CudaStream:
    """A non-blocking CUDA stream with host<->device copies on it."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self._cuda = cuda
        self.handle = cuda.call("cudaStreamCreateWithFlags", cuda.rt.cudaStreamNonBlocking)
        self._destroy = weakref.finalize(self, cuda.call, "cudaStreamDestroy", self.handle)
        self._destroy.atexit = False

    @property
    def pointer(self) -> int:
        """The stream's address (what TensorRT's ``execute_async_v3`` takes)."""
        return int(self.handle)

    def upload(self, tensor: DeviceTensor, array: np.ndarray) -> None:
        """Queue a copy of host ``array`` (pinned, for the copy to be asynchronous) to ``tensor``;
        the host array must stay unchanged until the stream is synchronized."""
        kind = self._cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        source = _host_pointer(array, tensor)
        self._cuda.call("cudaMemcpyAsync", tensor.pointer, source, tensor.nbytes, kind, self.handle)

    def download(self, array: np.ndarray, tensor: DeviceTensor) -> None:
        """Queue a copy of ``tensor`` into host ``array`` (valid after ``synchronize``)."""
        kind = self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        target = _host_pointer(array, tensor)
        self._cuda.call("cudaMemcpyAsync", target, tensor.pointer, tensor.nbytes, kind, self.handle)

    def synchronize(self) -> None:
        """Wait until everything queued on the stream has run."""
        self._cuda.call("cudaStreamSynchronize", self.handle)

    def close(self) -> None:
        """Destroy the stream (once)."""
        self._destroy()


class CudaGraph:
    """Work captured from a stream once and replayed with one launch (``cudaGraphLaunch``)."""

    def __init__(self, cuda: CudaRuntime, executable: Any) -> None:
        self._cuda = cuda
        self._executable = executable
        self._destroy = weakref.finalize(self, cuda.call, "cudaGraphExecDestroy", executable)
        self._destroy.atexit = False

    @classmethod
    def capture(
        cls, cuda: CudaRuntime, stream: CudaStream, enqueue: Callable[[], bool]
    ) -> CudaGraph | None:
        """The graph of what ``enqueue`` queues on ``stream``, or None where that work cannot
        be captured (``enqueue`` returned False, or CUDA refused the capture or invalidated
        it); the stream is out of capture mode either way. Errors CUDA reports here are
        checked and mean "no graph": the caller then enqueues directly."""
        rt = cuda.rt
        success = rt.cudaError_t.cudaSuccess
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        if rt.cudaStreamBeginCapture(stream.handle, mode)[0] != success:
            cuda.clear_error()
            return None
        enqueued = False
        try:
            enqueued = enqueue()
        finally:  # always end the capture: a capturing stream refuses ordinary work
            error, graph = rt.cudaStreamEndCapture(stream.handle)
            if error != success:
                cuda.clear_error()
                graph = None
            elif not enqueued:
                cuda.call("cudaGraphDestroy", graph)
                graph = None
        if graph is None:
            return None
        error, executable = rt.cudaGraphInstantiate(graph, 0)
        cuda.call("cudaGraphDestroy", graph)  # the executable graph keeps what it needs
        if error != success:
            cuda.clear_error()
            return None
        return cls(cuda, executable)

    def launch(self, stream: CudaStream) -> None:
        """Queue one replay of the captured work on ``stream``."""
        self._cuda.call("cudaGraphLaunch", self._executable, stream.handle)

    def close(self) -> None:
        """Destroy the executable graph (once)."""
        self._destroy()
