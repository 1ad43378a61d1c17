"""A Lava session in a worker process of its own, for processes that run other threads.

Lava starts its processes with ``fork``. A fork taken while other threads run (a gRPC
server's pollers, a thread pool) copies locks those threads hold, and a Lava process can hang
on one: the request that built the network never returns, and neither does the server's
shutdown. ``LavaBackend.load(..., isolated=True)`` (what ``ganglion serve`` asks for) gives a
``WorkerSession`` instead: it starts ``python -m ganglion.runtime.backends.lava_worker``
(fork and exec, safe from any thread), whose one thread opens the same bundle folder on the
Lava backend and forks Lava's processes whenever a new sequence length needs a new network.

Protocol, over two pipes of the worker's own (its stdout and stderr stay the parent's log):
each message is a JSON header and named arrays, the arrays as an NPZ read without pickle,
header and payload sizes bounded before they are read. The parent sends ``open`` (bundle folder,
precision, device), then ``run`` with the checked inputs; the worker answers each with
``ok`` and arrays, or an error (class name and one-line message) that the parent
raises again as the same Ganglion error. The worker exits when its pipe closes (the parent
closed the session or died), stopping Lava's processes; it leads a process group of its own,
which ``close`` ends in case the worker died and left Lava's processes behind.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ganglion.models.errors import BackendUnavailable, BundleError, GanglionError, ShapeError
from ganglion.runtime.backends.lava_backend import STEP_UNAVAILABLE
from ganglion.runtime.program import Program
from ganglion.runtime.session import Session, State

HEADER = struct.Struct("<IQ")  # JSON header bytes, NPZ payload bytes
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 33  # 8 GiB: the worker answers what the parent sent, bounded
CLOSE_TIMEOUT_S = 30.0
ANSWER_POLL_S = 0.5  # how often a waiting call checks that the worker still runs
ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (BackendUnavailable, BundleError, ShapeError, ValueError)
}


class WorkerError(GanglionError):
    """The worker process exited or broke the protocol."""


def write_message(out: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Send one message: the header as JSON, then ``arrays`` as an uncompressed NPZ."""
    text = json.dumps(header, allow_nan=False).encode()
    payload = io.BytesIO()
    if arrays:
        np.savez(payload, **arrays)
    data = payload.getvalue()
    out.write(HEADER.pack(len(text), len(data)) + text + data)
    out.flush()


def read_message(source: BinaryIO) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """One message (header, arrays), or None at a clean end of the pipe; WorkerError when a
    message is cut short, too large or not JSON/NPZ."""
    head = _read_exactly(source, HEADER.size, allow_end=True)
    if head is None:
        return None
    size, payload_size = HEADER.unpack(head)
    if size > MAX_HEADER_BYTES or payload_size > MAX_PAYLOAD_BYTES:
        raise WorkerError(f"lava worker: message of {size} + {payload_size} bytes is too large")
    try:
        header = json.loads(_read_exactly(source, size) or b"")
    except ValueError as exc:
        raise WorkerError(f"lava worker: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WorkerError("lava worker: header is not a JSON object")
    arrays: dict[str, np.ndarray] = {}
    if payload_size:
        data = _read_exactly(source, payload_size) or b""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError) as exc:
            raise WorkerError(f"lava worker: arrays are not a plain NPZ ({exc})") from None
    return header, arrays


def _read_exactly(source: BinaryIO, size: int, allow_end: bool = False) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = source.read(size - len(data))
        if not chunk:
            if allow_end and not data:
                return None
            raise WorkerError("lava worker: the pipe closed in the middle of a message")
        data += chunk
    return bytes(data)


class WorkerSession(Session):
    """A Lava session run by a worker process (module docstring); same contract."""

    backend = "lava"

    def __init__(self, program: Program, precision: str, device: str) -> None:
        super().__init__(program, device)
        if program.folder is None:
            raise BackendUnavailable("lava backend: isolated=True needs a bundle folder")
        worker_reads, parent_writes = os.pipe()
        parent_reads, worker_writes = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(worker_reads), str(worker_writes)],
                pass_fds=(worker_reads, worker_writes),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its group holds Lava's processes: close ends them all
            )
        except OSError as exc:
            os.close(parent_reads)
            os.close(parent_writes)
            raise BackendUnavailable(f"lava backend: cannot start its worker ({exc})") from None
        finally:
            os.close(worker_reads)
            os.close(worker_writes)
        self._send = os.fdopen(parent_writes, "wb")
        self._receive = os.fdopen(parent_reads, "rb")
        opened = {"folder": str(Path(program.folder).resolve())}
        try:
            self._call({"op": "open", **opened, "precision": precision, "device": device}, {})
        except BaseException:
            self.close()
            raise

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call({"op": "run"}, inputs)

    def _step(self, inputs: dict[str, np.ndarray], state: State) -> tuple[dict, State]:
        raise BackendUnavailable(STEP_UNAVAILABLE)

    def _call(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Send one request and return the answer's arrays, raising the worker's error."""
        if self._process.poll() is not None:
            raise WorkerError(f"lava worker exited with code {self._process.returncode}")
        try:
            write_message(self._send, header, arrays)
            self._await_answer()
            answer = read_message(self._receive)
        except (BrokenPipeError, ValueError) as exc:
            answer, broken = None, exc
        else:
            broken = None
        if answer is None:
            code = self._process.wait(timeout=CLOSE_TIMEOUT_S)
            raise WorkerError(f"lava worker exited with code {code} ({broken or 'pipe closed'})")
        reply, outputs = answer
        if "error" in reply:
            raise ERRORS.get(str(reply.get("type")), RuntimeError)(str(reply["error"]))
        return outputs

    def _await_answer(self) -> None:
        """Wait until the worker's answer starts arriving; WorkerError when the worker exits
        first. Its pipe alone cannot tell: Lava's processes, forked by the worker, hold the
        pipe's write end too, so a dead worker's pipe may never close."""
        while not select.select([self._receive], [], [], ANSWER_POLL_S)[0]:
            if self._process.poll() is not None:
                raise WorkerError(
                    f"lava worker exited with code {self._process.returncode} before answering"
                )

    def _release(self) -> None:
        """Ask the worker to stop Lava and exit; kill it if it does not in time."""
        process = getattr(self, "_process", None)
        if process is None:
            return
        self._process = None  # type: ignore[assignment]
        for stream in (self._send, self._receive):
            try:
                stream.close()  # the worker sees the end of its pipe and stops Lava
            except OSError:
                pass
        try:
            process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        try:  # Lava processes a worker that died left behind
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve(receive: BinaryIO, send: BinaryIO) -> None:
    """The worker's loop: open, then answer ``run`` until the pipe closes."""
    from ganglion.runtime.session import load

    session: Session | None = None
    try:
        while (message := read_message(receive)) is not None:
            header, arrays = message
            try:
                op = header.get("op")
                if op == "open":
                    session = load(
                        str(header["folder"]),
                        backend="lava",
                        device=str(header["device"]),
                        precision=str(header["precision"]),
                        allow_nonfinite=True,  # the parent checked the inputs
                    )
                    outputs: dict[str, np.ndarray] = {}
                elif session is not None and op == "run":
                    outputs = dict(session.run(arrays))  # type: ignore[arg-type]
                else:
                    raise ValueError(f"lava worker: unexpected request {op!r}")
            except Exception as exc:  # answered, not fatal: the parent raises it again
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                write_message(send, {"error": reason, "type": type(exc).__name__}, {})
                continue
            write_message(send, {"ok": True}, outputs)
    finally:
        if session is not None:
            session.close()


def main(argv: list[str]) -> int:
    """Entry point: ``python -m ganglion.runtime.backends.lava_worker READ_FD WRITE_FD``."""
    with os.fdopen(int(argv[0]), "rb") as receive, os.fdopen(int(argv[1]), "wb") as send:
        try:
            serve(receive, send)
        except (WorkerError, BrokenPipeError):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
