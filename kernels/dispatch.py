"""One switch for every kernel: use Triton on CUDA unless ``GANGLION_KERNELS=0``."""

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

import torch

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


def use_triton(use_kernel: bool | None, *tensors: torch.Tensor) -> bool:
    """Decide between the Triton kernel and the PyTorch reference.

    Args:
        use_kernel: ``True`` forces the kernel, ``False`` the reference; ``None`` picks the
            kernel when kernels are enabled and every tensor lives on a CUDA device.
        tensors: the op's tensor arguments.
    """
    if use_kernel is not None:
        return use_kernel
    return kernels_enabled() and all(t.is_cuda for t in tensors)
