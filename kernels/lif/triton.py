"""Triton LIF kernels: one launch covers all ``T`` steps, membrane state stays in registers.

Each program owns ``BLOCK`` lanes of the flattened ``[B * N]`` state and walks time in tiles of
``DEPTH`` steps (``kernels/time_tiles.py``), prefetching the next tile while it computes this
one. Reads and writes are contiguous along ``B * N``: the kernel is bound by memory bandwidth.
"""

import torch
import triton
import triton.language as tl

from ganglion.kernels.launch import Launch, pick_block, warps_for
from ganglion.kernels.lif.reference import (
    RESETS,
    UV_LIMIT,
    check_lif_args,
    check_lif_fixed_args,
)
from ganglion.kernels.time_tiles import load_tile, put_row, take_row, tile_ptrs

BLOCKS = (256, 512, 1024)
DEPTH = 16  # float LIF: measured best on an H200 (benchmarks/kernel_tuning.py)
FIXED_DEPTH = 8  # the int64 fixed-point step is heavier: shorter tiles keep it in registers


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
    DEPTH: tl.constexpr,
):
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < M
    neuron = lanes % N
    decay = tl.load(decay_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    threshold = tl.load(threshold_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    v_reset = tl.load(v_reset_ptr + neuron, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v0_ptr + lanes, mask=mask, other=0.0).to(tl.float32)
    ahead = load_tile(current_ptr, 0, lanes, mask, T, M, DEPTH)
    for t0 in range(0, T, DEPTH):
        x_tile = ahead
        out_ptrs, out_mask = tile_ptrs(spikes_ptr, t0, lanes, mask, T, M, DEPTH)
        ahead = load_tile(current_ptr, t0 + DEPTH, lanes, mask, T, M, DEPTH)
        s_tile = tl.zeros([DEPTH, BLOCK], dtype=spikes_ptr.dtype.element_ty)
        for i in tl.static_range(DEPTH):
            v_new = decay * v + bias + take_row(x_tile, i, DEPTH).to(tl.float32)
            s = v_new > threshold
            if RESET_ZERO:
                v_new = tl.where(s, v_reset, v_new)
            else:
                v_new = tl.where(s, v_new - threshold, v_new)
            v = tl.where(t0 + i < T, v_new, v)
            s_tile = put_row(s_tile, i, s.to(spikes_ptr.dtype.element_ty), DEPTH)
        tl.store(out_ptrs, s_tile, mask=out_mask)
    tl.store(v_final_ptr + lanes, v, mask=mask)


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
    DEPTH: tl.constexpr,
):
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < M
    neuron = lanes % N
    keep_u = 4095 - tl.load(du_ptr + neuron, mask=mask, other=0).to(tl.int64)
    keep_v = 4096 - tl.load(dv_ptr + neuron, mask=mask, other=0).to(tl.int64)
    mant = tl.load(bias_mant_ptr + neuron, mask=mask, other=0).to(tl.int64)
    exp = tl.load(bias_exp_ptr + neuron, mask=mask, other=0).to(tl.int64)
    bias = (mant << tl.maximum(exp, 0)) >> tl.maximum(-exp, 0)
    vth = tl.load(vth_ptr + neuron, mask=mask, other=0).to(tl.int64) << 6
    u = tl.load(u0_ptr + lanes, mask=mask, other=0).to(tl.int64)
    v = tl.load(v0_ptr + lanes, mask=mask, other=0).to(tl.int64)
    ahead = load_tile(a_in_ptr, 0, lanes, mask, T, M, DEPTH)
    for t0 in range(0, T, DEPTH):
        a_tile = ahead
        out_ptrs, out_mask = tile_ptrs(spikes_ptr, t0, lanes, mask, T, M, DEPTH)
        ahead = load_tile(a_in_ptr, t0 + DEPTH, lanes, mask, T, M, DEPTH)
        s_tile = tl.zeros([DEPTH, BLOCK], dtype=spikes_ptr.dtype.element_ty)
        for i in tl.static_range(DEPTH):
            u_new = _decay_toward_zero(u, keep_u) + (take_row(a_tile, i, DEPTH).to(tl.int64) << 6)
            u_new = tl.where(u_new > UV_LIMIT, u_new - 2 * UV_LIMIT, u_new)
            u_new = tl.where(u_new <= -UV_LIMIT, u_new + 2 * UV_LIMIT, u_new)
            v_new = _decay_toward_zero(v, keep_v) + u_new + bias
            v_new = tl.minimum(tl.maximum(v_new, 1 - UV_LIMIT), UV_LIMIT - 1)
            s = v_new > vth
            live = t0 + i < T
            u = tl.where(live, u_new, u)
            v = tl.where(live, tl.where(s, 0, v_new), v)
            s_tile = put_row(s_tile, i, s.to(spikes_ptr.dtype.element_ty), DEPTH)
        tl.store(out_ptrs, s_tile, mask=out_mask)
    tl.store(u_final_ptr + lanes, u.to(u_final_ptr.dtype.element_ty), mask=mask)
    tl.store(v_final_ptr + lanes, v.to(v_final_ptr.dtype.element_ty), mask=mask)


def default_launch(
    lanes: int, element_size: int, device: torch.device, depth: int = DEPTH
) -> Launch:
    """The launch shape for ``lanes = B * N`` neurons of ``element_size``-byte input."""
    block = pick_block(lanes, device, BLOCKS)
    return Launch(block, depth, warps_for(block, element_size))


def _grid(m: int, launch: Launch) -> tuple[int]:
    return (max(triton.cdiv(m, launch.block), 1),)


def lif_scan_triton(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str = "subtract",
    *,
    launch: Launch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float LIF over ``T`` steps in one Triton launch (same contract as ``lif_scan_reference``).

    Args:
        current: input current ``[T, B, N]`` (fp32/fp16/bf16).
        v0: initial membrane potential ``[B, N]``.
        decay, threshold, bias, v_reset: per-neuron parameters ``[N]``.
        reset: ``"subtract"`` or ``"zero"``.
        launch: launch shape; ``None`` takes ``default_launch``.

    Returns:
        spikes ``[T, B, N]`` in ``current``'s dtype and the final potential ``[B, N]`` fp32.
    """
    check_lif_args(current, v0, decay, threshold, bias, v_reset, reset)
    t, b, n = current.shape
    current = current.contiguous()
    launch = launch or default_launch(b * n, current.element_size(), current.device)
    spikes = torch.empty_like(current)
    v_final = torch.empty((b, n), dtype=torch.float32, device=current.device)
    params = [p.contiguous() for p in (decay, threshold, bias, v_reset)]
    _lif_scan_kernel[_grid(b * n, launch)](
        current, v0.contiguous(), *params, spikes, v_final, t, b * n, n,
        RESET_ZERO=RESETS.index(reset) == 1, BLOCK=launch.block, DEPTH=launch.depth,
        num_warps=launch.num_warps,
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
    *,
    launch: Launch | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loihi 2 bit-accurate CUBA LIF in one Triton launch (contract of
    ``lif_fixed_scan_reference``).

    Args:
        a_in: synaptic input ``[T, B, N]`` (int tensor holding int16 values).
        u0, v0: initial current and voltage ``[B, N]`` (int32/int64).
        du, dv, bias_mant, bias_exp, vth: per-neuron int parameters ``[N]``.
        launch: launch shape; ``None`` takes ``default_launch``.

    Returns:
        spikes ``[T, B, N]`` in ``a_in``'s dtype, ``u_final`` and ``v_final`` ``[B, N]``.
    """
    params = {"du": du, "dv": dv, "bias_mant": bias_mant, "bias_exp": bias_exp, "vth": vth}
    check_lif_fixed_args(a_in, u0, v0, params)
    t, b, n = a_in.shape
    a_in = a_in.contiguous()
    launch = launch or default_launch(b * n, a_in.element_size(), a_in.device, FIXED_DEPTH)
    spikes = torch.empty_like(a_in)
    u_final = torch.empty((b, n), dtype=u0.dtype, device=a_in.device)
    v_final = torch.empty((b, n), dtype=v0.dtype, device=a_in.device)
    _lif_fixed_scan_kernel[_grid(b * n, launch)](
        a_in, u0.contiguous(), v0.contiguous(), *(p.contiguous() for p in params.values()),
        spikes, u_final, v_final, t, b * n, n, UV_LIMIT=UV_LIMIT, BLOCK=launch.block,
        DEPTH=launch.depth, num_warps=launch.num_warps,
    )  # fmt: skip
    return spikes, u_final, v_final
