"""Triton GLA: chunkwise-parallel forward and a fused recurrent kernel, fp32 state.

Chunkwise form (chunk of ``BT`` tokens, ``G_t`` = cumulative sum of ``g`` from the chunk start,
``S`` = state entering the chunk)::

    o_t = (scale q_t * exp(G_t)) S + sum_{j <= t} A_tj v_j
    A_tj = scale * sum_k q_tk k_jk exp(G_tk - G_jk)
    S'  = diag(exp(G_last)) S + (k * exp(G_last - G))^T v

Every exponent above is <= 0, so nothing overflows. ``A`` is built in sub-chunks of ``BC``
tokens: off-diagonal blocks factor through the gate at the row block's first token
(``exp(G_t - G_n) * exp(G_n - G_j)``, both factors <= 1) and become a matmul; diagonal blocks
are computed element-wise in log space. Derivation in README.md.
"""

import torch
import triton
import triton.language as tl

from ganglion.kernels.gla.reference import (
    check_gla_args,
    default_scale,
    gla_recurrent_reference,
)

SUB_CHUNK = 16


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
    h_ptr,  # [B, H, NT, K, V] state entering each chunk
    h0_ptr,  # [B, H, K, V]
    ht_ptr,  # [B, H, K, V]
    T,
    H,
    K,
    V,
    NT,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    rk = i_k * BK + tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    kv_offs = rk[:, None] * V + rv[None, :]
    kv_mask = (rk[:, None] < K) & (rv[None, :] < V)
    h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL:
        h += tl.load(h0_ptr + i_bh.to(tl.int64) * K * V + kv_offs, mask=kv_mask, other=0.0)
    for i_t in range(NT):
        tl.store(h_ptr + (i_bh.to(tl.int64) * NT + i_t) * K * V + kv_offs, h, mask=kv_mask)
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
    if STORE_FINAL:
        tl.store(ht_ptr + i_bh.to(tl.int64) * K * V + kv_offs, h, mask=kv_mask)


@triton.jit
def _chunk_intra_kernel(
    q_ptr,  # [B, T, H, K]
    k_ptr,
    gc_ptr,
    a_ptr,  # [B, T, H, BT] intra-chunk scores, row t against the chunk's tokens
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
    i_t, i_i, i_j = i_c // (NC * NC), (i_c // NC) % NC, i_c % NC
    t_i = i_t * BT + i_i * BC
    t_j = i_t * BT + i_j * BC
    if (i_i >= i_j) & (t_i < T):
        a = tl.zeros([BC, BC], dtype=tl.float32)
        rows = tl.arange(0, BC)
        cols = tl.arange(0, BC)
        for k0 in range(0, K, BK):
            q_ptrs, q_mask = _tile_ptrs(q_ptr, i_b, i_h, t_i, k0, T, H, K, BC, BK)
            gi_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t_i, k0, T, H, K, BC, BK)
            b_q = tl.load(q_ptrs, mask=q_mask, other=0.0).to(tl.float32) * scale
            b_gi = tl.load(gi_ptrs, mask=q_mask, other=0.0)
            if i_i > i_j:
                k_ptrs, k_mask = _tile_ptrs(k_ptr, i_b, i_h, t_j, k0, T, H, K, BC, BK)
                gj_ptrs, _ = _tile_ptrs(gc_ptr, i_b, i_h, t_j, k0, T, H, K, BC, BK)
                gn_ptrs, gn_mask = _row_ptrs(gc_ptr, i_b, i_h, t_i, k0, T, H, K, BK)
                b_k = tl.load(k_ptrs, mask=k_mask, other=0.0).to(tl.float32)
                b_gj = tl.load(gj_ptrs, mask=k_mask, other=0.0)
                b_gn = tl.load(gn_ptrs, mask=gn_mask, other=0.0)
                b_qg = b_q * tl.exp(b_gi - b_gn[None, :])
                b_kg = b_k * tl.exp(b_gn[None, :] - b_gj)
                a += tl.dot(b_qg, tl.trans(b_kg), input_precision=DOT_PRECISION)
            else:
                for j in range(BC):
                    kj_ptrs, kj_mask = _row_ptrs(k_ptr, i_b, i_h, t_i + j, k0, T, H, K, BK)
                    gj_row_ptrs, gj_row_mask = _row_ptrs(gc_ptr, i_b, i_h, t_i + j, k0, T, H, K, BK)
                    b_kj = tl.load(kj_ptrs, mask=kj_mask, other=0.0).to(tl.float32)
                    b_gj = tl.load(gj_row_ptrs, mask=kj_mask, other=0.0)
                    causal = rows[:, None] >= j
                    decay = tl.exp(tl.where(causal, b_gi - b_gj[None, :], 0.0))
                    col = tl.sum(tl.where(causal, b_q * b_kj[None, :] * decay, 0.0), axis=1)
                    a += tl.where(cols[None, :] == j, col[:, None], 0.0)
        a_ptrs, a_mask = _tile_ptrs(a_ptr, i_b, i_h, t_i, i_j * BC, T, H, BT, BC, BC)
        tl.store(a_ptrs, a, mask=a_mask)


@triton.jit
def _chunk_output_kernel(
    q_ptr,  # [B, T, H, K]
    v_ptr,  # [B, T, H, V]
    gc_ptr,  # [B, T, H, K]
    h_ptr,  # [B, H, NT, K, V]
    a_ptr,  # [B, T, H, BT]
    o_ptr,  # [B, T, H, V]
    scale,
    T,
    H,
    K,
    V,
    NT,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
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
        h_offs = (i_bh.to(tl.int64) * NT + i_t) * K * V + rk[:, None] * V + rv[None, :]
        b_h = tl.load(h_ptr + h_offs, mask=(rk[:, None] < K) & (rv[None, :] < V), other=0.0)
        o += tl.dot(b_qg, b_h.to(b_v.dtype), input_precision=DOT_PRECISION)
    a_ptrs, a_mask = _tile_ptrs(a_ptr, i_b, i_h, t0, 0, T, H, BT, BT, BT)
    b_a = tl.load(a_ptrs, mask=a_mask, other=0.0)
    causal = tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]
    b_a = tl.where(causal, b_a, 0.0).to(b_v.dtype)
    o += tl.dot(b_a, b_v, input_precision=DOT_PRECISION)
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


def chunk_gla_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunkwise-parallel GLA forward (four launches: gate cumsum, inter-chunk states,
    intra-chunk scores, outputs).

    Args:
        q, k: queries and keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g: log forget gate ``[B, T, H, K]``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32 or ``None`` (zeros).
        output_final_state: return the final state ``[B, H, K, V]`` fp32, else ``None``.
        chunk_size: tokens per chunk, a power of two >= 16.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state (or ``None``).
    """
    check_gla_args(q, k, v, g, initial_state)
    if chunk_size < SUB_CHUNK or chunk_size & (chunk_size - 1):
        raise ValueError(f"expected chunk_size a power of two >= {SUB_CHUNK}, got {chunk_size}")
    batch, length, heads, dk = q.shape
    dv = v.shape[3]
    scale = default_scale(q, scale)
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    bt, bk, bv = chunk_size, _block(dk, 64), _block(dv, 64)
    nt = triton.cdiv(length, bt)
    dev = q.device
    gc = torch.empty(q.shape, dtype=torch.float32, device=dev)
    h = torch.empty(batch, heads, nt, dk, dv, dtype=torch.float32, device=dev)
    a = torch.empty(batch, length, heads, bt, dtype=torch.float32, device=dev)
    o = torch.empty(v.shape, dtype=v.dtype, device=dev)
    final = torch.empty(batch, heads, dk, dv, dtype=torch.float32, device=dev)
    h0 = final if initial_state is None else initial_state.contiguous()
    if length == 0:
        o, state = gla_recurrent_reference(q, k, v, g, scale, initial_state)
        return o, state if output_final_state else None
    bh = batch * heads
    dot = dot_precision(v.dtype)
    _chunk_cumsum_kernel[(nt, bh)](g, gc, length, heads, dk, BT=bt, BK=bk)
    _chunk_state_kernel[(triton.cdiv(dk, bk), triton.cdiv(dv, bv), bh)](
        k, v, gc, h, h0, final, length, heads, dk, dv, nt, BT=bt, BK=bk, BV=bv,
        USE_INITIAL=initial_state is not None, STORE_FINAL=output_final_state, DOT_PRECISION=dot,
    )  # fmt: skip
    nc = bt // SUB_CHUNK
    _chunk_intra_kernel[(nt * nc * nc, bh)](
        q, k, gc, a, scale, length, heads, dk, BT=bt, BC=SUB_CHUNK, BK=bk, DOT_PRECISION=dot
    )
    _chunk_output_kernel[(triton.cdiv(dv, bv), nt, bh)](
        q, v, gc, h, a, o, scale, length, heads, dk, dv, nt, BT=bt, BK=bk, BV=bv,
        DOT_PRECISION=dot,
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
