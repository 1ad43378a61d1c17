"""Arrays in and out of the command line: ``.npy``/``.npz`` read without unpickling, written
atomically to exactly the path given.

``--input IN.npy`` feeds a single-input program; ``--input NAME=IN.npy`` (repeated) or
``--input IN.npz`` (its arrays by name) feed named inputs. ``--output OUT.npy`` takes a single
output, ``--output OUT.npz`` any number of outputs by name.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ganglion.models.errors import ShapeError, file_problem
from ganglion.models.npz_archive import (
    npz_members,
    read_npy_header,
    read_npz_member,
    unreadable,
)
from ganglion.runtime.atomic import atomic_file, check_target
from ganglion.runtime.cli.pairs import option_pairs

MAX_ARRAY_BYTES = 4 << 30  # a file above this is refused before it is read


def _check_file(path: Path) -> None:
    if (problem := file_problem(path)) is not None:
        raise ShapeError(f"{path}: {problem}")
    if path.stat().st_size > MAX_ARRAY_BYTES:
        raise ShapeError(f"{path}: larger than {MAX_ARRAY_BYTES >> 30} GiB")


def _usable(array: np.ndarray, where: str) -> np.ndarray:
    """``array`` in native byte order (swapped in place: no second copy); a ShapeError naming
    ``where`` if it holds no values."""
    if array.size == 0:
        raise ShapeError(f"{where}: holds no values (shape {list(array.shape)})")
    if not array.dtype.isnative:
        if array.dtype.names is None and array.flags.writeable:
            return array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _check_declared_size(path: Path) -> None:
    """ShapeError naming the shape when a .npy header declares more data than the file holds
    (numpy would try to allocate it: a 2**40-element header failed as a bare MemoryError)."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            return  # not a .npy (an .npz, or nothing numpy reads): np.load says which
        fh.seek(0)
        try:
            shape, _, dtype = read_npy_header(fh, str(path))
        except ShapeError:
            return  # a version this reader does not know: np.load reads or refuses it
        declared = math.prod(shape) * dtype.itemsize
        held = path.stat().st_size - fh.tell()
        if declared > held:
            raise ShapeError(
                f"{path}: its header declares {list(shape)} {dtype} ({declared} bytes), the "
                f"file holds {held} bytes of data"
            )


def read_npy(path: Path) -> np.ndarray:
    """One array from a .npy file (never unpickled); one-line ShapeError otherwise."""
    _check_file(path)
    _check_declared_size(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise unreadable(str(path), ".npy array", exc) from exc
    if not isinstance(data, np.ndarray):
        data.close()
        raise ShapeError(f"{path}: an .npz archive; give one array saved with np.save (.npy)")
    return _usable(data, str(path))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file by name (never unpickled; member names, count, declared
    sizes and compression ratios checked before anything is unpacked: ``npz_members``)."""
    _check_file(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
            members = npz_members(archive, str(path), os.fstat(raw.fileno()).st_size)
            for name, info in members.items():
                where = f"{path}: array {name!r}"
                arrays[name] = _usable(read_npz_member(archive, info, where), where)
    except ShapeError:
        raise
    except Exception as exc:
        raise unreadable(str(path), ".npz archive", exc) from exc
    return arrays


def load_calibration(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Array ``x`` (and optional labels ``y``) from a .npz file, never unpickling; NaN or
    infinity in ``x`` is refused with its first index."""
    data = read_npz(path)
    if "x" not in data:
        raise ShapeError(f"{path}: needs an array named 'x' (has {sorted(data)})")
    x = data["x"]
    check_finite_array(path, "x", x)
    return x, data.get("y")


def check_finite_array(path: Path, name: str, array: np.ndarray) -> None:
    """ShapeError naming ``path``, the array and the first NaN or infinity in it."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ShapeError(f"{path}: array {name!r} holds {array[index]} at index {index}")


def read_inputs(specs: list[str]) -> np.ndarray | dict[str, np.ndarray]:
    """``--input`` values: one PATH.npy (a bare array), PATH.npz, or NAME=PATH entries."""
    if not specs:
        raise ShapeError("give --input IN.npy, --input IN.npz or --input NAME=IN.npy")
    if len(specs) == 1 and "=" not in specs[0]:
        path = Path(specs[0])
        return read_npz(path) if path.suffix == ".npz" else read_npy(path)
    files = option_pairs(specs, "--input", "NAME=FILE.npy (one per input)", ShapeError)
    return {name: read_npy(Path(file)) for name, file in files.items()}


def input_paths(specs: list[str]) -> list[str]:
    """The files named by ``--input`` values (PATH or NAME=PATH)."""
    return [spec.partition("=")[2] if "=" in spec else spec for spec in specs]


def check_output_path(path: Path, force: bool = False, reads: Iterable[Path | str] = ()) -> None:
    """ShapeError unless ``path`` ends in .npy/.npz and is new (or ``force`` and a file),
    outside any bundle, and none of the files the command reads (``reads``)."""
    if path.suffix not in (".npy", ".npz"):
        raise ShapeError(f"--output {path}: must end in .npy (one output) or .npz (by name)")
    if path.is_dir():
        raise ShapeError(f"--output {path} is a folder")
    check_target(path, force, reads)


def write_outputs(
    outputs: np.ndarray | dict[str, np.ndarray], path: Path, force: bool = False
) -> None:
    """Write outputs to exactly ``path`` (.npy: one array, .npz: by name), atomically; an
    existing file is replaced only with ``force``."""
    check_output_path(path, force)
    if isinstance(outputs, dict) and len(outputs) > 1 and path.suffix == ".npy":
        names = ", ".join(outputs)
        raise ShapeError(f"--output {path}: the program has several outputs ({names}); use .npz")
    with atomic_file(path, force) as tmp, open(tmp, "wb") as fh:
        if path.suffix == ".npz":
            named = outputs if isinstance(outputs, dict) else {"output": outputs}
            np.savez(fh, **named)
        else:
            single = outputs if not isinstance(outputs, dict) else next(iter(outputs.values()))
            np.save(fh, single, allow_pickle=False)


def describe_outputs(outputs: np.ndarray | dict[str, np.ndarray]) -> str:
    """``logits [2, 16, 256] float32`` for each output."""
    named = outputs if isinstance(outputs, dict) else {"output": outputs}
    return ", ".join(f"{n} {list(a.shape)} {a.dtype}" for n, a in named.items())
