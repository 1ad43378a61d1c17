"""Event files into event streams (structured arrays x, y, t in µs, p), without unpickling.

  ``.npy``             one structured array (tonic's convention), dtype checked from the header
                       before the data is read
  ``.npz``             its array ``events``, or its only array, checked the same way
  ``.aedat4``          AEDAT 4 (iniVation DV), through the ``aedat`` package
  ``.raw``             Prophesee EVT 3.0 through the ``evt3`` package, EVT 2.0 through
                       ``expelliarmus`` (told apart by the ``% evt`` or ``% format`` header line)
  ``.dat``             Prophesee DAT, through ``expelliarmus``

The three packages are optional (``pip install -e '.[events]'``) and imported only when a
file needs them. EVT 3.0 is not read with ``expelliarmus``: its reader adds 4096 µs at every
rollover of the 12-bit low time field even when a new high time word has come, so it stretches
a Prophesee recording's timestamps (and its writer never emits the high time word).

Sizes are bounded: files by ``MAX_FILE_BYTES`` and streams by ``MAX_EVENTS`` events, counted
before or while they are decoded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO

import numpy as np

from ganglion.models.errors import BackendUnavailable, ShapeError, file_problem
from ganglion.models.events.stream import EVENT_DTYPE, MAX_EVENTS, check_events
from ganglion.models.npz_archive import npz_members, read_npz_member
from ganglion.models.npz_archive import read_npy_header as _npy_header

MAX_FILE_BYTES = 4 << 30
MAX_HEADER_BYTES = 1 << 16  # of a Prophesee file's '%' text header
EVENT_SUFFIXES = (".npy", ".npz", ".aedat4", ".raw", ".dat")
_BYTES_PER_EVENT = {"evt2": 4, "dat": 8}  # at least, so a file's size bounds its events


def read_events(path: str | Path) -> np.ndarray:
    """The event stream in ``path`` (format by suffix: module docstring), sorted as stored."""
    path = Path(path)
    if path.suffix not in EVENT_SUFFIXES:
        raise ShapeError(f"{path}: not an event file (expected {', '.join(EVENT_SUFFIXES)})")
    if (problem := file_problem(path)) is not None:
        raise ShapeError(f"{path}: {problem}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ShapeError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB")
    if path.suffix == ".npy":
        return read_npy_events(path)
    if path.suffix == ".npz":
        return read_npz_events(path)
    if path.suffix == ".aedat4":
        return read_aedat4(path)
    encoding = "dat" if path.suffix == ".dat" else raw_encoding(path)
    return read_evt3(path) if encoding == "evt3" else read_expelliarmus(path, encoding, size)


def read_npy_events(path: Path) -> np.ndarray:
    """A structured event array from a .npy file; its header is checked before its data."""
    with open(path, "rb") as fh:
        _check_npy_header(fh, str(path))
    try:
        return check_events(np.load(path, allow_pickle=False), str(path))
    except ShapeError:
        raise
    except Exception as exc:
        raise ShapeError(f"{path}: not a readable .npy array ({type(exc).__name__})") from exc


def read_npz_events(path: Path) -> np.ndarray:
    """The array ``events`` (or the only array) of a .npz file, checked like ``.npy``; the
    archive's members checked first as every .npz reader does (``npz_members``)."""
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
            members = npz_members(archive, str(path), os.fstat(raw.fileno()).st_size)
            member = npz_events_member([f"{name}.npy" for name in members])
            if member is None:
                raise ShapeError(f"{path}: holds {len(members)} arrays and none named 'events'")
            info = members[member.removesuffix(".npy")]
            if info.file_size > MAX_FILE_BYTES:
                raise ShapeError(
                    f"{path}: {member} unpacks to more than {MAX_FILE_BYTES >> 30} GiB"
                )
            where = f"{path}:{member}"
            with archive.open(info) as fh:
                _check_npy_header(fh, where)
            return check_events(read_npz_member(archive, info, where), where)
    except ShapeError:
        raise
    except Exception as exc:
        raise ShapeError(f"{path}: not a readable .npz archive ({type(exc).__name__})") from exc


def npz_events_member(names: list[str]) -> str | None:
    """The member of a .npz archive that holds the events: ``events.npy`` or the only one."""
    return "events.npy" if "events.npy" in names else names[0] if len(names) == 1 else None


def read_npy_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header, reading nothing past it; ShapeError if unreadable."""
    shape, _, dtype = _npy_header(fh, where)
    return shape, dtype


def _check_npy_header(fh: IO[bytes], where: str) -> None:
    """Refuse a non-structured, object-holding or oversized array from its .npy header."""
    shape, dtype = read_npy_header(fh, where)
    if dtype.hasobject:
        raise ShapeError(f"{where}: object fields are refused (dtype {dtype})")
    check_events(np.empty(0, dtype=dtype), where)  # field names and types, nothing allocated
    if len(shape) != 1 or shape[0] > MAX_EVENTS:
        raise ShapeError(f"{where}: expected one event per row, at most {MAX_EVENTS}, got {shape}")


def raw_encoding(path: Path) -> str:
    """ "evt3" or "evt2", from a Prophesee .raw file's '%' header lines."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    for line in head.split(b"\n"):
        if not line.startswith(b"%"):
            break
        words = line[1:].replace(b";", b" ").lower().split()
        if words[:2] in ([b"evt", b"3.0"], [b"format", b"evt3"]):
            return "evt3"
        if words[:2] in ([b"evt", b"2.0"], [b"format", b"evt2"]):
            return "evt2"
    raise ShapeError(f"{path}: no '% evt 3.0' or '% format EVT3' header line (EVT2 and EVT3 read)")


def read_aedat4(path: Path) -> np.ndarray:
    """The polarity events of the first event stream of an AEDAT 4 file."""
    aedat = _optional("aedat", ".aedat4")
    try:
        decoder = aedat.Decoder(str(path))
        streams = [i for i, s in decoder.id_to_stream().items() if s["type"] == "events"]
        if not streams:
            raise ShapeError(f"{path}: no event stream in this AEDAT 4 file")
        packets, total = [], 0
        for packet in decoder:
            if packet["stream_id"] == streams[0] and "events" in packet:
                total += len(packet["events"])
                _check_count(total, path)
                packets.append(packet["events"])
    except ShapeError:
        raise
    except Exception as exc:
        raise ShapeError(f"{path}: not a readable AEDAT 4 file ({exc})") from exc
    if not packets:
        return np.zeros(0, EVENT_DTYPE)
    raw = np.concatenate(packets)
    return _as_events(raw["x"], raw["y"], raw["t"], raw["on"], path)


def read_evt3(path: Path) -> np.ndarray:
    """The events of a Prophesee EVT 3.0 .raw file (``evt3`` package), in batches."""
    evt3 = _optional("evt3", "EVT 3.0 .raw")
    parts, total = [], 0
    try:
        for batch in evt3.decode_file_batches(str(path)):
            total += len(batch)
            _check_count(total, path)
            parts.append(_as_events(batch.x, batch.y, batch.t, batch.p, path))
    except ShapeError:
        raise
    except Exception as exc:
        raise ShapeError(f"{path}: not a readable EVT 3.0 file ({exc})") from exc
    return np.concatenate(parts) if parts else np.zeros(0, EVENT_DTYPE)


def read_expelliarmus(path: Path, encoding: str, size: int) -> np.ndarray:
    """The events of an EVT 2.0 .raw or a DAT file (``expelliarmus``)."""
    if size > _BYTES_PER_EVENT[encoding] * MAX_EVENTS:
        raise ShapeError(f"{path}: could hold more than {MAX_EVENTS} events")
    expelliarmus = _optional("expelliarmus", f"{encoding.upper()} {path.suffix}")
    said: list[str] = []  # the C reader reports on file descriptor 2, and returns None
    try:
        with _c_stderr(said):
            raw = expelliarmus.Wizard(encoding=encoding).read(path)
    except Exception as exc:
        why = _c_error(said) or str(exc).strip().partition("\n")[0] or type(exc).__name__
        raise ShapeError(f"{path}: not a readable {encoding.upper()} file ({why})") from exc
    fields = getattr(getattr(raw, "dtype", None), "names", None) or ()
    if not isinstance(raw, np.ndarray) or not {"x", "y", "t", "p"} <= set(fields):
        why = _c_error(said) or "the decoder returned nothing: truncated or empty"
        raise ShapeError(f"{path}: not a readable {encoding.upper()} file ({why})")
    return _as_events(raw["x"], raw["y"], raw["t"], raw["p"], path)


@contextlib.contextmanager
def _c_stderr(lines: list[str]) -> Iterator[None]:
    """What C code writes to file descriptor 2 inside the block is kept in ``lines`` instead
    of reaching the terminal (errors are reported in one line of our own)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read(MAX_HEADER_BYTES).decode(errors="replace").splitlines()


def _c_error(lines: list[str]) -> str:
    """The C reader's first ``ERROR:`` line, without the prefix ("" when it printed none)."""
    for line in lines:
        if line.startswith("ERROR:"):
            return line.removeprefix("ERROR:").strip().rstrip(".")
    return ""


def _as_events(x: object, y: object, t: object, p: object, path: Path) -> np.ndarray:
    t = np.asarray(t)
    if t.dtype.kind == "u" and len(t) and int(t.max()) >= 1 << 63:
        raise ShapeError(f"{path}: timestamps above 2**63 µs")
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def _check_count(total: int, path: Path) -> None:
    if total > MAX_EVENTS:
        raise ShapeError(f"{path}: more than {MAX_EVENTS} events")


def _optional(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"reading {what} files needs the '{module}' package: pip install -e '.[events]'"
        ) from exc
