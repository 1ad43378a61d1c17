"""WKV (SpikeGPT / RWKV-4 time mixing) as a numerically stable scan and as a single step.

``wkv_scan`` and ``wkv_step`` use a Triton kernel on CUDA (unless ``GANGLION_KERNELS=0``) and a
PyTorch reference elsewhere. Long sequences take the chunked, time-parallel forms
(``wkv_chunk_triton``, ``wkv_chunk_reference``), short ones and every ``wkv_step`` the
token-by-token scan.
"""

import torch

from ganglion.kernels.dispatch import use_triton
from ganglion.kernels.wkv.reference import (
    CHUNK_SIZE,
    State,
    check_wkv_state,
    wkv_chunk_reference,
    wkv_initial_state,
    wkv_scan_reference,
)

__all__ = ["State", "wkv_initial_state", "wkv_scan", "wkv_step"]

# From two chunks on, the chunked reference beats the token loop on CPU (README.md).
REFERENCE_CHUNKED_FROM_T = 2 * CHUNK_SIZE
# Two blocks of the chunk kernel (8 chunks of 16 tokens). A first guess (kernels/wkv/README.md);
# benchmarks/kernels.py times both kernels.
KERNEL_CHUNKED_FROM_T = 256


def wkv_scan(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence.

    Args:
        w: per-channel log decay ``[C]`` (``-exp(time_decay)``).
        u: per-channel bonus for the current token ``[C]`` (``time_first``).
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` (``a = b = 0``, ``p = -1e38``).
        use_kernel: ``True``/``False`` force a Triton kernel / a reference; ``None`` uses a
            kernel on CUDA tensors when kernels are enabled. Either way the chunked form is
            taken from ``KERNEL_CHUNKED_FROM_T`` (kernel) or ``REFERENCE_CHUNKED_FROM_T``
            (reference) tokens on.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state ``(a, b, p)``.
    """
    length = k.shape[1] if k.dim() == 3 else 0
    if use_triton(use_kernel, k, v):
        if length >= KERNEL_CHUNKED_FROM_T:
            from ganglion.kernels.wkv.triton_chunk import wkv_chunk_triton

            return wkv_chunk_triton(w, u, k, v, state)
        from ganglion.kernels.wkv.triton import wkv_scan_triton

        return wkv_scan_triton(w, u, k, v, state)
    if length >= REFERENCE_CHUNKED_FROM_T:
        return wkv_chunk_reference(w, u, k, v, state)
    return wkv_scan_reference(w, u, k, v, state)


def wkv_step(
    w: torch.Tensor,
    u: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    state: State,
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, State]:
    """One WKV token (streaming decode); equals ``wkv_scan`` on a length-1 sequence.

    Args:
        w, u: per-channel decay and bonus ``[C]``.
        k_t, v_t: key and value ``[B, C]``.
        state: ``(a, b, p)`` each ``[B, C]`` fp32 (see ``wkv_initial_state``).
        use_kernel: as in ``wkv_scan``.

    Returns:
        ``y_t`` ``[B, C]`` in ``v_t``'s dtype and the new state.
    """
    if k_t.dim() != 2:
        raise ValueError(f"expected k_t [B, C], got shape {list(k_t.shape)}")
    check_wkv_state(state, *k_t.shape)
    y, state = wkv_scan(w, u, k_t[:, None], v_t[:, None], state, use_kernel)
    return y[:, 0], state
