"""Make lava-nc 0.10.0 importable on Python 3.11, without touching site-packages.

Why: ``lava/magma/compiler/var_model.py`` declares dataclass fields such as
``x: ByteEncoder = ByteEncoder()``. Since Python 3.11 ``dataclasses`` rejects an unhashable
instance as a default ("mutable default ... use default_factory"), so ``import lava`` fails.

How: ``install()`` puts a meta-path finder in front of the normal one for that one module. It
loads the module's own source from Lava's installation and rewrites exactly those defaults to
``dataclasses.field(default_factory=ByteEncoder)`` before compiling it; the rewritten module
behaves as Lava intended (a fresh encoder per instance). Every other module loads untouched,
and where Lava's source no longer contains the pattern the finder changes nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from types import ModuleType

PATCHED_MODULE = "lava.magma.compiler.var_model"
_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)$", re.MULTILINE)
_REPLACEMENT = r"\1 = __import__('dataclasses').field(default_factory=ByteEncoder)"


def patched_source(source: str) -> str:
    """``var_model.py``'s source with every ``= ByteEncoder()`` default made a factory."""
    return _MUTABLE_DEFAULT.sub(_REPLACEMENT, source)


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    """Loads one source file through ``patched_source``."""

    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        text = patched_source(importlib.util.decode_source(data))
        return compile(text, path, "exec", dont_inherit=True, optimize=_optimize)

    def get_code(self, fullname: str):  # type: ignore[override]
        # Never use the cached bytecode of the unpatched file.
        return self.source_to_code(
            self.get_data(self.get_filename(fullname)), self.get_filename(fullname)
        )


class _VarModelFinder(importlib.abc.MetaPathFinder):
    """Finds ``PATCHED_MODULE`` with the ordinary path finder, then swaps in the patching loader."""

    def find_spec(self, fullname: str, path=None, target: ModuleType | None = None):
        if fullname != PATCHED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _PatchingLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Register the finder once (idempotent); call before the first ``import lava``."""
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())
