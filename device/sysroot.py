"""Paths under a filesystem root, so detection runs the same on a device and on a fixture tree.

A root is a folder laid out like ``/`` on the device (``sys/``, ``proc/``, ``etc/``, ``var/``).
Absolute symlinks inside it (``/etc/nvpmodel.conf -> /etc/nvpmodel/...``) are followed inside
the root, as ``chroot`` would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

FileReader = Callable[[Path], str]
"""Reads one file's text; meters take one so tests can inject I/O errors."""

_MAX_LINKS = 16


def read_text(path: Path) -> str:
    """Read a sysfs/procfs file's text (the default ``FileReader``)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def under(root: str | os.PathLike[str], path: str) -> Path:
    """Return ``path`` (absolute, as on the device) inside ``root``, resolving symlinks in any of
    its components inside the root (an absolute link target is taken relative to ``root``)."""
    root_path = Path(root)
    pending = [p for p in path.split("/") if p]
    current = root_path
    links = 0
    while pending:
        current = current / pending.pop(0)
        if current.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise OSError(f"too many levels of symbolic links under {root_path}: {path}")
            target = os.readlink(current)
            if os.path.isabs(target):
                current = root_path
            else:
                current = current.parent
            pending = [p for p in target.split("/") if p] + pending
    return current


def read_optional(root: str | os.PathLike[str], path: str) -> str | None:
    """Read ``path`` under ``root``; ``None`` when it is absent or unreadable."""
    try:
        return read_text(under(root, path))
    except OSError:
        return None
