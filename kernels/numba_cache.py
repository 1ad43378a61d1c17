"""numba's on-disk cache of Ganglion's compiled loops, renewed when any of their sources changes.

numba stamps a cached function with its own file only, so a loop that inlines code from another
file (``kernels.simd``'s vectors, ``scan_loops``' neuron update, ``kernels.fma``) would keep
running the old machine code after that other file changed: a silent wrong answer, or, with
``simd.LANES`` changed, writes out of bounds. Importing this module (every module that compiles
with ``cache=True`` does, before its first decorator) puts cache locators first in numba's list
that, for a function defined under one of ``SOURCE_ROOTS`` (``kernels/``,
``runtime/selection/``), stamp the cache with a digest of every Python file under that root as
well: a change to any of them compiles that root's loops again. The cache stays where numba
keeps it (beside the source, a user-wide folder where that is read-only, or
``NUMBA_CACHE_DIR``). A numba without these locator classes keeps its own stamps.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from numba.core import caching

_HERE = Path(__file__).resolve().parent
SOURCE_ROOTS = (_HERE, _HERE.parent / "runtime" / "selection")


@cache
def sources_digest(root: Path) -> str:
    """SHA-256 over the relative path and bytes of every ``*.py`` file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _root_of(py_file: str) -> Path | None:
    path = Path(py_file).resolve()
    return next((root for root in SOURCE_ROOTS if path.is_relative_to(root)), None)


class _RootStamp:
    """A locator of numba's for Ganglion's files only, whose stamp also covers their root."""

    @classmethod
    def from_function(cls, py_func, py_file):  # noqa: ANN001, ANN206
        """numba's own choice, for a function defined under ``SOURCE_ROOTS``; else None."""
        return None if _root_of(py_file) is None else super().from_function(py_func, py_file)

    def get_source_stamp(self):  # noqa: ANN201
        """numba's stamp of the file, and the digest of its root's sources."""
        return super().get_source_stamp(), sources_digest(_root_of(self._py_file))


def _numba_class(name: str) -> type | None:
    """numba's class ``name`` (public from numba 0.62 on, with a leading underscore before)."""
    return getattr(caching, name, None) or getattr(caching, f"_{name}", None)


def _register() -> None:
    impl = _numba_class("CacheImpl")
    bases = [_numba_class(f"{kind}CacheLocator") for kind in ("UserProvided", "InTree", "UserWide")]
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list) or any(base is None for base in bases):
        return
    if any(issubclass(c, _RootStamp) for c in classes if isinstance(c, type)):
        return  # registered already
    ours = [type(f"Ganglion{base.__name__.lstrip('_')}", (_RootStamp, base), {}) for base in bases]
    classes[:0] = ours


_register()
