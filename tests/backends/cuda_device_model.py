"""A model of a CUDA device behind cuda-python's runtime API, for the tensorrt backend's tests
(``test_tensorrt_without_torch.py``): every function returns ``(cudaError_t, *values)`` with the
values None on failure (as cuda-python 12 and 13 do; older releases raise RuntimeError where
libcuda cannot be loaded, ``driver_missing``); device memory is bytes at addresses above the
host's, page-locked host memory is real host memory, streams queue their work until
synchronized (copies from pinned memory read it when they run, copies from pageable memory when
queued), capture records a stream's work into a graph instead of running it, and the last error
is kept until ``cudaGetLastError``. Imports no torch: a subprocess loads it by path."""

from __future__ import annotations

import ctypes
import enum
import itertools
from collections.abc import Callable
from typing import Any

DEVICE_BASE = 1 << 52  # above every user-space host address


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


MESSAGES = {  # cudaGetErrorString's text for each
    0: "no error",
    1: "invalid argument",
    2: "out of memory",
    35: "CUDA driver version is insufficient for CUDA runtime version",
    100: "no CUDA-capable device is detected",
    101: "invalid device ordinal",
    400: "invalid resource handle",
    401: "the operation cannot be performed in the present state",
    900: "operation not permitted when stream is capturing",
    901: "operation failed due to a previous error during capture",
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class Handle:
    """An opaque cuda-python handle (cudaStream_t, cudaGraph_t, cudaGraphExec_t)."""

    def __init__(self, kind: str, address: int) -> None:
        self.kind, self.address = kind, address

    def __int__(self) -> int:
        return self.address

    def __repr__(self) -> str:
        return f"<{self.kind} {self.address:#x}>"


class Properties:
    """The part of cudaDeviceProp the backend reads."""

    def __init__(self, name: bytes) -> None:
        self.name = name


Op = Callable[[], None]
OK = cudaError_t.cudaSuccess


class FakeCudart:
    """A CUDA device behind cuda-python's runtime API (see the module docstring)."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamCaptureMode = cudaStreamCaptureMode
    cudaStreamNonBlocking = 1

    def __init__(
        self,
        gpus: int = 1,
        name: bytes = b"NVIDIA Fake GPU",
        fail: dict[str, cudaError_t] | None = None,
        driver_missing: bool = False,
    ) -> None:
        self.gpus, self.name = gpus, name
        self.fail = dict(fail or {})
        self.driver_missing = driver_missing
        self.device: dict[int, bytearray] = {}
        self.pinned: dict[int, Any] = {}
        self.streams: dict[int, list[Op]] = {}
        self.captures: dict[int, list[Op] | None] = {}  # None: capture invalidated
        self.graphs: dict[int, list[Op]] = {}
        self.executables: dict[int, list[Op]] = {}
        self.calls: list[str] = []
        self.last_error = OK
        self.current = 0
        self._device_top = DEVICE_BASE
        self._handles = itertools.count(0x1000, 0x10)

    # ---- bookkeeping -----------------------------------------------------------------------

    def _enter(self, function: str) -> cudaError_t:
        self.calls.append(function)
        if self.driver_missing:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return self.fail.get(function, OK)

    def _done(self, error: cudaError_t, *values: Any) -> tuple[Any, ...]:
        if error != OK:
            self.last_error = error
            return (error, *(None for _ in values))
        return (error, *values)

    def _span(self, pointer: int, count: int) -> tuple[bytearray, int] | None:
        for base, memory in self.device.items():
            if base <= pointer and pointer + count <= base + len(memory):
                return memory, pointer - base
        return None

    def _is_pinned(self, pointer: int, count: int) -> bool:
        return any(
            base <= pointer and pointer + count <= base + ctypes.sizeof(buffer)
            for base, buffer in self.pinned.items()
        )

    def _queue(self, stream: int, op: Op) -> cudaError_t:
        if stream in self.captures:
            captured = self.captures[stream]
            if captured is None:
                return cudaError_t.cudaErrorStreamCaptureInvalidated
            captured.append(op)
            return OK
        self.streams[stream].append(op)
        return OK

    def _drain(self, stream: int) -> None:
        pending, self.streams[stream] = self.streams[stream], []
        for op in pending:
            op()

    def read(self, pointer: int, count: int) -> bytes:
        """Device bytes (what a test or a kernel reads)."""
        span = self._span(pointer, count)
        assert span is not None, f"{pointer:#x} is no device allocation of {count} bytes"
        memory, offset = span
        return bytes(memory[offset : offset + count])

    def write(self, pointer: int, data: bytes) -> None:
        """Store device bytes (what a kernel writes)."""
        span = self._span(pointer, len(data))
        assert span is not None, f"{pointer:#x} is no device allocation of {len(data)} bytes"
        memory, offset = span
        memory[offset : offset + len(data)] = data

    def launch(self, stream: int, op: Op) -> bool:
        """A kernel launch on ``stream`` (what TensorRT's enqueue does); False when refused."""
        if stream not in self.streams:
            return False
        return self._queue(stream, op) == OK

    # ---- errors and devices ----------------------------------------------------------------

    def cudaGetErrorName(self, error: cudaError_t) -> tuple[Any, ...]:
        return (OK, cudaError_t(error).name.encode())

    def cudaGetErrorString(self, error: cudaError_t) -> tuple[Any, ...]:
        return (OK, MESSAGES[int(error)].encode())

    def cudaGetLastError(self) -> tuple[Any, ...]:
        error, self.last_error = self.last_error, OK
        return (error,)

    def cudaGetDeviceCount(self) -> tuple[Any, ...]:
        error = self._enter("cudaGetDeviceCount")
        if error == OK and self.gpus == 0:
            error = cudaError_t.cudaErrorNoDevice
        return self._done(error, self.gpus)

    def cudaSetDevice(self, index: int) -> tuple[Any, ...]:
        error = self._enter("cudaSetDevice")
        if error == OK and not 0 <= index < self.gpus:
            error = cudaError_t.cudaErrorInvalidDevice
        if error == OK:
            self.current = index
        return self._done(error)

    def cudaGetDeviceProperties(self, index: int) -> tuple[Any, ...]:
        error = self._enter("cudaGetDeviceProperties")
        if error == OK and not 0 <= index < self.gpus:
            error = cudaError_t.cudaErrorInvalidDevice
        return self._done(error, Properties(self.name))

    # ---- memory ----------------------------------------------------------------------------

    def cudaMalloc(self, size: int) -> tuple[Any, ...]:
        error = self._enter("cudaMalloc")
        if error != OK:
            return self._done(error, 0)
        pointer = self._device_top
        self.device[pointer] = bytearray(b"\xa5" * size)  # uninitialised, not zero
        self._device_top += (size + 255) // 256 * 256 + 256
        return self._done(OK, pointer)

    def cudaFree(self, pointer: int) -> tuple[Any, ...]:
        error = self._enter("cudaFree")
        if error == OK and self.device.pop(int(pointer), None) is None:
            error = cudaError_t.cudaErrorInvalidValue
        return self._done(error)

    def cudaMallocHost(self, size: int) -> tuple[Any, ...]:
        error = self._enter("cudaMallocHost")
        if error != OK:
            return self._done(error, 0)
        buffer = ctypes.create_string_buffer(b"\x5a" * size, size)
        self.pinned[ctypes.addressof(buffer)] = buffer
        return self._done(OK, ctypes.addressof(buffer))

    def cudaFreeHost(self, pointer: int) -> tuple[Any, ...]:
        error = self._enter("cudaFreeHost")
        if error == OK and self.pinned.pop(int(pointer), None) is None:
            error = cudaError_t.cudaErrorInvalidValue
        return self._done(error)

    # ---- streams and copies ----------------------------------------------------------------

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, ...]:
        error = self._enter("cudaStreamCreateWithFlags")
        if error != OK:
            return self._done(error, None)
        handle = Handle("cudaStream_t", next(self._handles))
        self.streams[int(handle)] = []
        return self._done(OK, handle)

    def cudaStreamDestroy(self, stream: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaStreamDestroy")
        if error == OK and self.streams.pop(int(stream), None) is None:
            error = cudaError_t.cudaErrorInvalidResourceHandle
        return self._done(error)

    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: Handle
    ) -> tuple[Any, ...]:
        error = self._enter("cudaMemcpyAsync")
        if error != OK:
            return self._done(error)
        s, dst, src = int(stream), int(dst), int(src)
        if s not in self.streams:
            return self._done(cudaError_t.cudaErrorInvalidResourceHandle)
        device, host = (dst, src) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else (src, dst)
        span = self._span(device, count)
        if kind not in (1, 2) or span is None or host >= DEVICE_BASE:
            return self._done(cudaError_t.cudaErrorInvalidValue)
        memory, offset = span
        pinned = self._is_pinned(host, count)
        if not pinned and s in self.captures:  # pageable copies cannot be captured
            self.captures[s] = None
            return self._done(cudaError_t.cudaErrorStreamCaptureUnsupported)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            staged = None if pinned else ctypes.string_at(host, count)

            def op() -> None:
                data = staged if staged is not None else ctypes.string_at(host, count)
                memory[offset : offset + count] = data

        else:

            def op() -> None:
                ctypes.memmove(host, bytes(memory[offset : offset + count]), count)

        error = self._queue(s, op)
        if error == OK and not pinned and kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            self._drain(s)  # a copy into pageable memory returns when it is done
        return self._done(error)

    def cudaStreamSynchronize(self, stream: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaStreamSynchronize")
        s = int(stream)
        if error == OK and s not in self.streams:
            error = cudaError_t.cudaErrorInvalidResourceHandle
        elif error == OK and s in self.captures:
            self.captures[s] = None
            error = cudaError_t.cudaErrorStreamCaptureUnsupported
        elif error == OK:
            self._drain(s)
        return self._done(error)

    # ---- capture and graphs ----------------------------------------------------------------

    def cudaStreamBeginCapture(
        self, stream: Handle, mode: cudaStreamCaptureMode
    ) -> tuple[Any, ...]:
        error = self._enter("cudaStreamBeginCapture")
        s = int(stream)
        if error == OK and s not in self.streams:
            error = cudaError_t.cudaErrorInvalidResourceHandle
        elif error == OK and s in self.captures:
            error = cudaError_t.cudaErrorIllegalState
        if error == OK:
            self.captures[s] = []
        return self._done(error)

    def cudaStreamEndCapture(self, stream: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaStreamEndCapture")
        s = int(stream)
        if error == OK and s not in self.captures:
            error = cudaError_t.cudaErrorIllegalState
        if error != OK:
            return self._done(error, None)
        ops = self.captures.pop(s)
        if ops is None:
            return self._done(cudaError_t.cudaErrorStreamCaptureInvalidated, None)
        graph = Handle("cudaGraph_t", next(self._handles))
        self.graphs[int(graph)] = ops
        return self._done(OK, graph)

    def cudaGraphInstantiate(self, graph: Handle, flags: int) -> tuple[Any, ...]:
        error = self._enter("cudaGraphInstantiate")
        if error == OK and int(graph) not in self.graphs:
            error = cudaError_t.cudaErrorInvalidValue
        if error != OK:
            return self._done(error, None)
        executable = Handle("cudaGraphExec_t", next(self._handles))
        self.executables[int(executable)] = list(self.graphs[int(graph)])
        return self._done(OK, executable)

    def cudaGraphLaunch(self, executable: Handle, stream: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaGraphLaunch")
        ops = self.executables.get(int(executable))
        if error == OK and (ops is None or int(stream) not in self.streams):
            error = cudaError_t.cudaErrorInvalidResourceHandle
        for op in ops if error == OK else []:
            error = self._queue(int(stream), op)
        return self._done(error)

    def cudaGraphDestroy(self, graph: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaGraphDestroy")
        if error == OK and self.graphs.pop(int(graph), None) is None:
            error = cudaError_t.cudaErrorInvalidValue
        return self._done(error)

    def cudaGraphExecDestroy(self, executable: Handle) -> tuple[Any, ...]:
        error = self._enter("cudaGraphExecDestroy")
        if error == OK and self.executables.pop(int(executable), None) is None:
            error = cudaError_t.cudaErrorInvalidValue
        return self._done(error)
