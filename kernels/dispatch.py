"""Triton or the reference: Triton on CUDA unless kernels are off (``kernels/switch.py``)."""

import torch

from ganglion.kernels.switch import kernels_enabled


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
