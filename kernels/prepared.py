"""What the compiled loops that reproduce a library's bits (``kernels.conv``, ``kernels.linear``)
check of a layer before they take it: whether autograd records the call, whether their copy of
its weights is still current, and whether a bias of -0 would show the zero inputs they skip."""

from __future__ import annotations

import numpy as np
import torch


def versions(*tensors: torch.Tensor) -> tuple[int, ...] | None:
    """The tensors' version counters (an in-place edit moves them), or None when one is an
    inference tensor (made under ``torch.inference_mode``): it keeps no counter, so a copy
    prepared from it could go stale unseen, and the loops leave it to torch. Edits through
    ``.data`` or a numpy view move no counter either (PyTorch does not count them): replace the
    tensor, or edit it in place under ``torch.no_grad()``."""
    if any(t.is_inference() for t in tensors):
        return None
    return tuple(t._version for t in tensors)


def records_autograd(*tensors: torch.Tensor) -> bool:
    """Whether a call on ``tensors`` is one autograd records (one of them requires grad and
    grad mode is on): the library's op must run, since the loops record nothing."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def negative_zero(bias: np.ndarray) -> bool:
    """Whether a bias holds -0. The loops skip zero inputs, whose multiply-adds can only turn a
    zero sum's sign; that sign reaches the output only through a bias of -0 (-0 + -0 is -0,
    +0 + -0 is +0), so such a layer is left to the library."""
    return bool((np.signbit(bias) & (bias == 0)).any())
