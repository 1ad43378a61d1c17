"""Atomic writes: build in a temporary sibling, rename into place at the end.

A failed write leaves nothing behind and never touches what was there; an existing target is
refused unless ``force``, which replaces it as a whole (a folder is never merged into).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ganglion.models.errors import GanglionError


class TargetExists(GanglionError):
    """The output path exists and ``--force`` was not given."""


def check_target(path: Path, force: bool) -> None:
    """Refuse to write over an existing file or non-empty folder unless ``force``."""
    if force or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    raise TargetExists(f"{path} already exists; choose a new path or pass --force to replace it")


@contextlib.contextmanager
def atomic_file(path: Path, force: bool = False) -> Iterator[Path]:
    """A temporary sibling path to write; renamed onto ``path`` when the block succeeds."""
    check_target(path, force)
    if path.is_dir():
        raise TargetExists(f"{path} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: Path, force: bool = False) -> Iterator[Path]:
    """A temporary sibling folder path to fill (not yet created); renamed onto ``path`` when
    the block succeeds, removed when it fails. With ``force`` an old ``path`` is replaced."""
    check_target(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    work = tmp / "new"
    try:
        yield work
        if path.exists() or path.is_symlink():
            os.replace(path, tmp / "old")
        os.replace(work, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
