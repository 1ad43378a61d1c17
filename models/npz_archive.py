""".npz archives (``np.savez``) read without unpickling, with memory bounded by the file.

Every reader of a .npz (``--input``, ``--calib``, eval data, event streams) goes through
``npz_members`` before anything is decompressed: at most ``max_members`` members, each named
``NAME.npy`` and no two alike (a duplicate would be resolved silently: numpy takes the last,
a zip lister shows the first), stored or deflated and not encrypted, their declared sizes
within ``max_total_bytes``, and each member and the whole file within the compression-ratio
rule every compressed reader here applies (``inflation_problem``). ``read_npz_member`` then
checks the member's .npy header (no object fields, no more data declared than the member
holds) before it allocates the array, and reads the data once, straight into it.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np

from ganglion.models.errors import ShapeError, first_line, inflation_problem


@dataclass(frozen=True)
class NpzLimits:
    """Caps checked from the zip directory, before anything is decompressed."""

    max_members: int = 1024
    max_total_bytes: int = 4 << 30  # declared unpacked bytes, all members together
    max_ratio: float = 200.0  # unpacked / packed bytes, of one member and of the file ...
    ratio_floor_bytes: int = 16 << 20  # ... once the unpacked bytes pass this


def npz_members(
    archive: zipfile.ZipFile, where: str, file_bytes: int, limits: NpzLimits = NpzLimits()
) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name (``x`` for ``x.npy``), checked as the module
    docstring says; a one-line ShapeError naming ``where`` (the file) and the member."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ShapeError(f"{where}: more than {limits.max_members} arrays")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise ShapeError(f"{where}: member {name!r} is not an array (.npy)")
        if name[:-4] in members:
            raise ShapeError(f"{where}: two members named {name!r}")
        if info.flag_bits & 0x1:
            raise ShapeError(f"{where}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ShapeError(
                f"{where}: member {name!r} uses compression method {info.compress_type} "
                "(stored or deflate, as np.savez writes)"
            )
        bomb = inflation_problem(
            info.file_size, info.compress_size, limits.max_ratio, limits.ratio_floor_bytes
        )
        if bomb is not None:
            raise ShapeError(f"{where}: member {name!r} {bomb}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ShapeError(
                f"{where}: its arrays unpack to more than {limits.max_total_bytes >> 30} GiB"
            )
        members[name[:-4]] = info
    bomb = inflation_problem(total, file_bytes, limits.max_ratio, limits.ratio_floor_bytes)
    if bomb is not None:
        raise ShapeError(f"{where}: its members together {bomb}")
    return members


def unreadable(where: str, what: str, exc: BaseException) -> ShapeError:
    """The one-line error for a file numpy or zipfile could not read: the file, what it should
    have been, and the reader's own first words (a header's bad length, a truncated member)."""
    return ShapeError(
        f"{where}: not a readable {what} ({type(exc).__name__}: {first_line(exc, 120)})"
    )


def read_npy_header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a .npy header, reading nothing past it; ShapeError
    naming ``where`` if unreadable."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
    except Exception as exc:
        raise unreadable(where, ".npy array", exc) from exc
    raise ShapeError(f"{where}: .npy format {version} is not read (1.0 and 2.0 are)")


def read_npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """The array in one member (from ``npz_members``): its header checked first (object
    fields refused, no more data declared than the member holds), then read once, in chunks,
    into the array (numpy's reader, never unpickling)."""
    with archive.open(info) as fh:
        shape, _, dtype = read_npy_header(fh, where)
        if dtype.hasobject:
            raise ShapeError(f"{where}: object fields are refused (dtype {dtype})")
        declared = math.prod(shape) * dtype.itemsize
        held = info.file_size - fh.tell()
        if declared > held:
            raise ShapeError(
                f"{where}: its header declares {declared} bytes of data ({list(shape)} "
                f"{dtype}), the member holds {held}"
            )
        fh.seek(0)
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except Exception as exc:
            raise unreadable(where, ".npy array", exc) from exc
