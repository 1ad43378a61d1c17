"""Reading small files under a filesystem root, safely: the one place every device reader uses.

A root is a folder laid out like ``/`` on the device (``sys/``, ``proc/``, ``etc/``, ``var/``).
Absolute symlinks inside it (``/etc/nvpmodel.conf -> /etc/nvpmodel/...``) are followed inside
the root, as ``chroot`` would, and ``..`` stops at the root.

A root may be careless or hostile (a fixture tree, a copied ``/sys``, a mounted image), so reads
are guarded:
- only regular files are read: `os.stat` on the resolved path first (a FIFO, a device such as
  ``/dev/zero``, a folder or a socket is refused), then ``open`` with ``O_NONBLOCK`` (a file
  swapped for a FIFO after the check cannot block the open) and `os.fstat` on what was opened;
- reads are bounded: at most ``max_bytes`` (`VALUE_MAX_BYTES`, 4 KiB, for sysfs values and
  one-line identity files, the kernel capping a sysfs attribute at one page; `TEXT_MAX_BYTES`,
  256 KiB, for ``/proc/meminfo`` and ``nvpmodel.conf``; `CPUINFO_MAX_BYTES`, 4 MiB, for
  ``/proc/cpuinfo``, about 1.4 KB per logical CPU); a bigger file is refused, not truncated;
- a read that could still block (a sysfs attribute whose driver talks over a hung I2C bus, a
  root on a stalled network filesystem) runs in a reader thread, and the caller gives up after
  `READ_TIMEOUT_S`.
Every refusal is an `UnreadableFile` (an `OSError`) whose message is one line,
``FILE: what is wrong``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import queue
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

FileReader = Callable[[Path], str]
"""Reads one file's text; meters take one so tests can inject I/O errors."""

VALUE_MAX_BYTES = 4096
TEXT_MAX_BYTES = 256 * 1024
CPUINFO_MAX_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 5.0
_MAX_LINKS = 16
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
T = TypeVar("T")


class UnreadableFile(OSError):
    """A file exists but is not a small regular file we can read; the message names it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class ReadTimeout(OSError):
    """A read under the root did not answer within the timeout."""


class RootError(ValueError):
    """The filesystem root to detect under does not exist or is not a folder."""


def problem(error: OSError) -> str:
    """What is wrong, in a few words, without the file name (`UnreadableFile` holds it apart)."""
    if isinstance(error, UnreadableFile):
        return error.problem
    return error.strerror or str(error)


def check_root(root: str | os.PathLike[str]) -> Path:
    """Return ``root`` as a `Path`; `RootError` when it does not exist or is not a folder."""
    path = Path(root)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise RootError(f"filesystem root {path} does not exist ({e.strerror or e})") from e
    if not stat.S_ISDIR(mode):
        raise RootError(f"filesystem root {path} is not a folder")
    return path


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bytes(path: str | os.PathLike[str], max_bytes: int = VALUE_MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises `UnreadableFile` for anything else (a FIFO, a device, a folder, a bigger file) and
    the usual `OSError` (`FileNotFoundError`, `PermissionError`) when it cannot be opened.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UnreadableFile(path, f"{_kind(mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(path, f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise UnreadableFile(path, f"{st.st_size} bytes, larger than the {max_bytes} read")
        chunks, size = [], 0
        while size <= max_bytes:  # procfs reports size 0: read until EOF or past the cap
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UnreadableFile(path, f"larger than the {max_bytes} bytes read")
    return b"".join(chunks)


def read_text(path: Path, max_bytes: int = VALUE_MAX_BYTES) -> str:
    """Read a sysfs/procfs file's text, bounded as `read_bytes` (the default ``FileReader``)."""
    return read_bytes(path, max_bytes).decode("utf-8", errors="replace")


class _Job:
    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the waiting caller, which re-raises it
            self.error = e
        self.done.set()


class _ReaderThread:
    """One daemon thread running read jobs in order; abandoned (left blocked) on a timeout."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="ganglion-sysroot", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.jobs.get().run()


_reader: _ReaderThread | None = None
_reader_lock = threading.Lock()


def with_timeout(fn: Callable[[], T], what: str, timeout_s: float | None = None) -> T:
    """Run ``fn`` (reads of files under a root) in the reader thread and return its result.

    Raises `ReadTimeout` naming ``what`` when it has not finished after ``timeout_s`` (default
    `READ_TIMEOUT_S`); the blocked thread is abandoned and the next call starts a fresh one.
    Exceptions of ``fn`` are re-raised here. Called from the reader thread, ``fn`` runs directly.
    """
    global _reader
    limit = READ_TIMEOUT_S if timeout_s is None else timeout_s
    with _reader_lock:
        if _reader is None:
            _reader = _ReaderThread()
        reader = _reader
    if threading.current_thread() is reader.thread:
        return fn()
    job = _Job(fn)
    reader.jobs.put(job)
    if not job.done.wait(limit):
        with _reader_lock:
            if _reader is reader:
                _reader = None
        raise ReadTimeout(f"{what}: no answer within {limit:g} s (the read is blocked)")
    if job.error is not None:
        raise job.error
    return job.result  # type: ignore[return-value]


def under(root: str | os.PathLike[str], path: str) -> Path:
    """Return ``path`` (absolute, as on the device) inside ``root``, resolving symlinks in any of
    its components inside the root (an absolute link target is taken relative to ``root``, and
    ``..`` never climbs above it)."""
    root_path = Path(root)
    pending = [p for p in path.split("/") if p]
    current = root_path
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = current.parent if current != root_path else root_path
            continue
        current = current / part
        if current.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise UnreadableFile(root_path / path.lstrip("/"), "too many symbolic links")
            target = os.readlink(current)
            current = root_path if os.path.isabs(target) else current.parent
            pending = [p for p in target.split("/") if p] + pending
    return current


def glob_under(root: str | os.PathLike[str], pattern: str, limit: int) -> list[str]:
    """The paths (absolute, as on the device) matching ``pattern`` inside ``root``, sorted.

    Each folder is listed at its `under` location, so links are followed inside the root as
    everywhere else. ``*``, ``?`` and ``[...]`` match within one component, as in `glob`.
    More than ``limit`` matches at any component raises `UnreadableFile` naming the folder.
    """
    paths = ["/"]
    for part in (p for p in pattern.split("/") if p):
        found: list[str] = []
        for folder in paths:
            if not any(c in part for c in "*?["):
                path = posixpath.join(folder, part)
                if os.path.lexists(under(root, path)):
                    found.append(path)
                continue
            try:
                names = os.listdir(under(root, folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            found += [posixpath.join(folder, n) for n in sorted(fnmatch.filter(names, part))]
            if len(found) > limit:
                where = Path(root) / folder.lstrip("/")
                raise UnreadableFile(where, f"more than {limit} entries match {part!r}")
        paths = found
    return paths


def read_optional(
    root: str | os.PathLike[str], path: str, max_bytes: int = TEXT_MAX_BYTES
) -> str | None:
    """Read ``path`` under ``root`` (bounded, with a timeout); ``None`` when it is absent.

    A file that is there but cannot be read raises `OSError` (`UnreadableFile`, `ReadTimeout`,
    `PermissionError`) with a one-line message naming it.
    """
    where = Path(root) / path.lstrip("/")

    def read() -> str | None:
        try:
            return read_text(under(root, path), max_bytes)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except UnreadableFile:
            raise
        except OSError as e:
            raise UnreadableFile(where, e.strerror or str(e)) from e

    return with_timeout(read, str(where))
