"""Plain PyTorch gated linear attention (GLA): the loop-based recurrence is the spec.

Per head, with ``q_t, k_t, g_t`` ``[K]``, ``v_t`` ``[V]`` and state ``S`` ``[K, V]``::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t
    o_t = (scale * q_t) S_t

``g`` is the log-space forget gate (``logsigmoid(...) / 16`` in GLA), so ``g <= 0``.
"""

import torch

from ganglion.kernels.checks import (
    FLOAT_DTYPES,
    expect_dtype,
    expect_ndim,
    expect_same_device,
    expect_shape,
)


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
