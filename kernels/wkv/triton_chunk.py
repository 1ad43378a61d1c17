"""Triton WKV in chunks: time-parallel inside each program (and across programs when asked).

A program owns ``BLOCK_C`` channels and walks the sequence in blocks of ``GROUPS`` chunks of
``CHUNK`` tokens; the chunks of a block are walked side by side, one row of lanes each, so a
program has ``GROUPS * BLOCK_C`` independent lanes instead of ``BLOCK_C``. Per block (the
derivation is in README.md):

1. each row sums up the tokens of the chunk *before* its own as a state from empty (row 0
   takes the state entering the block);
2. an associative scan over the rows merges those into the state entering each row's chunk;
3. each row walks its own chunk from that state, writing outputs; the last row's state then
   enters the next block.

Step 1 reads tokens that step 3 of the row above reads a moment later (from cache), so
``k, v`` come from DRAM once. When ``B * C`` alone gives too few programs for the GPU, time is
also cut into ``segments``: ``_wkv_segment_kernel`` sums up every segment but the last, and
each program of ``_wkv_chunk_kernel`` starts its segment from the merged sums before it (the
segments before the last are then read twice).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ganglion.kernels.launch import MIN_PROGRAMS_PER_SM, multiprocessors, warps_for
from ganglion.kernels.wkv.reference import (
    P_INIT,
    State,
    check_wkv_args,
    check_wkv_state,
    wkv_initial_state,
)

ROW_BYTES = 128  # channels per program: one 128-byte line of k and of v per token
CHUNK = 16
GROUPS = 8
EMPTY_P = tl.constexpr(P_INIT)  # p of a state with no tokens (as a constant inside kernels)


@triton.jit
def _merge(d1, a1, b1, p1, d2, a2, b2, p2):
    """Tokens 1 then tokens 2, each a state ``(a, b, p)`` scaled by ``e^{-p}`` with ``d`` its
    log decay (``tokens * w``): ``e^{d2} X1 + X2``. One ``exp``: the larger exponent weighs 1.
    A token is ``(w, v, 1, k)``; no tokens is ``(0, 0, 0, P_INIT)``, and a token with
    ``d = 0, k = -inf`` changes nothing."""
    p1 = p1 + d2
    keep = p1 >= p2
    e = tl.exp(-tl.abs(p1 - p2))
    e1 = tl.where(keep, 1.0, e)
    e2 = tl.where(keep, e, 1.0)
    return d1 + d2, e1 * a1 + e2 * a2, e1 * b1 + e2 * b2, tl.maximum(p1, p2)


@triton.jit
def _output(a, b, p, u, k, v):
    """``y`` of a token from the state entering it: the token joins undecayed, weighted
    ``e^{u+k}``."""
    _, num, den, _ = _merge(0.0, a, b, p, 0.0, v, 1.0, u + k)
    return num / den


@triton.jit
def _sum_chunk(k_ptr, v_ptr, base, first, count, lanes, C, w, CHUNK: tl.constexpr):
    """Tokens ``first .. first + count - 1`` of each row (``first, count`` ``[GROUPS, 1]``) as
    a state from empty, in closed form: token ``i`` ends with exponent ``x_i = (count-1-i) w +
    k_i``, ``p = max x_i``, ``a = sum e^{x_i - p} v_i``, ``b = sum e^{x_i - p}``."""
    lane_mask = lanes < C
    p = tl.full(first.shape, EMPTY_P, dtype=tl.float32) + tl.zeros_like(w)  # [GROUPS, BLOCK_C]
    for i in tl.static_range(CHUNK):
        offs = base + (first + i).to(tl.int64) * C + lanes
        mask = (i < count) & lane_mask
        k = tl.load(k_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        p = tl.maximum(p, k + (count - 1 - i) * w)
    a = tl.zeros_like(p)
    b = tl.zeros_like(p)
    for i in tl.static_range(CHUNK):
        offs = base + (first + i).to(tl.int64) * C + lanes
        mask = (i < count) & lane_mask
        k = tl.load(k_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        e = tl.exp(k + (count - 1 - i) * w - p)
        a += e * v
        b += e
    return a, b, p


@triton.jit
def _take_row(x, r, GROUPS: tl.constexpr):
    """Row ``r`` of a ``[GROUPS, BLOCK_C]`` tensor (exact: one term, the rest zeros)."""
    rows = tl.arange(0, GROUPS)[:, None]
    return tl.sum(tl.where(rows == r, x, 0.0), axis=0)


@triton.jit
def _wkv_segment_kernel(
    w_ptr,  # [C]
    k_ptr,  # [B, T, C]
    v_ptr,  # [B, T, C]
    sa_ptr,  # [S - 1, B, C] out: each segment's tokens as a state from empty
    sb_ptr,
    sp_ptr,
    T,
    C,
    SEG,  # tokens per segment, a multiple of GROUPS * CHUNK
    BLOCK_C: tl.constexpr,
    CHUNK: tl.constexpr,
    GROUPS: tl.constexpr,
):
    i_c, i_s, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    lanes = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    w_lanes = tl.load(w_ptr + lanes, mask=lanes < C, other=0.0).to(tl.float32)
    w = w_lanes[None, :]
    span = SEG // GROUPS  # tokens per row, a multiple of CHUNK
    rows = tl.arange(0, GROUPS)[:, None]
    full = tl.full([GROUPS, 1], CHUNK, dtype=tl.int32)
    base = i_b.to(tl.int64) * T * C
    a = tl.zeros([GROUPS, BLOCK_C], dtype=tl.float32)
    b = tl.zeros([GROUPS, BLOCK_C], dtype=tl.float32)
    p = tl.full([GROUPS, BLOCK_C], EMPTY_P, dtype=tl.float32)
    for r0 in range(0, span, CHUNK):
        first = i_s * SEG + rows * span + r0
        ca, cb, cp = _sum_chunk(k_ptr, v_ptr, base, first, full, lanes[None, :], C, w, CHUNK)
        _, a, b, p = _merge(0.0, a, b, p, CHUNK * w, ca, cb, cp)
    # the rows in order: the merge is not commutative, and tl.reduce, whose order is the
    # compiler's, gave wrong segment sums compiled on an H200 (right ones interpreted)
    ra, rb, rp = _take_row(a, 0, GROUPS), _take_row(b, 0, GROUPS), _take_row(p, 0, GROUPS)
    for r in tl.static_range(1, GROUPS):
        row = (_take_row(a, r, GROUPS), _take_row(b, r, GROUPS), _take_row(p, r, GROUPS))
        _, ra, rb, rp = _merge(0.0, ra, rb, rp, span * w_lanes, *row)
    a, b, p = ra, rb, rp
    out = (i_s * tl.num_programs(2) + i_b) * C + lanes
    tl.store(sa_ptr + out, a, mask=lanes < C)
    tl.store(sb_ptr + out, b, mask=lanes < C)
    tl.store(sp_ptr + out, p, mask=lanes < C)


@triton.jit
def _wkv_chunk_kernel(
    w_ptr,  # [C]
    u_ptr,  # [C]
    k_ptr,  # [B, T, C]
    v_ptr,  # [B, T, C]
    y_ptr,  # [B, T, C]
    a0_ptr,  # [B, C] initial state
    b0_ptr,
    p0_ptr,
    a_ptr,  # [B, C] out: final state (written by the last segment)
    b_ptr,
    p_ptr,
    sa_ptr,  # [S - 1, B, C] segment sums from _wkv_segment_kernel
    sb_ptr,
    sp_ptr,
    T,
    C,
    SEG,  # tokens per segment, a multiple of GROUPS * CHUNK
    BLOCK_C: tl.constexpr,
    CHUNK: tl.constexpr,
    GROUPS: tl.constexpr,
):
    i_c, i_s, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    lanes = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    lane_mask = lanes < C
    w = tl.load(w_ptr + lanes, mask=lane_mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + lanes, mask=lane_mask, other=0.0).to(tl.float32)[None, :]
    state_offs = i_b * C + lanes
    a = tl.load(a0_ptr + state_offs, mask=lane_mask, other=0.0)
    b = tl.load(b0_ptr + state_offs, mask=lane_mask, other=1.0)
    p = tl.load(p0_ptr + state_offs, mask=lane_mask, other=0.0)
    for s in range(0, i_s):
        sum_offs = (s * tl.num_programs(2) + i_b) * C + lanes
        sa = tl.load(sa_ptr + sum_offs, mask=lane_mask, other=0.0)
        sb = tl.load(sb_ptr + sum_offs, mask=lane_mask, other=0.0)
        sp = tl.load(sp_ptr + sum_offs, mask=lane_mask, other=EMPTY_P)
        _, a, b, p = _merge(0.0, a, b, p, SEG * w, sa, sb, sp)
    w = w[None, :]
    rows = tl.arange(0, GROUPS)[:, None]
    base = i_b.to(tl.int64) * T * C
    for t0 in range(i_s * SEG, tl.minimum(T, (i_s + 1) * SEG), GROUPS * CHUNK):
        # 1. the chunk before each row's own (none for row 0), as a state from empty
        before = t0 + (rows - 1) * CHUNK  # [GROUPS, 1]
        count = tl.where(rows > 0, tl.minimum(tl.maximum(T - before, 0), CHUNK), 0)
        ca, cb, cp = _sum_chunk(k_ptr, v_ptr, base, before, count, lanes[None, :], C, w, CHUNK)
        # 2. with row 0 holding the state entering the block, a scan over the rows gives
        # the state entering each row's chunk (tl.associative_scan keeps the operands' order)
        cd = count.to(tl.float32) * w
        ca = tl.where(rows == 0, a[None, :], ca)
        cb = tl.where(rows == 0, b[None, :], cb)
        cp = tl.where(rows == 0, p[None, :], cp)
        _, ca, cb, cp = tl.associative_scan((cd, ca, cb, cp), 0, _merge)
        # 3. each row walks its own chunk; tokens past T (k = -inf, no decay) change nothing
        own = t0 + rows * CHUNK  # [GROUPS, 1]
        for i in tl.static_range(CHUNK):
            live = own + i < T
            offs = base + (own + i).to(tl.int64) * C + lanes[None, :]
            mask = live & (lanes[None, :] < C)
            k = tl.load(k_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
            v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + offs, _output(ca, cb, cp, u, k, v).to(y_ptr.dtype.element_ty), mask)
            _, ca, cb, cp = _merge(0.0, ca, cb, cp, tl.where(live, w, 0.0), v, 1.0, k)
        # 4. so the last row ends where the block ends
        a = _take_row(ca, GROUPS - 1, GROUPS)
        b = _take_row(cb, GROUPS - 1, GROUPS)
        p = _take_row(cp, GROUPS - 1, GROUPS)
    last = lanes < tl.where(i_s == tl.num_programs(1) - 1, C, 0)  # only the last segment
    tl.store(a_ptr + state_offs, a, mask=last)
    tl.store(b_ptr + state_offs, b, mask=last)
    tl.store(p_ptr + state_offs, p, mask=last)


@dataclass(frozen=True)
class ChunkLaunch:
    """Launch shape of the chunked WKV: ``block`` channels per program, ``groups`` chunks of
    ``chunk`` tokens walked side by side, warps per program, and ``segments``: programs along
    time (``1``: one pass over ``k, v``)."""

    block: int
    chunk: int
    groups: int
    num_warps: int
    segments: int = 1

    def __post_init__(self) -> None:
        for name in ("block", "chunk", "groups", "num_warps"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"expected {name} a power of two >= 1, got {value}")
        if self.segments < 1:
            raise ValueError(f"expected segments >= 1, got {self.segments}")


def default_chunk_launch(
    batch: int, length: int, channels: int, element_size: int, device: torch.device
) -> ChunkLaunch:
    """One 128-byte line of channels per program, ``GROUPS`` chunks of ``CHUNK`` tokens, and
    as many segments as it takes to reach ``MIN_PROGRAMS_PER_SM`` programs per multiprocessor
    (at most one per block of chunks). Untimed: chosen without a GPU."""
    block = min(ROW_BYTES // element_size, triton.next_power_of_2(channels))
    programs = batch * triton.cdiv(channels, block)
    blocks = triton.cdiv(length, GROUPS * CHUNK)
    wanted = MIN_PROGRAMS_PER_SM * multiprocessors(device)
    segments = max(1, min(triton.cdiv(wanted, programs), blocks))
    return ChunkLaunch(block, CHUNK, GROUPS, warps_for(GROUPS * block, element_size), segments)


def wkv_chunk_triton(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
    *,
    launch: ChunkLaunch | None = None,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence, time-parallel in chunks (contract of ``wkv_scan_reference``;
    one launch, two with ``segments > 1``).

    Args:
        w, u: per-channel decay (``-exp(time_decay)``) and bonus ``[C]``.
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` for an empty state; not modified.
        launch: launch shape; ``None`` takes ``default_chunk_launch``.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state (new tensors).
    """
    check_wkv_args(w, u, k, v)
    batch, length, channels = k.shape
    state = wkv_initial_state(batch, channels, k.device) if state is None else state
    check_wkv_state(state, batch, channels)
    if length == 0:
        return torch.empty_like(v), tuple(s.clone() for s in state)
    launch = launch or default_chunk_launch(batch, length, channels, k.element_size(), k.device)
    span = launch.groups * launch.chunk
    seg = triton.cdiv(triton.cdiv(length, span), launch.segments) * span
    segments = triton.cdiv(length, seg)
    w, u, k, v = (x.contiguous() for x in (w, u, k, v))
    initial = tuple(s.contiguous() for s in state)
    final = tuple(torch.empty_like(s) for s in initial)
    sums = torch.empty(
        3, max(segments - 1, 1), batch, channels, dtype=torch.float32, device=k.device
    )
    y = torch.empty(k.shape, dtype=v.dtype, device=k.device)
    shape = {"BLOCK_C": launch.block, "CHUNK": launch.chunk, "GROUPS": launch.groups}
    blocks_c = triton.cdiv(channels, launch.block)
    if segments > 1:
        _wkv_segment_kernel[(blocks_c, segments - 1, batch)](
            w, k, v, *sums, length, channels, seg, **shape, num_warps=launch.num_warps
        )
    _wkv_chunk_kernel[(blocks_c, segments, batch)](
        w, u, k, v, y, *initial, *final, *sums, length, channels, seg, **shape,
        num_warps=launch.num_warps,
    )  # fmt: skip
    return y, final
