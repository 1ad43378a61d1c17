"""Atomic writes: build in a temporary sibling, rename into place at the end.

A failed write leaves nothing behind and never touches what was there; an existing target is
refused unless ``force``, which replaces it as a whole (a folder is never merged into); a
non-empty folder is replaced only when it is an intact bundle (an old output, every file as the
manifest lists it): ``-o ~ --force`` must not take a home folder with it, nor a folder that
merely holds files named like a bundle's. Nothing is ever written inside a bundle folder (it
would hold a file its manifest does not list), and the current folder or one above it is never
replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ganglion.models.errors import GanglionError, first_line

BUNDLE_MARKERS = ("manifest.json", "config.json")  # every bundle folder holds both


class TargetExists(GanglionError):
    """The output path exists and ``--force`` was not given, or it cannot be replaced."""


def check_target(path: Path, force: bool, reads: Iterable[Path | str | None] = ()) -> None:
    """Refuse to write over an existing file or non-empty folder unless ``force``; never
    write inside a bundle, nor replace the current folder or one above it, nor (``reads``) a
    file or folder the command reads, or a folder holding one, even with ``force``."""
    check_outside_bundles(path)
    check_not_read(path, reads)
    _check_parent_folders(path)
    exists = path.exists() or path.is_symlink()
    if exists and not (path.is_file() or path.is_dir() or path.is_symlink()):
        raise TargetExists(f"{path} is a device, pipe or socket; write to a file instead")
    if exists and path.is_dir() and not path.is_symlink():
        here = Path.cwd().resolve()
        if path.resolve() == here or path.resolve() in here.parents:
            raise TargetExists(f"{path} holds the current folder; it cannot be replaced")
    if not exists:
        return
    folder = path.is_dir() and not path.is_symlink()
    if folder and not any(path.iterdir()):
        return
    if folder and force and (why := _not_an_intact_bundle(path)) is not None:
        raise TargetExists(
            f"{path} is a folder that is not a Ganglion bundle as written ({why}); --force "
            "replaces a file or an old bundle, never other folders (remove it yourself, or "
            "choose a new path)"
        )
    if not force:
        raise TargetExists(
            f"{path} already exists; choose a new path or pass --force to replace it"
        )


def _check_parent_folders(path: Path) -> None:
    """Refuse a path below a file (``-o notes.txt/out``): its nearest existing parent must be
    a folder (the folders missing above ``path`` are created when it is written)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TargetExists(f"{path}: {parent} is a file, not a folder; choose another path")
            return


def _not_an_intact_bundle(path: Path) -> str | None:
    """Why folder ``path`` is not a bundle exactly as Ganglion wrote it (its manifest valid,
    every listed file matching its SHA-256, no other file, members likewise), or None: only
    such a folder is an old output that ``--force`` may replace. Two files named like a
    bundle's (a web app's manifest.json and config.json) or a user's notes added to a bundle
    are not."""
    from ganglion.runtime.bundle import open_bundle  # bundle imports this module

    try:
        with open_bundle(path):
            return None
    except (GanglionError, OSError) as exc:
        return first_line(exc, 200)


def is_bundle_folder(path: Path) -> bool:
    """Whether folder ``path`` is a bundle (it holds every one of ``BUNDLE_MARKERS``)."""
    return all((path / name).is_file() for name in BUNDLE_MARKERS)


def check_not_read(path: Path, reads: Iterable[Path | str | None]) -> None:
    """Refuse ``path`` when it is one of ``reads`` (the command's inputs; None skipped) or a
    folder holding one: ``--force`` replaces an old output, never the input being converted."""
    target = Path(path).resolve()
    for source in reads:
        if source is None:
            continue
        resolved = Path(source).resolve()
        if resolved == target or target in resolved.parents:
            raise TargetExists(
                f"{path} is read by this command ({source}); write the output to another path"
            )


def check_outside_bundles(path: Path) -> None:
    """Refuse ``path`` when a folder above it is a bundle: a file written there would be one
    its manifest does not list, and the bundle would no longer load."""
    for folder in Path(path).resolve().parents:
        if is_bundle_folder(folder):
            raise TargetExists(
                f"{path} is inside the bundle {folder}; write outputs outside any bundle"
            )


@contextlib.contextmanager
def atomic_file(path: Path, force: bool = False) -> Iterator[Path]:
    """A temporary sibling path to write, ending in ``path``'s suffix (writers such as
    ``torch.export.save`` warn about any other); renamed onto ``path`` when the block succeeds."""
    check_target(path, force)
    if path.is_dir():
        raise TargetExists(f"{path} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp's 0600 would hide it from others
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def process_umask() -> int:
    """This process's umask, read without changing it (Linux's /proc; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
