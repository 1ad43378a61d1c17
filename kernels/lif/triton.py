"""Triton LIF kernels: one launch covers all ``T`` steps, membrane state stays in registers.

Each program owns ``BLOCK`` neurons of the flattened ``[B * N]`` state and walks time; reads
and writes are contiguous along ``B * N``, so the kernel is bound by memory bandwidth.
"""

import torch
import triton
import triton.language as tl

from ganglion.kernels.lif.reference import (
    RESETS,
    UV_LIMIT,
    check_lif_args,
    check_lif_fixed_args,
)

BLOCK = 256


@triton.jit
def _lif_scan_kernel(
    current_ptr,  # [T, B*N]
    v0_ptr,  # [B*N]
    decay_ptr,  # [N]
    threshold_ptr,
    bias_ptr,
    v_reset_ptr,
    spikes_ptr,  # [T, B*N]
    v_final_ptr,  # [B*N]
    T,
    M,
    N,
    RESET_ZERO: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    neuron = offs % N
    decay = tl.load(decay_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    threshold = tl.load(threshold_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    v_reset = tl.load(v_reset_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    row = offs.to(tl.int64)
    for _ in range(T):
        x = tl.load(current_ptr + row, mask=mask, other=0.0).to(tl.float32)
        v = decay * v + bias + x
        s = v > threshold
        if RESET_ZERO:
            v = tl.where(s, v_reset, v)
        else:
            v = tl.where(s, v - threshold, v)
        tl.store(spikes_ptr + row, s.to(spikes_ptr.dtype.element_ty), mask=mask)
        row += M
    tl.store(v_final_ptr + offs, v, mask=mask)


@triton.jit
def _decay_toward_zero(x, keep):
    prod = x * keep
    return tl.where(prod < 0, -((-prod) >> 12), prod >> 12)


@triton.jit
def _lif_fixed_scan_kernel(
    a_in_ptr,  # [T, B*N]
    u0_ptr,  # [B*N]
    v0_ptr,
    du_ptr,  # [N]
    dv_ptr,
    bias_mant_ptr,
    bias_exp_ptr,
    vth_ptr,
    spikes_ptr,  # [T, B*N]
    u_final_ptr,  # [B*N]
    v_final_ptr,
    T,
    M,
    N,
    UV_LIMIT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    neuron = offs % N
    keep_u = 4095 - tl.load(du_ptr + neuron, mask=mask, other=0).to(tl.int64)
    keep_v = 4096 - tl.load(dv_ptr + neuron, mask=mask, other=0).to(tl.int64)
    mant = tl.load(bias_mant_ptr + neuron, mask=mask, other=0).to(tl.int64)
    exp = tl.load(bias_exp_ptr + neuron, mask=mask, other=0).to(tl.int64)
    bias = (mant << tl.maximum(exp, 0)) >> tl.maximum(-exp, 0)
    vth = tl.load(vth_ptr + neuron, mask=mask, other=0).to(tl.int64) << 6
    u = tl.load(u0_ptr + offs, mask=mask, other=0).to(tl.int64)
    v = tl.load(v0_ptr + offs, mask=mask, other=0).to(tl.int64)
    row = offs.to(tl.int64)
    for _ in range(T):
        a = tl.load(a_in_ptr + row, mask=mask, other=0).to(tl.int64)
        u = _decay_toward_zero(u, keep_u) + (a << 6)
        u = tl.where(u > UV_LIMIT, u - 2 * UV_LIMIT, u)
        u = tl.where(u <= -UV_LIMIT, u + 2 * UV_LIMIT, u)
        v = _decay_toward_zero(v, keep_v) + u + bias
        v = tl.minimum(tl.maximum(v, 1 - UV_LIMIT), UV_LIMIT - 1)
        s = v > vth
        v = tl.where(s, 0, v)
        tl.store(spikes_ptr + row, s.to(spikes_ptr.dtype.element_ty), mask=mask)
        row += M
    tl.store(u_final_ptr + offs, u.to(u_final_ptr.dtype.element_ty), mask=mask)
    tl.store(v_final_ptr + offs, v.to(v_final_ptr.dtype.element_ty), mask=mask)


def _grid(m: int) -> tuple[int]:
    return (max(triton.cdiv(m, BLOCK), 1),)


def lif_scan_triton(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str = "subtract",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float LIF over ``T`` steps in one Triton launch (same contract as ``lif_scan_reference``).

    Args:
        current: input current ``[T, B, N]`` (fp32/fp16/bf16).
        v0: initial membrane potential ``[B, N]``.
        decay, threshold, bias, v_reset: per-neuron parameters ``[N]``.
        reset: ``"subtract"`` or ``"zero"``.

    Returns:
        spikes ``[T, B, N]`` in ``current``'s dtype and the final potential ``[B, N]`` fp32.
    """
    check_lif_args(current, v0, decay, threshold, bias, v_reset, reset)
    t, b, n = current.shape
    current = current.contiguous()
    spikes = torch.empty_like(current)
    v_final = torch.empty((b, n), dtype=torch.float32, device=current.device)
    params = [p.contiguous() for p in (decay, threshold, bias, v_reset)]
    _lif_scan_kernel[_grid(b * n)](
        current, v0.contiguous(), *params, spikes, v_final, t, b * n, n,
        RESET_ZERO=RESETS.index(reset) == 1, BLOCK=BLOCK,
        enable_fp_fusion=False,  # no FMA, so spikes match the eager reference bit for bit
    )  # fmt: skip
    return spikes, v_final


def lif_fixed_scan_triton(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    bias_mant: torch.Tensor,
    bias_exp: torch.Tensor,
    vth: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loihi 2 bit-accurate CUBA LIF in one Triton launch (contract of
    ``lif_fixed_scan_reference``).

    Args:
        a_in: synaptic input ``[T, B, N]`` (int tensor holding int16 values).
        u0, v0: initial current and voltage ``[B, N]`` (int32/int64).
        du, dv, bias_mant, bias_exp, vth: per-neuron int parameters ``[N]``.

    Returns:
        spikes ``[T, B, N]`` in ``a_in``'s dtype, ``u_final`` and ``v_final`` ``[B, N]``.
    """
    params = {"du": du, "dv": dv, "bias_mant": bias_mant, "bias_exp": bias_exp, "vth": vth}
    check_lif_fixed_args(a_in, u0, v0, params)
    t, b, n = a_in.shape
    a_in = a_in.contiguous()
    spikes = torch.empty_like(a_in)
    u_final = torch.empty((b, n), dtype=u0.dtype, device=a_in.device)
    v_final = torch.empty((b, n), dtype=v0.dtype, device=a_in.device)
    _lif_fixed_scan_kernel[_grid(b * n)](
        a_in, u0.contiguous(), v0.contiguous(), *(p.contiguous() for p in params.values()),
        spikes, u_final, v_final, t, b * n, n, UV_LIMIT=UV_LIMIT, BLOCK=BLOCK,
    )  # fmt: skip
    return spikes, u_final, v_final
