"""The compiled-kernel switch, torch-free: ``GANGLION_KERNELS=0`` turns every compiled path off
(Triton on CUDA, the numba CPU loops), and ``reference_kernels()`` does so inside a block.
ONNX Runtime's layer-wise run reads it without importing torch (``kernels/dispatch.py`` adds
the Triton choice)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from collections.abc import Iterator

_REFERENCE_ONLY = contextvars.ContextVar("ganglion_reference_only", default=False)


def kernels_enabled() -> bool:
    """Whether compiled kernels (Triton, the numba CPU scans) may be used at all: env var
    ``GANGLION_KERNELS`` (default on), and not inside ``reference_kernels()``."""
    if _REFERENCE_ONLY.get():
        return False
    return _switch_on(os.environ.get("GANGLION_KERNELS", "1"))


@functools.lru_cache(maxsize=8)
def _switch_on(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "off")


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Run the PyTorch references inside (for op counting, which sees only torch ops)."""
    token = _REFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _REFERENCE_ONLY.reset(token)


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def cpu_scan_available() -> bool:
    """Whether the compiled CPU scans may be used: numba installed and kernels enabled."""
    return _numba_installed() and kernels_enabled()
