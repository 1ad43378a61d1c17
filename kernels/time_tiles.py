"""Triton helpers shared by the time-scan kernels: a ``[DEPTH, BLOCK]`` tile holds ``DEPTH``
consecutive timesteps of ``BLOCK`` lanes, time-major with row stride ``stride``.

Each thread holds whole columns of a tile (the lanes vary fastest), so taking or putting one
row is a register select, not a shuffle.
"""

import triton
import triton.language as tl


@triton.jit
def tile_ptrs(ptr, t0, lanes, lane_mask, T, stride, DEPTH: tl.constexpr):
    """Pointers and mask of timesteps ``t0 .. t0 + DEPTH - 1`` of ``lanes``."""
    steps = t0 + tl.arange(0, DEPTH)
    ptrs = ptr + steps[:, None].to(tl.int64) * stride + lanes[None, :]
    return ptrs, (steps[:, None] < T) & lane_mask[None, :]


@triton.jit
def load_tile(ptr, t0, lanes, lane_mask, T, stride, DEPTH: tl.constexpr):
    """The tile of timesteps ``t0 .. t0 + DEPTH - 1`` (zeros past ``T`` and outside the lanes)."""
    ptrs, mask = tile_ptrs(ptr, t0, lanes, lane_mask, T, stride, DEPTH)
    return tl.load(ptrs, mask=mask, other=0)


@triton.jit
def take_row(tile, i, DEPTH: tl.constexpr):
    """Row ``i`` of ``tile`` as a ``[BLOCK]`` vector (exact: one term, the rest zeros)."""
    return tl.sum(tl.where(tl.arange(0, DEPTH)[:, None] == i, tile, 0), axis=0)


@triton.jit
def put_row(tile, i, row, DEPTH: tl.constexpr):
    """``tile`` with row ``i`` replaced by ``row``."""
    return tl.where(tl.arange(0, DEPTH)[:, None] == i, row[None, :], tile)
