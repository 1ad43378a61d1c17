"""Triton WKV scan: one program per (batch, block of channels) walks the sequence with the
state ``(a, b, p)`` in registers; ``T`` is a runtime loop bound, so there is no length cap."""

import torch
import triton
import triton.language as tl

from ganglion.kernels.wkv.reference import (
    State,
    check_wkv_args,
    check_wkv_state,
    wkv_initial_state,
)

BLOCK_C = 64


@triton.jit
def _wkv_scan_kernel(
    w_ptr,  # [C]
    u_ptr,  # [C]
    k_ptr,  # [B, T, C]
    v_ptr,  # [B, T, C]
    y_ptr,  # [B, T, C]
    a_ptr,  # [B, C] in: initial state, out: final state
    b_ptr,
    p_ptr,
    T,
    C,
    BLOCK_C: tl.constexpr,
):
    i_b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs < C
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    state_offs = i_b * C + offs
    a = tl.load(a_ptr + state_offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + state_offs, mask=mask, other=1.0)
    p = tl.load(p_ptr + state_offs, mask=mask, other=0.0)
    row = i_b.to(tl.int64) * T * C + offs
    for _ in range(T):
        k = tl.load(k_ptr + row, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + row, mask=mask, other=0.0).to(tl.float32)
        q = tl.maximum(p, u + k)
        e1 = tl.exp(p - q)
        e2 = tl.exp(u + k - q)
        y = (e1 * a + e2 * v) / (e1 * b + e2)
        tl.store(y_ptr + row, y.to(y_ptr.dtype.element_ty), mask=mask)
        q = tl.maximum(p + w, k)
        e1 = tl.exp(p + w - q)
        e2 = tl.exp(k - q)
        a = e1 * a + e2 * v
        b = e1 * b + e2
        p = q
        row += C
    tl.store(a_ptr + state_offs, a, mask=mask)
    tl.store(b_ptr + state_offs, b, mask=mask)
    tl.store(p_ptr + state_offs, p, mask=mask)


def wkv_scan_triton(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence in one Triton launch (contract of ``wkv_scan_reference``).

    Args:
        w, u: per-channel decay (``-exp(time_decay)``) and bonus ``[C]``.
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` for an empty state; not modified.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state (new tensors).
    """
    check_wkv_args(w, u, k, v)
    batch, length, channels = k.shape
    state = wkv_initial_state(batch, channels, k.device) if state is None else state
    check_wkv_state(state, batch, channels)
    a, b, p = (s.contiguous().clone() for s in state)
    y = torch.empty(k.shape, dtype=v.dtype, device=k.device)
    grid = (triton.cdiv(channels, BLOCK_C), batch)
    _wkv_scan_kernel[grid](
        w.contiguous(), u.contiguous(), k.contiguous(), v.contiguous(), y, a, b, p,
        length, channels, BLOCK_C=BLOCK_C,
    )  # fmt: skip
    return y, (a, b, p)
