"""Triton WKV scan: one program per (batch, block of channels) walks the sequence with the
state ``(a, b, p)`` in registers; ``T`` is a runtime loop bound, so there is no length cap.

Time is walked in tiles of ``DEPTH`` steps (``kernels/time_tiles.py``): the next tile of ``k``
and ``v`` is loaded while this one is computed.
"""

import torch
import triton
import triton.language as tl

from ganglion.kernels.launch import Launch, pick_block, warps_for
from ganglion.kernels.time_tiles import load_tile, put_row, take_row, tile_ptrs
from ganglion.kernels.wkv.reference import (
    State,
    check_wkv_args,
    check_wkv_state,
    wkv_initial_state,
)

BLOCKS = (128, 256)
DEPTH = 4


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
    DEPTH: tl.constexpr,
):
    i_b = tl.program_id(1)
    lanes = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = lanes < C
    w = tl.load(w_ptr + lanes, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + lanes, mask=mask, other=0.0).to(tl.float32)
    state_offs = i_b * C + lanes
    a = tl.load(a_ptr + state_offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + state_offs, mask=mask, other=1.0)
    p = tl.load(p_ptr + state_offs, mask=mask, other=0.0)
    base = i_b.to(tl.int64) * T * C
    k_ahead = load_tile(k_ptr + base, 0, lanes, mask, T, C, DEPTH)
    v_ahead = load_tile(v_ptr + base, 0, lanes, mask, T, C, DEPTH)
    for t0 in range(0, T, DEPTH):
        k_tile = k_ahead
        v_tile = v_ahead
        y_ptrs, y_mask = tile_ptrs(y_ptr + base, t0, lanes, mask, T, C, DEPTH)
        k_ahead = load_tile(k_ptr + base, t0 + DEPTH, lanes, mask, T, C, DEPTH)
        v_ahead = load_tile(v_ptr + base, t0 + DEPTH, lanes, mask, T, C, DEPTH)
        y_tile = tl.zeros([DEPTH, BLOCK_C], dtype=tl.float32)
        for i in tl.static_range(DEPTH):
            k = take_row(k_tile, i, DEPTH).to(tl.float32)
            v = take_row(v_tile, i, DEPTH).to(tl.float32)
            q = tl.maximum(p, u + k)
            e1 = tl.exp(p - q)
            e2 = tl.exp(u + k - q)
            y_tile = put_row(y_tile, i, (e1 * a + e2 * v) / (e1 * b + e2), DEPTH)
            q = tl.maximum(p + w, k)
            e1 = tl.exp(p + w - q)
            e2 = tl.exp(k - q)
            live = t0 + i < T
            a = tl.where(live, e1 * a + e2 * v, a)
            b = tl.where(live, e1 * b + e2, b)
            p = tl.where(live, q, p)
        tl.store(y_ptrs, y_tile.to(y_ptr.dtype.element_ty), mask=y_mask)
    tl.store(a_ptr + state_offs, a, mask=mask)
    tl.store(b_ptr + state_offs, b, mask=mask)
    tl.store(p_ptr + state_offs, p, mask=mask)


def default_launch(batch: int, channels: int, element_size: int, device: torch.device) -> Launch:
    """The launch shape for ``batch * channels`` lanes of ``element_size``-byte ``k, v``."""
    block = min(pick_block(batch * channels, device, BLOCKS), triton.next_power_of_2(channels))
    return Launch(block, DEPTH, warps_for(block, element_size))


def wkv_scan_triton(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
    *,
    launch: Launch | None = None,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence in one Triton launch (contract of ``wkv_scan_reference``).

    Args:
        w, u: per-channel decay (``-exp(time_decay)``) and bonus ``[C]``.
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` for an empty state; not modified.
        launch: launch shape; ``None`` takes ``default_launch``.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state (new tensors).
    """
    check_wkv_args(w, u, k, v)
    batch, length, channels = k.shape
    state = wkv_initial_state(batch, channels, k.device) if state is None else state
    check_wkv_state(state, batch, channels)
    launch = launch or default_launch(batch, channels, k.element_size(), k.device)
    a, b, p = (s.contiguous().clone() for s in state)
    y = torch.empty(k.shape, dtype=v.dtype, device=k.device)
    grid = (triton.cdiv(channels, launch.block), batch)
    _wkv_scan_kernel[grid](
        w.contiguous(), u.contiguous(), k.contiguous(), v.contiguous(), y, a, b, p,
        length, channels, BLOCK_C=launch.block, DEPTH=launch.depth, num_warps=launch.num_warps,
    )  # fmt: skip
    return y, (a, b, p)
