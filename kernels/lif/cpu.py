"""Compiled CPU LIF scans (numba) for torch tensors: ``reference.py``'s arithmetic in one
machine-code loop, plus the two other loops a spiking program's CPU ``run`` spends its calls on:
the decode sum over time and average pooling of small inputs (``models/spiking/layers.py``).

The reference walks ``T`` in Python, a handful of tensor ops per step; here the whole scan is
one call (``float_step``: one timestep, for a streaming ``step``). The float loops are torch-free
(``kernels/scan_loops.py``: ONNX Runtime's layer-wise run calls them too) and round exactly as
the reference does, so spikes and final potentials are equal bit for bit; the fixed-point
scan is integer arithmetic and equal by construction. Tests compare them with
``reference.py`` and ``F.avg_pool2d`` (``tests/kernels/test_lif_cpu.py``).

A current constant over time (an input expanded along T, stride 0) is read from its one row.
numba compiles each loop on first use and caches the machine code beside this file
(``cache=True``); importing this module imports numba, so callers import it only when a scan
runs (``kernels/lif/__init__.py``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.lif.reference import (
    DECAY_UNITY,
    UV_LIMIT,
    check_lif_args,
    check_lif_fixed_args,
    effective_bias,
)
from ganglion.kernels.scan_loops import float_scan_loop, float_step_loop, mean_2x2, time_sum_loop

# ---- device loops --------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _toward_zero(x, keep):  # noqa: ANN001, ANN202
    """``sgn(x * keep) * (|x * keep| >> 12)`` on int64."""
    prod = x * keep
    return -((-prod) >> 12) if prod < 0 else prod >> 12


@numba.njit(cache=True, nogil=True)
def _fixed_loop(a_in, u0, v0, keep_u, keep_v, bias, vth_eff):  # noqa: ANN001, ANN202
    """a_in [T, B, N] int, u0 and v0 [B, N] -> (spikes like a_in, u, v int64 [B, N])."""
    steps, batch, n = a_in.shape
    limit = np.int64(UV_LIMIT)
    u, v = u0.astype(np.int64), v0.astype(np.int64)
    spikes = np.empty_like(a_in)
    for t in range(steps):
        for b in range(batch):
            for k in range(n):
                uk = _toward_zero(u[b, k], keep_u[k]) + (np.int64(a_in[t, b, k]) << 6)
                if uk > limit:
                    uk -= 2 * limit
                if uk <= -limit:
                    uk += 2 * limit
                vk = _toward_zero(v[b, k], keep_v[k]) + uk + bias[k]
                vk = min(max(vk, -(limit - 1)), limit - 1)
                fired = vk > vth_eff[k]
                spikes[t, b, k] = fired
                u[b, k] = uk
                v[b, k] = 0 if fired else vk
    return spikes, u, v


@numba.njit(cache=True, nogil=True)
def _tiled_mean_loop(x, kh, kw, out):  # noqa: ANN001, ANN202
    """x [M, H, W] -> out [M, H // kh, W // kw]: each window summed row by row from its first
    element, then divided by kh·kw (``F.avg_pool2d``'s rounding for stride = kernel)."""
    area = np.float32(kh * kw)
    m_count, oh, ow = out.shape
    for m in range(m_count):
        for oy in range(oh):
            for ox in range(ow):
                y, x0 = oy * kh, ox * kw
                total = x[m, y, x0]
                for i in range(kh):
                    for j in range(kw):
                        if i or j:
                            total += x[m, y + i, x0 + j]
                out[m, oy, ox] = total / area


# ---- launchers (unchecked: the caller checked shapes, dtypes and devices) -------------------


def _time_rows(values: torch.Tensor) -> tuple[np.ndarray, int]:
    """A C-contiguous numpy [T', ...] and the step between the rows timesteps read (0 for a
    tensor expanded over time, read from its one row)."""
    if values.shape[0] > 1 and values.stride(0) == 0:
        return values[:1].contiguous().numpy(), 0
    return values.contiguous().numpy(), 1


def supports(*tensors: torch.Tensor) -> bool:
    """True when the compiled scans take these tensors: on the CPU, without autograd."""
    return not any(t.is_cuda or t.requires_grad for t in tensors)


def float_params(*params: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Per-neuron parameters as flat fp32 contiguous numpy arrays (views of fp32 contiguous
    tensors): (gain, decay, threshold, bias, v_reset) for ``float_scan``."""
    return tuple(np.ascontiguousarray(p.detach().reshape(-1).float().numpy()) for p in params)


def float_scan(
    current: torch.Tensor, v0: torch.Tensor, params: tuple[np.ndarray, ...], zero_reset: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``current`` [T, B, N] fp32, ``v0`` [B, N] fp32 (CPU) -> (spikes [T, B, N] fp32, v [B, N]);
    the current is multiplied by ``gain`` first; ``params`` from ``float_params``."""
    source, t_step = _time_rows(current)
    spikes, v = float_scan_loop(
        source, t_step, current.shape[0], *params[:1], v0.contiguous().numpy(), *params[1:],
        zero_reset,
    )  # fmt: skip
    return torch.from_numpy(spikes), torch.from_numpy(v)


def float_step(
    current: torch.Tensor, v0: torch.Tensor, params: tuple[np.ndarray, ...], zero_reset: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One timestep of ``float_scan`` without its time axis: ``current`` and ``v0`` [B, *shape]
    fp32 (CPU), ``shape`` holding the N = len(gain) neurons -> (spikes, v), both like ``v0``;
    equal bit for bit to ``float_scan`` on ``current[None]``. A new ``v``: ``v0`` is kept."""
    spikes, v = float_step_loop(
        current.contiguous().numpy(), v0.contiguous().numpy(), *params, zero_reset
    )
    return torch.from_numpy(spikes), torch.from_numpy(v)


def fixed_params(
    du: torch.Tensor,
    dv: torch.Tensor,
    bias_mant: torch.Tensor,
    bias_exp: torch.Tensor,
    vth: torch.Tensor,
) -> tuple[np.ndarray, ...]:
    """(4095 − du, 4096 − dv, bias, vth << 6) as int64 numpy arrays [N] for ``fixed_scan``."""
    keep_u = DECAY_UNITY - (du.long() + 1)
    keep_v = DECAY_UNITY - dv.long()
    vth_eff = vth.long() << 6
    params = (keep_u, keep_v, effective_bias(bias_mant, bias_exp), vth_eff)
    return tuple(np.ascontiguousarray(p.reshape(-1).numpy()) for p in params)


def fixed_scan(
    a_in: torch.Tensor, u0: torch.Tensor, v0: torch.Tensor, params: tuple[np.ndarray, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``a_in`` [T, B, N] int, ``u0``/``v0`` [B, N] int (CPU) -> (spikes like ``a_in``, u, v
    int64 [B, N]); ``params`` from ``fixed_params``."""
    spikes, u, v = _fixed_loop(
        a_in.contiguous().numpy(), u0.contiguous().numpy(), v0.contiguous().numpy(), *params
    )
    return torch.from_numpy(spikes), torch.from_numpy(u), torch.from_numpy(v)


def time_sum_into(values: torch.Tensor, total: torch.Tensor) -> None:
    """``total += values[0] + values[1] + ...`` one step after another (the order of repeated
    ``step`` calls): ``values`` [T, B, M] fp32 on the CPU (contiguous or expanded over T),
    ``total`` [B, M] fp32 contiguous, updated in place."""
    source, t_step = _time_rows(values)
    time_sum_loop(source, t_step, values.shape[0], total.numpy())


def tiled_mean(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Average pooling with stride = kernel and no padding: ``x`` [N, C, H, W] fp32 on the CPU
    -> [N, C, H // kh, W // kw] fp32, equal bit for bit to ``F.avg_pool2d``. One call instead
    of kh·kw tensor ops: it pays on small inputs (``kernels.lif.TILED_MEAN_MAX_ELEMENTS``),
    and at every size for 2x2 windows (their own loop); on larger inputs with other windows
    its strided reads are slower than ``layers.tiled_mean``'s vector adds."""
    return torch.from_numpy(tiled_mean_numpy(x.contiguous().numpy(), kernel))


def tiled_mean_numpy(x: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """``tiled_mean`` on a C-contiguous fp32 numpy array [N, C, H, W]."""
    kh, kw = kernel
    n, c, h, w = x.shape
    out = np.empty((n * c, h // kh, w // kw), np.float32)
    rows = x.reshape(n * c, h, w)
    if (kh, kw) == (2, 2):
        mean_2x2(rows, out)
    else:
        _tiled_mean_loop(rows, kh, kw, out)
    return out.reshape(n, c, h // kh, w // kw)


# ---- public functions ----------------------------------------------------------------------


def lif_scan_cpu(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str = "subtract",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float LIF over ``T`` steps, compiled; the arithmetic of ``lif_scan_reference``.

    Args:
        current: input current ``[T, B, N]`` fp32 on the CPU (contiguous or expanded over T).
        v0: initial membrane potential ``[B, N]`` fp32.
        decay, threshold, bias, v_reset: per-neuron parameters ``[N]`` (fp32).
        reset: ``"subtract"`` or ``"zero"``.

    Returns:
        spikes ``[T, B, N]`` fp32 (0/1) and the final potential ``[B, N]`` fp32.

    Raises:
        ValueError: a shape, dtype or device that ``lif_scan`` refuses, or tensors that are
            not fp32 on the CPU without autograd (the reference takes those).
    """
    check_lif_args(current, v0, decay, threshold, bias, v_reset, reset)
    tensors = (current, v0, decay, threshold, bias, v_reset)
    if any(t.dtype != torch.float32 for t in tensors) or not supports(*tensors):
        raise ValueError("expected fp32 CPU tensors without autograd for the compiled scan")
    params = float_params(torch.ones_like(decay), decay, threshold, bias, v_reset)
    return float_scan(current, v0, params, reset == "zero")


def lif_fixed_scan_cpu(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    bias_mant: torch.Tensor,
    bias_exp: torch.Tensor,
    vth: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loihi 2 bit-accurate CUBA LIF over ``T`` steps, compiled; the arithmetic of
    ``lif_fixed_scan_reference``.

    Args:
        a_in: synaptic input ``[T, B, N]``, an int tensor holding int16 values, on the CPU.
        u0, v0: initial current and voltage ``[B, N]`` (int32/int64, 24-bit values).
        du, dv: 12-bit decays ``[N]`` in ``[0, 4095]``.
        bias_mant, bias_exp: bias mantissa and exponent ``[N]``.
        vth: threshold mantissa ``[N]``; a neuron spikes when ``v > vth << 6``.

    Returns:
        spikes ``[T, B, N]`` (0/1, ``a_in``'s dtype), ``u_final`` and ``v_final`` ``[B, N]``
        (dtypes of ``u0`` and ``v0``).

    Raises:
        ValueError: as ``lif_fixed_scan``, or tensors on a GPU or with autograd.
    """
    params = {"du": du, "dv": dv, "bias_mant": bias_mant, "bias_exp": bias_exp, "vth": vth}
    check_lif_fixed_args(a_in, u0, v0, params)
    if not supports(a_in, u0, v0, *params.values()):
        raise ValueError("expected CPU tensors without autograd for the compiled scan")
    spikes, u, v = fixed_scan(a_in, u0, v0, fixed_params(du, dv, bias_mant, bias_exp, vth))
    return spikes, u.to(u0.dtype), v.to(v0.dtype)
