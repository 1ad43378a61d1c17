"""Triton GLA: chunkwise-parallel forward and a fused recurrent kernel, fp32 state.

Chunkwise form (chunk of ``BT`` tokens, ``G_t`` = cumulative sum of ``g`` from the chunk start,
``S`` = state entering the chunk)::

    o_t = (scale q_t * exp(G_t)) S + sum_{j <= t} A_tj v_j
    A_tj = scale * sum_k q_tk k_jk exp(G_tk - G_jk)
    S'  = diag(exp(G_last)) S + (k * exp(G_last - G))^T v

The states entering the chunks are a linear recurrence. When ``B * H`` gives the GPU too few
programs, the chunks are cut into segments walked in parallel from zero; a short pass over the
segments carries the state entering each, and the output kernel adds it, decayed, to each
chunk's local state. ``A`` is built per row block of ``BC`` tokens: earlier blocks factor through
the gate at the row block's first token (``exp(G_t - G_n) * exp(G_n - G_j)``, both factors
<= 1) and become a matmul; the diagonal block joins that matmul when the block's gates span at
most ``DIAG_EXP_LIMIT`` (then ``exp(G_n - G_j) <= exp(DIAG_EXP_LIMIT)``), else it is computed
element-wise in log space. Derivation in README.md.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ganglion.kernels.gla.reference import (
    check_gla_args,
    default_scale,
    gla_recurrent_reference,
)
from ganglion.kernels.launch import multiprocessors

SUB_CHUNK = 16
# Largest gate span (|G_t - G_n| inside a row block) for which the diagonal block is a matmul:
# its factors stay within [e^-30, e^30], far from fp32's range (e^+-88).
DIAG_EXP_LIMIT = tl.constexpr(30.0)
STATE_PROGRAMS_PER_SM = 2  # inter-chunk programs wanted per multiprocessor before segmenting
MIN_SEGMENT_CHUNKS = 4  # chunks per segment at least: the carry pass stays <= 1/4 of the walk
# Walks shorter than this stay one pass: on an H200, segmenting 64 chunks (T = 4096) was slower
# in every one of 20 launch shapes (0.29-0.33 ms against 0.255 ms), 256 chunks 3x faster
# (benchmarks/kernel_tuning.py --ops gla). The carry's extra launch and buffers cost more than
# a short walk.
MIN_CHUNKS_TO_SEGMENT = 128


@triton.jit
def _tile_ptrs(ptr, i_b, i_h, t0, d0, T, H, D, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Pointers and mask of the ``[ROWS, COLS]`` tile at token ``t0``, feature ``d0`` of a
    ``[B, T, H, D]`` tensor."""
    rows = t0 + tl.arange(0, ROWS)
    cols = d0 + tl.arange(0, COLS)
    base = ((i_b * T).to(tl.int64) * H + i_h) * D
    ptrs = ptr + base + rows[:, None].to(tl.int64) * H * D + cols[None, :]
    return ptrs, (rows[:, None] < T) & (cols[None, :] < D)


@triton.jit
def _row_ptrs(ptr, i_b, i_h, t, d0, T, H, D, COLS: tl.constexpr):
    """Pointers and mask of the ``[COLS]`` row at token ``t`` of a ``[B, T, H, D]`` tensor."""
    cols = d0 + tl.arange(0, COLS)
    ptrs = ptr + ((i_b * T + t).to(tl.int64) * H + i_h) * D + cols
    return ptrs, cols < tl.where(t < T, D, 0)


@triton.jit
def _chunk_cumsum_kernel(g_ptr, gc_ptr, T, H, K, BT: tl.constexpr, BK: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    for k0 in range(0, K, BK):
        ptrs, mask = _tile_ptrs(g_ptr, i_b, i_h, i_t * BT, k0, T, H, K, BT, BK)
        g = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        out, _ = _tile_ptrs(gc_ptr, i_b, i_h, i_t * BT, k0, T, H, K, BT, BK)
        tl.store(out, tl.cumsum(g, axis=0), mask=mask)


@triton.jit
def _chunk_state_kernel(
    k_ptr,  # [B, T, H, K]
    v_ptr,  # [B, T, H, V]
    gc_ptr,  # [B, T, H, K] chunk-local cumulative gate
    h_ptr,  # [B, H, NT, K, V] state entering each chunk, from its segment's start
    ld_ptr,  # [B, H, NT, K] log decay from the segment's start to each chunk (SEGMENTED)
    h0_ptr,  # [B, H, K, V]
    ht_ptr,  # [B, H, K, V] final state (one segment)
    seg_ptr,  # [B*H, S, K, V] each segment's end state from its start (SEGMENTED)
    segld_ptr,  # [B*H, S, K] each segment's log decay (SEGMENTED)
    T,
    H,
    K,
    V,
    NT,
    CPS,  # chunks per segment
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    SEGMENTED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_sk, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    S, NK = tl.cdiv(NT, CPS), tl.cdiv(K, BK)
    i_s, i_k = i_sk // NK, i_sk % NK
    i_b, i_h = i_bh // H, i_bh % H
    rk = i_k * BK + tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    kv_offs = rk[:, None] * V + rv[None, :]
    kv_mask = (rk[:, None] < K) & (rv[None, :] < V)
    ld_mask = rk < tl.where(i_v == 0, K, 0)  # one V tile writes the decays
    h = tl.zeros([BK, BV], dtype=tl.float32)
    ld = tl.zeros([BK], dtype=tl.float32)
    if USE_INITIAL:  # the first segment starts from the initial state, the others from zero
        h0_offs = i_bh.to(tl.int64) * K * V + kv_offs
        h0_mask = (rk[:, None] < tl.where(i_s == 0, K, 0)) & (rv[None, :] < V)
        h += tl.load(h0_ptr + h0_offs, mask=h0_mask, other=0.0)
    for i_t in range(i_s * CPS, tl.minimum(i_s * CPS + CPS, NT)):
        tl.store(h_ptr + (i_bh.to(tl.int64) * NT + i_t) * K * V + kv_offs, h, mask=kv_mask)
        if SEGMENTED:
            tl.store(ld_ptr + (i_bh.to(tl.int64) * NT + i_t) * K + rk, ld, mask=ld_mask)
        t0 = i_t * BT
        k_ptrs, k_mask = _tile_ptrs(k_ptr, i_b, i_h, t0, i_k * BK, T, H, K, BT, BK)
        v_ptrs, v_mask = _tile_ptrs(v_ptr, i_b, i_h, t0, i_v * BV, T, H, V, BT, BV)
        g_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t0, i_k * BK, T, H, K, BT, BK)
        last_ptrs, last_mask = _row_ptrs(
            gc_ptr, i_b, i_h, tl.minimum(t0 + BT, T) - 1, i_k * BK, T, H, K, BK
        )
        b_k = tl.load(k_ptrs, mask=k_mask, other=0.0)
        b_v = tl.load(v_ptrs, mask=v_mask, other=0.0)
        b_g = tl.load(g_ptrs, mask=k_mask, other=0.0)
        g_last = tl.load(last_ptrs, mask=last_mask, other=0.0)
        b_kg = (b_k.to(tl.float32) * tl.exp(g_last[None, :] - b_g)).to(b_v.dtype)
        h = h * tl.exp(g_last)[:, None] + tl.dot(tl.trans(b_kg), b_v, input_precision=DOT_PRECISION)
        ld += g_last
    if SEGMENTED:
        seg = i_bh.to(tl.int64) * S + i_s
        tl.store(seg_ptr + seg * K * V + kv_offs, h, mask=kv_mask)
        tl.store(segld_ptr + seg * K + rk, ld, mask=ld_mask)
    elif STORE_FINAL:
        tl.store(ht_ptr + i_bh.to(tl.int64) * K * V + kv_offs, h, mask=kv_mask)


@triton.jit
def _segment_carry_kernel(
    seg_ptr,  # [B*H, S, K, V] each segment's end state from its start
    segld_ptr,  # [B*H, S, K] each segment's log decay
    segin_ptr,  # [B*H, S, K, V] out: state entering each segment (zeros for the first)
    ht_ptr,  # [B, H, K, V] final state
    K,
    V,
    S,
    BK: tl.constexpr,
    BV: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rk = i_k * BK + tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    kv_offs = rk[:, None] * V + rv[None, :]
    kv_mask = (rk[:, None] < K) & (rv[None, :] < V)
    h = tl.zeros([BK, BV], dtype=tl.float32)
    for i_s in range(S):
        seg = i_bh.to(tl.int64) * S + i_s
        local = tl.load(seg_ptr + seg * K * V + kv_offs, mask=kv_mask, other=0.0)
        decay = tl.exp(tl.load(segld_ptr + seg * K + rk, mask=rk < K, other=0.0))
        tl.store(segin_ptr + seg * K * V + kv_offs, h, mask=kv_mask)
        h = h * decay[:, None] + local
    if STORE_FINAL:
        tl.store(ht_ptr + i_bh.to(tl.int64) * K * V + kv_offs, h, mask=kv_mask)


@triton.jit
def _diagonal_scores(
    k_ptr, gc_ptr, b_q, b_gi, i_b, i_h, t_i, c_i, k0, T, H, K,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """Scores of row block ``t_i`` against its own tokens, element-wise in log space (every
    exponent ``<= 0``), placed at chunk columns ``c_i ..`` of a ``[BC, BT]`` row of ``A``.
    ``b_q`` is the scaled query tile, ``b_gi`` its cumulative gate, both ``[BC, BK]``."""
    rows = tl.arange(0, BC)
    cols = tl.arange(0, BT)
    a = tl.zeros([BC, BT], dtype=tl.float32)
    for j in range(BC):
        kj_ptrs, kj_mask = _row_ptrs(k_ptr, i_b, i_h, t_i + j, k0, T, H, K, BK)
        gj_ptrs, _ = _row_ptrs(gc_ptr, i_b, i_h, t_i + j, k0, T, H, K, BK)
        b_kj = tl.load(kj_ptrs, mask=kj_mask, other=0.0).to(tl.float32)
        b_gj = tl.load(gj_ptrs, mask=kj_mask, other=0.0)
        causal = (rows[:, None] >= j) & (t_i + rows[:, None] < T)
        decay = tl.exp(tl.where(causal, b_gi - b_gj[None, :], float("-inf")))
        col = tl.sum(b_q * b_kj[None, :] * decay, axis=1)
        a += tl.where(cols[None, :] == c_i + j, col[:, None], 0.0)
    return a


@triton.jit
def _chunk_intra_kernel(
    q_ptr,  # [B, T, H, K]
    k_ptr,
    gc_ptr,
    a_ptr,  # [B, T, H, BT] in v's dtype: row t against the chunk's tokens j <= t
    scale,
    T,
    H,
    K,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NC: tl.constexpr = BT // BC
    i_t, i_i = i_c // NC, i_c % NC
    t0 = i_t * BT
    t_i = t0 + i_i * BC
    if t_i < T:
        cols = tl.arange(0, BT)
        a = tl.zeros([BC, BT], dtype=tl.float32)
        for k0 in range(0, K, BK):
            q_ptrs, q_mask = _tile_ptrs(q_ptr, i_b, i_h, t_i, k0, T, H, K, BC, BK)
            gi_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t_i, k0, T, H, K, BC, BK)
            gn_ptrs, gn_mask = _row_ptrs(gc_ptr, i_b, i_h, t_i, k0, T, H, K, BK)
            k_ptrs, k_mask = _tile_ptrs(k_ptr, i_b, i_h, t0, k0, T, H, K, BT, BK)
            gk_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t0, k0, T, H, K, BT, BK)
            b_q = tl.load(q_ptrs, mask=q_mask, other=0.0).to(tl.float32) * scale
            b_gi = tl.load(gi_ptrs, mask=q_mask, other=0.0)
            b_gn = tl.load(gn_ptrs, mask=gn_mask, other=0.0)
            b_k = tl.load(k_ptrs, mask=k_mask, other=0.0).to(tl.float32)
            b_gk = tl.load(gk_ptrs, mask=k_mask, other=0.0)
            rel = tl.where(q_mask, b_gi - b_gn[None, :], 0.0)  # G_t - G_n, <= 0
            spread = tl.max(tl.max(tl.abs(rel), axis=1), axis=0)
            # columns before `bound` go through the matmul: earlier row blocks always (exponent
            # G_n - G_j <= 0), the own block when its span keeps exp(G_n - G_j) <= e^LIMIT
            bound = i_i * BC + tl.where(spread <= DIAG_EXP_LIMIT, BC, 0)
            k_exp = tl.where(cols[:, None] < bound, b_gn[None, :] - b_gk, float("-inf"))
            b_qg = b_q * tl.exp(rel)
            b_kg = b_k * tl.exp(k_exp)  # [BT, BK]
            a += tl.dot(b_qg, tl.trans(b_kg), input_precision=DOT_PRECISION)
            if spread > DIAG_EXP_LIMIT:
                a += _diagonal_scores(
                    k_ptr, gc_ptr, b_q, b_gi, i_b, i_h, t_i, i_i * BC, k0, T, H, K, BT, BC, BK
                )
        causal = cols[None, :] <= i_i * BC + tl.arange(0, BC)[:, None]
        a = tl.where(causal, a, 0.0)  # the diagonal block's j > t entries may be large
        a_ptrs, a_mask = _tile_ptrs(a_ptr, i_b, i_h, t_i, 0, T, H, BT, BC, BT)
        tl.store(a_ptrs, a.to(a_ptr.dtype.element_ty), mask=a_mask & causal)


@triton.jit
def _chunk_output_kernel(
    q_ptr,  # [B, T, H, K]
    v_ptr,  # [B, T, H, V]
    gc_ptr,  # [B, T, H, K]
    h_ptr,  # [B, H, NT, K, V] state entering each chunk, from its segment's start
    ld_ptr,  # [B, H, NT, K] log decay from the segment's start to each chunk (SEGMENTED)
    segin_ptr,  # [B*H, S, K, V] state entering each segment (SEGMENTED)
    a_ptr,  # [B, T, H, BT] in v's dtype
    o_ptr,  # [B, T, H, V]
    scale,
    T,
    H,
    K,
    V,
    NT,
    CPS,  # chunks per segment
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    SEGMENTED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    t0 = i_t * BT
    rv = i_v * BV + tl.arange(0, BV)
    v_ptrs, v_mask = _tile_ptrs(v_ptr, i_b, i_h, t0, i_v * BV, T, H, V, BT, BV)
    b_v = tl.load(v_ptrs, mask=v_mask, other=0.0)
    o = tl.zeros([BT, BV], dtype=tl.float32)
    for k0 in range(0, K, BK):
        q_ptrs, q_mask = _tile_ptrs(q_ptr, i_b, i_h, t0, k0, T, H, K, BT, BK)
        g_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t0, k0, T, H, K, BT, BK)
        b_q = tl.load(q_ptrs, mask=q_mask, other=0.0)
        b_g = tl.load(g_ptrs, mask=q_mask, other=0.0)
        b_qg = (b_q.to(tl.float32) * scale * tl.exp(b_g)).to(b_v.dtype)
        rk = k0 + tl.arange(0, BK)
        kv_offs = rk[:, None] * V + rv[None, :]
        kv_mask = (rk[:, None] < K) & (rv[None, :] < V)
        h_offs = (i_bh.to(tl.int64) * NT + i_t) * K * V + kv_offs
        b_h = tl.load(h_ptr + h_offs, mask=kv_mask, other=0.0)
        if SEGMENTED:  # add the state entering the segment, decayed to this chunk
            seg = i_bh.to(tl.int64) * tl.cdiv(NT, CPS) + i_t // CPS
            s_in = tl.load(segin_ptr + seg * K * V + kv_offs, mask=kv_mask, other=0.0)
            ld_offs = (i_bh.to(tl.int64) * NT + i_t) * K + rk
            b_ld = tl.load(ld_ptr + ld_offs, mask=rk < K, other=0.0)
            b_h += tl.exp(b_ld)[:, None] * s_in
        o += tl.dot(b_qg, b_h.to(b_v.dtype), input_precision=DOT_PRECISION)
    a_ptrs, a_mask = _tile_ptrs(a_ptr, i_b, i_h, t0, 0, T, H, BT, BT, BT)
    causal = tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]
    b_a = tl.load(a_ptrs, mask=a_mask & causal, other=0.0)
    o += tl.dot(b_a.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
    o_ptrs, o_mask = _tile_ptrs(o_ptr, i_b, i_h, t0, i_v * BV, T, H, V, BT, BV)
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _fused_recurrent_kernel(
    q_ptr,  # [B, T, H, K]
    k_ptr,
    v_ptr,  # [B, T, H, V]
    g_ptr,  # [B, T, H, K]
    o_ptr,  # [B, T, H, V]
    h0_ptr,  # [B, H, K, V]
    ht_ptr,
    scale,
    T,
    H,
    K,
    V,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rk = tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    kv_offs = i_bh.to(tl.int64) * K * V + rk[:, None] * V + rv[None, :]
    kv_mask = (rk[:, None] < K) & (rv[None, :] < V)
    h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL:
        h += tl.load(h0_ptr + kv_offs, mask=kv_mask, other=0.0)
    for t in range(T):
        k_ptrs, k_mask = _row_ptrs(k_ptr, i_b, i_h, t, 0, T, H, K, BK)
        q_ptrs, _ = _row_ptrs(q_ptr, i_b, i_h, t, 0, T, H, K, BK)
        g_ptrs, _ = _row_ptrs(g_ptr, i_b, i_h, t, 0, T, H, K, BK)
        v_ptrs, v_mask = _row_ptrs(v_ptr, i_b, i_h, t, i_v * BV, T, H, V, BV)
        b_q = tl.load(q_ptrs, mask=k_mask, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k_ptrs, mask=k_mask, other=0.0).to(tl.float32)
        b_g = tl.load(g_ptrs, mask=k_mask, other=0.0).to(tl.float32)
        b_v = tl.load(v_ptrs, mask=v_mask, other=0.0).to(tl.float32)
        h = h * tl.exp(b_g)[:, None] + b_k[:, None] * b_v[None, :]
        o = tl.sum(h * b_q[:, None], axis=0)
        o_ptrs, _ = _row_ptrs(o_ptr, i_b, i_h, t, i_v * BV, T, H, V, BV)
        tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=v_mask)
    if STORE_FINAL:
        tl.store(ht_ptr + kv_offs, h, mask=kv_mask)


def dot_precision(dtype: torch.dtype) -> str:
    """Tensor-core precision of the chunk matmuls: fp32 inputs stay fp32 ("ieee"; TF32 would
    lose about three decimal digits), half-precision inputs accumulate their products in fp32
    ("tf32" for the fp32-valued gate-scaled operands)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _block(dim: int, cap: int) -> int:
    return min(max(triton.next_power_of_2(dim), 16), cap)


@dataclass(frozen=True)
class StateLaunch:
    """Launch shape of the inter-chunk pass: a ``[bk, bv]`` fp32 state tile per program, and
    ``segments``, programs along the chunk sequence (``1``: one sequential pass, no carry; the
    count is capped at one segment per chunk)."""

    bk: int
    bv: int
    segments: int = 1

    def __post_init__(self) -> None:
        for name in ("bk", "bv"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"expected {name} a power of two >= 16, got {value}")
        if self.segments < 1:
            raise ValueError(f"expected segments >= 1, got {self.segments}")


def default_state_launch(batch_heads: int, chunks: int, dk: int, dv: int, sms: int) -> StateLaunch:
    """The inter-chunk launch for ``batch_heads`` heads of ``chunks`` chunks on a GPU with
    ``sms`` multiprocessors: ``[64, 64]`` tiles (smaller for smaller head dims); one pass for
    fewer than ``MIN_CHUNKS_TO_SEGMENT`` chunks; else as many segments as fit
    ``STATE_PROGRAMS_PER_SM`` programs per multiprocessor, each at least ``MIN_SEGMENT_CHUNKS``
    chunks long, then, while twice the programs still fit, tiles halved down to 32. A grid that
    already fills the GPU keeps one pass. Timed on an H200 (README.md).
    """
    target = STATE_PROGRAMS_PER_SM * sms
    bk, bv = _block(dk, 64), _block(dv, 64)
    if chunks < MIN_CHUNKS_TO_SEGMENT:
        return StateLaunch(bk, bv)
    programs = batch_heads * triton.cdiv(dk, bk) * triton.cdiv(dv, bv)
    segments = max(1, min(target // programs, chunks // MIN_SEGMENT_CHUNKS))
    while 2 * programs * segments <= target and max(bk, bv) > 32:
        if bv >= bk:
            bv //= 2
        else:
            bk //= 2
        programs = batch_heads * triton.cdiv(dk, bk) * triton.cdiv(dv, bv)
    return StateLaunch(bk, bv, segments)


def _inter_chunk_states(
    k: torch.Tensor,
    v: torch.Tensor,
    gc: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
    launch: StateLaunch,
) -> tuple[torch.Tensor, ...]:
    """Launch the inter-chunk pass (and the segment carry when segmented). Returns the chunk
    states from their segment's start ``[B, H, NT, K, V]``, their log decays from the segment's
    start ``[B, H, NT, K]``, the states entering the segments ``[B*H, S, K, V]``, the final
    state ``[B, H, K, V]`` and the chunks per segment. With one segment the decays and segment
    states are placeholders (the chunk states are then the full states)."""
    batch, length, heads, dk = k.shape
    dv, bh, dev, f32 = v.shape[3], batch * heads, k.device, torch.float32
    nt = triton.cdiv(length, chunk_size)
    cps = triton.cdiv(nt, launch.segments)
    segments = triton.cdiv(nt, cps)
    h = torch.empty(batch, heads, nt, dk, dv, dtype=f32, device=dev)
    final = torch.empty(batch, heads, dk, dv, dtype=f32, device=dev)
    h0 = final if initial_state is None else initial_state.contiguous()
    ld = seg_end = seg_ld = seg_in = h  # placeholders, unused by a single pass
    if segments > 1:
        ld = torch.empty(batch, heads, nt, dk, dtype=f32, device=dev)
        seg_end = torch.empty(bh, segments, dk, dv, dtype=f32, device=dev)
        seg_in = torch.empty_like(seg_end)
        seg_ld = torch.empty(bh, segments, dk, dtype=f32, device=dev)
    nk, nv = triton.cdiv(dk, launch.bk), triton.cdiv(dv, launch.bv)
    _chunk_state_kernel[(nk * segments, nv, bh)](
        k, v, gc, h, ld, h0, final, seg_end, seg_ld, length, heads, dk, dv, nt, cps,
        BT=chunk_size, BK=launch.bk, BV=launch.bv, USE_INITIAL=initial_state is not None,
        STORE_FINAL=output_final_state, SEGMENTED=segments > 1,
        DOT_PRECISION=dot_precision(v.dtype),
    )  # fmt: skip
    if segments > 1:
        _segment_carry_kernel[(nk, nv, bh)](
            seg_end, seg_ld, seg_in, final, dk, dv, segments,
            BK=launch.bk, BV=launch.bv, STORE_FINAL=output_final_state,
        )  # fmt: skip
    return h, ld, seg_in, final, cps


def chunk_gla_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    *,
    launch: StateLaunch | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise-parallel GLA forward: gate cumsum, inter-chunk states, a carry over segments
    when segmented, intra-chunk scores, outputs.

    Args:
        q, k: queries and keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g: log forget gate ``[B, T, H, K]`` (``<= 0``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32 or ``None`` (zeros).
        output_final_state: return the final state ``[B, H, K, V]`` fp32, else ``None``.
        chunk_size: tokens per chunk, a power of two >= 16.
        launch: the inter-chunk launch shape; default ``default_state_launch`` for this GPU.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state (or ``None``).
    """
    check_gla_args(q, k, v, g, initial_state)
    if chunk_size < SUB_CHUNK or chunk_size & (chunk_size - 1):
        raise ValueError(f"expected chunk_size a power of two >= {SUB_CHUNK}, got {chunk_size}")
    batch, length, heads, dk = q.shape
    dv = v.shape[3]
    scale = default_scale(q, scale)
    if length == 0:
        o, state = gla_recurrent_reference(q, k, v, g, scale, initial_state)
        return o, state if output_final_state else None
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    bt, bk, bv = chunk_size, _block(dk, 64), _block(dv, 64)
    nt, bh, dot = triton.cdiv(length, bt), batch * heads, dot_precision(v.dtype)
    if launch is None:
        launch = default_state_launch(bh, nt, dk, dv, multiprocessors(q.device))
    gc = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    _chunk_cumsum_kernel[(nt, bh)](g, gc, length, heads, dk, BT=bt, BK=bk)
    h, ld, seg_in, final, cps = _inter_chunk_states(
        k, v, gc, initial_state, output_final_state, bt, launch
    )
    stages = 1 if dk <= bk else 2  # a one-tile K loop gains nothing from pipelining but smem
    a = torch.empty(batch, length, heads, bt, dtype=v.dtype, device=q.device)
    _chunk_intra_kernel[(nt * (bt // SUB_CHUNK), bh)](
        q, k, gc, a, scale, length, heads, dk,
        BT=bt, BC=SUB_CHUNK, BK=bk, DOT_PRECISION=dot, num_stages=stages,
        num_warps=8,  # 4 spill registers on the fp32 ("ieee") path
    )  # fmt: skip
    o = torch.empty(v.shape, dtype=v.dtype, device=q.device)
    _chunk_output_kernel[(triton.cdiv(dv, bv), nt, bh)](
        q, v, gc, h, ld, seg_in, a, o, scale, length, heads, dk, dv, nt, cps,
        BT=bt, BK=bk, BV=bv, SEGMENTED=cps < nt, DOT_PRECISION=dot, num_stages=stages,
    )  # fmt: skip
    return o, final if output_final_state else None


def fused_recurrent_gla_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token GLA in one launch, state ``[K, BV]`` tile in registers (decoding).

    Args:
        q, k: queries and keys ``[B, T, H, K]`` (``K <= 256``).
        v: values ``[B, T, H, V]``.
        g: log forget gate ``[B, T, H, K]``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32 or ``None`` (zeros).
        output_final_state: return the final state ``[B, H, K, V]`` fp32, else ``None``.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state (or ``None``).
    """
    check_gla_args(q, k, v, g, initial_state)
    batch, length, heads, dk = q.shape
    dv = v.shape[3]
    if dk > 256:
        raise ValueError(f"expected head dim K <= 256, got {dk}")
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    final = torch.empty(batch, heads, dk, dv, dtype=torch.float32, device=v.device)
    h0 = final if initial_state is None else initial_state.contiguous()
    bk = _block(dk, 256)
    bv = _block(dv, max(16, 4096 // bk))
    _fused_recurrent_kernel[(triton.cdiv(dv, bv), batch * heads)](
        q, k, v, g, o, h0, final, default_scale(q, scale), length, heads, dk, dv,
        BK=bk, BV=bv, USE_INITIAL=initial_state is not None, STORE_FINAL=output_final_state,
    )  # fmt: skip
    return o, final if output_final_state else None
