"""Errors Ganglion raises for bad input; each carries a one-line, user-facing reason."""

import os
from pathlib import Path


class GanglionError(Exception):
    """Base class: the message is one line a user can act on."""


class ConversionError(GanglionError):
    """A model cannot be converted (unsupported layer, missing calibration data, ...)."""


class BundleError(GanglionError):
    """A bundle is missing, malformed, corrupt or tampered with."""


class NIRError(GanglionError):
    """An NIR file cannot be read or uses something Ganglion does not support."""


class ShapeError(GanglionError):
    """An input has the wrong shape or dtype for the program."""


class BackendUnavailable(GanglionError):
    """A backend cannot run here (missing package, no device, unsupported program)."""


class OptionError(GanglionError, ValueError):
    """An argument or backend option is unknown, of the wrong type or out of range: the
    caller's to fix, not a sign the backend cannot run here (the command line exits 2)."""


class BackendFailure(GanglionError):
    """A loaded program failed inside its backend's runtime on inputs that passed the checks."""


def file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a file ("no such file", "is a folder, not a file", "is
    not a regular file" for devices, pipes and sockets), or None for a regular file."""
    target = Path(path)
    if target.is_file():
        return None
    if target.is_dir():
        return "is a folder, not a file"
    return "is not a regular file" if target.exists() else "no such file"


def inflation_problem(declared: int, stored: int, max_ratio: float, floor_bytes: int) -> str | None:
    """Why ``declared`` bytes unpacked from ``stored`` compressed bytes look like a compression
    bomb, or None: every compressed reader (zip members of a .pt2 or .npz, HDF5 datasets, tar
    streams) applies this one rule. Up to ``floor_bytes`` anything goes (small members may
    compress as well as they like); above it, at most ``max_ratio`` times what is stored."""
    if declared <= inflation_limit(stored, max_ratio, floor_bytes):
        return None
    ratio = declared / max(stored, 1)
    return (
        f"declares {declared} bytes for {stored} stored: compression ratio {ratio:.0f} "
        f"(limit {max_ratio:g}, a compression bomb)"
    )


def inflation_limit(stored: int, max_ratio: float, floor_bytes: int) -> int:
    """The most bytes ``stored`` compressed bytes may unpack to (``inflation_problem``'s rule)."""
    return max(floor_bytes, int(max_ratio * stored))


def first_line(message: BaseException | str, limit: int | None = None) -> str:
    """The first line of ``message`` (an exception's text: its type's name when it has none),
    at most ``limit`` characters (cut with "…"): how another library's or a node's words enter
    our one-line errors and logs."""
    text = str(message).strip()
    if isinstance(message, BaseException) and not text:
        return type(message).__name__
    line = (text.splitlines() or [""])[0]
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
