"""Gated linear attention (GLA): chunkwise-parallel forward and a recurrent decoding step.

``gla_chunk`` and ``gla_recurrent_step`` use the Triton kernels on CUDA (unless
``GANGLION_KERNELS=0``) and the PyTorch references elsewhere: the chunkwise form for
``gla_chunk``, the loop for ``gla_recurrent_step``. The Triton kernels are forward-only; the
references are differentiable.
"""

import torch

from ganglion.kernels.checks import expect_ndim
from ganglion.kernels.dispatch import use_triton
from ganglion.kernels.gla.reference import gla_chunk_reference, gla_recurrent_reference

__all__ = ["gla_chunk", "gla_recurrent_step"]


def gla_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA over a whole sequence (fla's ``chunk_gla`` layout).

    Args:
        q, k: queries and keys ``[B, T, H, K]``.
        v: values ``[B, T, H, V]``.
        g: log-space forget gate ``[B, T, H, K]`` (``<= 0``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` fp32 or ``None`` (zeros).
        output_final_state: also return the final state ``[B, H, K, V]`` fp32.
        chunk_size: tokens per chunk, a power of two >= 16 for the kernel (any >= 1 for the
            reference).
        use_kernel: ``True``/``False`` force the Triton kernel / the reference; ``None`` uses the
            kernel on CUDA tensors when kernels are enabled.

    Returns:
        ``o`` ``[B, T, H, V]`` in ``v``'s dtype and the final state (``None`` unless asked).
    """
    if use_triton(use_kernel, q, k, v, g):
        from ganglion.kernels.gla.triton import chunk_gla_triton

        return chunk_gla_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return gla_chunk_reference(q, k, v, g, scale, initial_state, output_final_state, chunk_size)


def gla_recurrent_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    g_t: torch.Tensor,
    state: torch.Tensor,
    scale: float | None = None,
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GLA token: ``S = diag(exp(g_t)) S + k_t^T v_t``, ``o_t = scale * q_t S``.

    Args:
        q_t, k_t: query and key ``[B, H, K]``.
        v_t: value ``[B, H, V]``.
        g_t: log forget gate ``[B, H, K]``.
        state: ``[B, H, K, V]`` fp32.
        scale: query scale, default ``K ** -0.5``.
        use_kernel: as in ``gla_chunk`` (the kernel is the fused recurrent one).

    Returns:
        ``o_t`` ``[B, H, V]`` in ``v_t``'s dtype and the new state ``[B, H, K, V]`` fp32.
    """
    expect_ndim("q_t", q_t, 3, "[B, H, K]")
    expect_ndim("v_t", v_t, 3, "[B, H, V]")
    q, k, v, g = (x[:, None] for x in (q_t, k_t, v_t, g_t))
    if use_triton(use_kernel, q_t, state):
        from ganglion.kernels.gla.triton import fused_recurrent_gla_triton

        o, state = fused_recurrent_gla_triton(q, k, v, g, scale, state, True)
    else:
        o, state = gla_recurrent_reference(q, k, v, g, scale, state)
    return o[:, 0], state
