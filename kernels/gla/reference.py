"""Plain PyTorch gated linear attention (GLA): the loop-based recurrence is the spec;
``gla_chunk_reference`` is the same function in chunkwise-parallel form (the CPU path).

Per head, with ``q_t, k_t, g_t`` ``[K]``, ``v_t`` ``[V]`` and state ``S`` ``[K, V]``::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t
    o_t = (scale * q_t) S_t

``g`` is the log-space forget gate (``logsigmoid(...) / 16`` in GLA), so ``g <= 0``.
"""

import torch
import torch.nn.functional as F

from ganglion.kernels.checks import (
    FLOAT_DTYPES,
    expect_dtype,
    expect_ndim,
    expect_same_device,
    expect_shape,
)

SUB_CHUNK = 8  # tokens per diagonal block of the chunkwise form (fastest on CPU)


def check_gla_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None,
) -> None:
    """Validate ``q, k, g`` ``[B, T, H, K]``, ``v`` ``[B, T, H, V]``, state ``[B, H, K, V]``."""
    expect_ndim("q", q, 4, "[B, T, H, K]")
    expect_ndim("v", v, 4, "[B, T, H, V]")
    batch, length, heads, _ = q.shape
    for name, x in (("k", k), ("g", g)):
        expect_shape(name, x, q.shape)
    expect_shape("v", v, (batch, length, heads, v.shape[3]))
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g)):
        expect_dtype(name, x, FLOAT_DTYPES)
    if state is not None:
        expect_shape("state", state, (batch, heads, q.shape[3], v.shape[3]))
        expect_dtype("state", state, (torch.float32,))
        expect_same_device(q=q, state=state)
    expect_same_device(q=q, k=k, v=v, g=g)


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    """``scale`` or ``K ** -0.5``."""
    return q.shape[-1] ** -0.5 if scale is None else scale


def gla_recurrent_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLA by the token-by-token recurrence, fp32 state.

    Args:
        q, k: queries and keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g: log forget gate ``[B, T, H, K]``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32, or ``None`` for zeros.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state ``[B, H, K, V]`` fp32.
    """
    check_gla_args(q, k, v, g, initial_state)
    batch, length, heads, dk = q.shape
    scale = default_scale(q, scale)
    if initial_state is None:
        state = q.new_zeros(batch, heads, dk, v.shape[3], dtype=torch.float32)
    else:
        state = initial_state.float()
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    for t in range(length):
        q_t, k_t, v_t, g_t = (x[:, t].float() for x in (q, k, v, g))  # [B, H, K|V]
        state = state * g_t.exp()[..., None] + k_t[..., None] * v_t[..., None, :]
        o[:, t] = ((q_t * scale)[..., None] * state).sum(-2).to(v.dtype)
    return o, state


def gla_chunk_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA in chunkwise-parallel form, plain PyTorch in fp32 (differentiable; the CPU path).

    Chunks of ``chunk_size`` tokens pass the state sequentially; inside a chunk the output is
    ``(scale q_t * exp(G_t)) S + sum_{j <= t} A_tj v_j`` with ``G`` the gate's cumulative sum
    from the chunk start. ``A`` is built from sub-chunks of 8 tokens (README.md): every
    exponent is ``<= 0``, so strong decay cannot overflow.

    Args:
        q, k: queries and keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g: log forget gate ``[B, T, H, K]`` (``<= 0``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32, or ``None`` for zeros.
        output_final_state: also return the final state ``[B, H, K, V]`` fp32.
        chunk_size: tokens per chunk, ``>= 1``.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state (``None`` unless asked).
    """
    check_gla_args(q, k, v, g, initial_state)
    if chunk_size < 1:
        raise ValueError(f"expected chunk_size >= 1, got {chunk_size}")
    length, out_dtype = q.shape[1], v.dtype  # the batch stays symbolic: no Python ints of it
    scale = default_scale(q, scale)
    sub = SUB_CHUNK if chunk_size % SUB_CHUNK == 0 else chunk_size
    chunk_size = min(chunk_size, max(-(-length // sub), 1) * sub)  # no padding beyond need
    chunks = -(-length // chunk_size)
    padded = chunks * chunk_size
    # [B, H, N, C, D] fp32; padding (zero keys, zero gates) leaves outputs and state unchanged
    q, k, v, g = (
        F.pad(x.float().transpose(1, 2), (0, 0, 0, padded - length)).unflatten(
            2, (chunks, chunk_size)
        )
        for x in (q, k, v, g)
    )
    gc = g.cumsum(3)  # G: cumulative gate from the chunk start
    after = F.pad(g.flip(3).cumsum(3).flip(3)[:, :, :, 1:], (0, 0, 0, 1))  # G_last - G_t
    updates = (k * after.exp()).transpose(-1, -2) @ v  # [B, H, N, K, V]
    decay = gc[:, :, :, -1].exp()[..., None]  # [B, H, N, K, 1]
    state = torch.zeros_like(updates[:, :, 0]) if initial_state is None else initial_state
    entering = []
    for n in range(chunks):
        entering.append(state)
        state = decay[:, :, n] * state + updates[:, :, n]
    inter = (q * scale * gc.exp()) @ torch.stack(entering, 2)  # [B, H, N, C, V]
    intra = _intra_chunk_scores(q * scale, k, g, gc, sub) @ v
    o = (inter + intra).flatten(2, 3)[:, :, :length].transpose(1, 2).to(out_dtype)
    return o, state if output_final_state else None


def _intra_chunk_scores(
    q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, gc: torch.Tensor, sub: int
) -> torch.Tensor:
    """``A_tj = sum_k q_tk k_jk exp(G_tk - G_jk)`` for ``j <= t`` within each chunk, else 0.

    ``q, k, g, gc`` (gate, its cumulative sum) ``[B, H, N, C, K]`` with ``C`` a multiple of
    ``sub``; returns ``[B, H, N, C, C]``. Exponents inside a sub-chunk come from the sub-chunk's
    own cumulative gate, whose rounding error is smaller than the chunk's.
    Rows of sub-chunk ``i`` against columns of an earlier sub-chunk factor through ``G_n``, the
    gate at the row sub-chunk's first token: ``exp(G_t - G_n) * exp(G_n - G_j)``, both ``<= 1``.
    Diagonal sub-chunks are element-wise with the exponent masked to ``j <= t``.
    """
    m = q.shape[-2] // sub
    q, k, g, gc = (x.unflatten(-2, (m, sub)) for x in (q, k, g, gc))  # [B, H, N, M, c, K]
    local = g.cumsum(-2)  # G_t - G at the sub-chunk's start
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()
    exponent = local[..., :, None, :] - local[..., None, :, :]  # [B, H, N, M, c, c, K]
    exponent = exponent.masked_fill(~causal[..., None], float("-inf"))
    diag = (q[..., :, None, :] * k[..., None, :, :] * exponent.exp()).sum(-1)  # [.., M, c, c]
    eye = torch.eye(m, dtype=q.dtype, device=q.device)[:, None, :, None]
    scores = diag[..., None, :] * eye  # [B, H, N, Mi, c, Mj, c], block-diagonal
    if m > 1:
        ref = gc[..., 0, :]  # [B, H, N, M, K] G_n
        q_rel = q * (local - local[..., :1, :]).exp()  # [B, H, N, M, c, K]
        earlier = torch.ones(m, m, dtype=torch.bool, device=q.device).tril(-1)  # j < i
        k_exp = ref[..., :, None, None, :] - gc[..., None, :, :, :]  # [B, H, N, Mi, Mj, c, K]
        k_exp = k_exp.masked_fill(~earlier[:, :, None, None], float("-inf"))
        k_rel = k[..., None, :, :, :] * k_exp.exp()
        off = torch.einsum("...iak,...ijbk->...iajb", q_rel, k_rel)  # [.., Mi, c, Mj, c]
        scores = scores + off
    return scores.flatten(-4, -3).flatten(-2, -1)
