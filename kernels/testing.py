"""Where the kernel tests run: the Triton interpreter on CPU tensors (CI), or compiled on a GPU.

The test suite sets ``TRITON_INTERPRET=1`` unless it is already ``0``; with ``0`` and a CUDA
GPU, the same tests build the kernels with Triton's compiler and run them on that GPU.
"""

import os

import torch


def kernel_test_device() -> str:
    """``"cuda"`` when kernels are compiled (``TRITON_INTERPRET=0``) and a GPU is visible,
    else ``"cpu"`` (interpreted)."""
    compiled = os.environ.get("TRITON_INTERPRET", "1") == "0"
    return "cuda" if compiled and torch.cuda.is_available() else "cpu"
