"""One switch for every kernel: use Triton on CUDA unless ``GANGLION_KERNELS=0``."""

import os

import torch


def kernels_enabled() -> bool:
    """Whether Triton kernels may be used at all (env var ``GANGLION_KERNELS``, default on)."""
    return os.environ.get("GANGLION_KERNELS", "1").strip().lower() not in ("0", "false", "off")


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
