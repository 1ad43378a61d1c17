"""Bundles as tar archives: extract one into a temporary folder that never outlives its use,
and write one atomically.

``extracted_bundle`` streams the tar (plain, gzip, bzip2 or xz) once, checking as it goes:
member count, each member's declared size, the total, and the bytes decompressed against
the archive's size (a compression bomb is stopped after at most ``ratio_floor_bytes`` or
``max_ratio`` times the archive, whichever is larger). Only regular files and directories
are written, under relative names without ``..``, each name once; links, devices, FIFOs and
sparse members are refused. Errors are BundleError naming the tar file. The folder is
removed when the ``with`` block ends, however it ends (error or KeyboardInterrupt included).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ganglion.models.errors import BundleError, file_problem, inflation_limit
from ganglion.runtime.atomic import atomic_file

TEMP_PREFIX = "ganglion-bundle-"
_COPY_CHUNK = 1 << 20
_DECOMPRESSORS = {  # magic bytes -> opener of a decompressing stream
    b"\x1f\x8b": gzip.GzipFile,
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


@dataclass(frozen=True)
class TarLimits:
    """Caps checked while the archive streams in, before the bytes they bound are written."""

    max_members: int = 1_000
    max_member_bytes: int = 4 << 30  # one file's declared size
    max_total_bytes: int = 4 << 30  # all files' declared sizes
    max_ratio: float = 100.0  # bytes decompressed / bytes of the archive ...
    ratio_floor_bytes: int = 64 << 20  # ... checked once this many bytes were decompressed
    header_allowance_bytes: int = 1 << 20  # tar headers on top of the files' bytes


class _BoundedReader:
    """A read-only stream that refuses to deliver more than ``limit`` bytes in total."""

    def __init__(self, raw: IO[bytes], limit: int, archive: Path) -> None:
        self.raw, self.limit, self.archive = raw, limit, archive
        self.delivered = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes; BundleError once more than ``limit`` were asked for."""
        allowed = self.limit - self.delivered + 1  # one byte past the limit proves overflow
        chunk = self.raw.read(allowed if size is None or size < 0 else min(size, allowed))
        self.delivered += len(chunk)
        if self.delivered > self.limit:
            raise BundleError(
                f"{self.archive}: expands to more than {self.limit} bytes "
                "(a compression bomb or an oversized bundle)"
            )
        return chunk


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The member's relative name (None for the root folder, as ``tar -C dir .`` writes it);
    absolute names, ``..`` and odd characters are refused."""
    name = member.name
    path = PurePosixPath(name)
    if not name or "\x00" in name or "\\" in name or path.is_absolute() or ".." in path.parts:
        raise BundleError(f"{archive}: member {name!r} has an absolute or parent-relative name")
    parts = [p for p in path.parts if p != "."]
    if not parts and not member.isdir():
        raise BundleError(f"{archive}: member {name!r} is a file named like the root folder")
    return PurePosixPath(*parts) if parts else None


def _check_member(member: tarfile.TarInfo, archive: Path, limits: TarLimits) -> None:
    if member.type not in (*_REGULAR, tarfile.DIRTYPE) or member.issparse():
        kind = "a sparse file" if member.issparse() else f"type {member.type!r}"
        raise BundleError(
            f"{archive}: member {member.name!r} is {kind}; bundles hold only files and folders"
        )
    if member.size > limits.max_member_bytes:
        raise BundleError(
            f"{archive}: member {member.name!r} declares {member.size} bytes "
            f"(limit {limits.max_member_bytes})"
        )


def _write_file(source: IO[bytes], target: Path, size: int) -> None:
    """Copy exactly ``size`` bytes into a new file (never through an existing name)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        remaining = size
        while remaining:
            chunk = source.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            out.write(chunk)
            remaining -= len(chunk)


def _extract(archive: Path, target: Path, limits: TarLimits) -> None:
    archive_bytes = archive.stat().st_size
    stream_limit = min(
        limits.max_total_bytes + limits.header_allowance_bytes,
        inflation_limit(archive_bytes, limits.max_ratio, limits.ratio_floor_bytes),
    )
    with open(archive, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        opener = next((o for magic, o in _DECOMPRESSORS.items() if head.startswith(magic)), None)
        with opener(fileobj=raw) if opener else contextlib.nullcontext(raw) as plain:
            reader = _BoundedReader(plain, stream_limit, archive)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                _extract_members(tar, archive, target, limits)


def _extract_members(tar: tarfile.TarFile, archive: Path, target: Path, limits: TarLimits) -> None:
    seen: set[PurePosixPath] = set()
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise BundleError(f"{archive}: more than {limits.max_members} members")
        _check_member(member, archive, limits)
        relative = _member_path(member, archive)
        if relative is None:
            continue
        if relative in seen:
            raise BundleError(f"{archive}: member {member.name!r} appears twice")
        seen.add(relative)
        destination = target.joinpath(*relative.parts)
        if member.isdir():
            destination.mkdir(mode=0o700, parents=True, exist_ok=True)
            continue
        total += member.size
        if total > limits.max_total_bytes:
            raise BundleError(
                f"{archive}: members declare more than {limits.max_total_bytes} bytes"
            )
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:
            raise BundleError(f"{archive}: member {member.name!r} has no data")
        _write_file(source, destination, member.size)


@contextlib.contextmanager
def extracted_bundle(path: str | Path, limits: TarLimits = TarLimits()) -> Iterator[Path]:
    """Extract a bundle tar (plain or compressed) into a fresh temporary folder, yield the
    folder, and remove it on exit, however the block ends. BundleError names the tar."""
    archive = Path(path)
    if (problem := file_problem(archive)) is not None:
        raise BundleError(f"{archive}: {problem} (a bundle archive is a .tar file)")
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        try:
            _extract(archive, folder, limits)
        except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as exc:
            detail = type(exc).__name__ if isinstance(exc, OSError) else str(exc)
            raise BundleError(f"{archive}: not a readable bundle archive ({detail})") from None
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_bundle_tar(folder: str | Path, path: str | Path, force: bool = False) -> Path:
    """Write ``folder``'s files and subfolders as the tar ``path``, atomically (a temporary
    sibling renamed into place, ``runtime.atomic``), with owner names stripped. Symbolic
    links and special files are refused (BundleError); an existing ``path`` needs ``force``."""
    folder, path = Path(folder), Path(path)
    entries = sorted(folder.rglob("*"))
    for entry in entries:
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            raise BundleError(f"{entry}: only files and folders go into a bundle archive")
    with atomic_file(path, force) as temporary, tarfile.open(temporary, "w") as tar:
        for entry in entries:
            arcname = entry.relative_to(folder).as_posix()
            tar.add(entry, arcname=arcname, recursive=False, filter=_normalized)
    return path
