"""Argument checks shared by the kernels: each raises ``ValueError("expected X, got Y")``."""

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


def expect_shape(name: str, tensor: torch.Tensor, shape: Sequence[int]) -> None:
    """Raise unless ``tensor.shape == shape``."""
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"expected {name} of shape {list(shape)}, got {list(tensor.shape)}")


def expect_ndim(name: str, tensor: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise unless ``tensor`` has ``ndim`` dims; ``layout`` names them, e.g. ``[B, T, C]``."""
    if tensor.dim() != ndim:
        raise ValueError(f"expected {name} {layout}, got shape {list(tensor.shape)}")


def expect_dtype(name: str, tensor: torch.Tensor, dtypes: Sequence[torch.dtype]) -> None:
    """Raise unless ``tensor.dtype`` is one of ``dtypes``."""
    if tensor.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"expected {name} of dtype {names}, got {tensor.dtype}")


def expect_same_device(**tensors: torch.Tensor) -> None:
    """Raise unless all tensors live on one device."""
    devices = {str(t.device) for t in tensors.values()}
    if len(devices) > 1:
        found = ", ".join(f"{k} on {t.device}" for k, t in tensors.items())
        raise ValueError(f"expected all tensors on one device, got {found}")
