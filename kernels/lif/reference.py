"""Plain PyTorch LIF scans: the ground truth for ``triton.py``.

Float LIF per step ``t``::

    v = decay * v + bias + current[t]
    s = v > threshold
    v = v - s * threshold            (reset="subtract")
    v = where(s, v_reset, v)         (reset="zero")

Loihi 2 fixed-point CUBA LIF (bit-accurate, see README.md)::

    u = trunc(u * (4096 - du - 1) / 2**12) + (a_in << 6)     wrapped to (-2**23, 2**23]
    v = trunc(v * (4096 - dv) / 2**12) + u + bias            clipped to [-(2**23 - 1), 2**23 - 1]
    s = v > (vth << 6);  v = where(s, 0, v)
"""

import torch

from ganglion.kernels.checks import (
    FLOAT_DTYPES,
    INT_DTYPES,
    expect_dtype,
    expect_ndim,
    expect_same_device,
    expect_shape,
)

RESETS = ("subtract", "zero")
UV_LIMIT = 2**23
DECAY_UNITY = 4096


def check_lif_args(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str,
) -> None:
    """Validate the arguments of ``lif_scan`` (shapes documented there)."""
    expect_ndim("current", current, 3, "[T, B, N]")
    expect_dtype("current", current, FLOAT_DTYPES)
    _, b, n = current.shape
    expect_shape("v0", v0, (b, n))
    expect_dtype("v0", v0, FLOAT_DTYPES)
    params = {"decay": decay, "threshold": threshold, "bias": bias, "v_reset": v_reset}
    for name, p in params.items():
        expect_shape(name, p, (n,))
        expect_dtype(name, p, FLOAT_DTYPES)
    expect_same_device(current=current, v0=v0, **params)
    if reset not in RESETS:
        raise ValueError(f"expected reset in {RESETS}, got {reset!r}")


def check_lif_fixed_args(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    params: dict[str, torch.Tensor],
) -> None:
    """Validate the arguments of ``lif_fixed_scan``; ``params`` maps name to a [N] tensor."""
    expect_ndim("a_in", a_in, 3, "[T, B, N]")
    expect_dtype("a_in", a_in, INT_DTYPES)
    _, b, n = a_in.shape
    for name, state in (("u0", u0), ("v0", v0)):
        expect_shape(name, state, (b, n))
        expect_dtype(name, state, (torch.int32, torch.int64))
    for name, p in params.items():
        expect_shape(name, p, (n,))
        expect_dtype(name, p, INT_DTYPES)
    for name in ("du", "dv"):
        d = params[name]
        if d.numel() and (int(d.min()) < 0 or int(d.max()) >= DECAY_UNITY):
            raise ValueError(f"expected {name} in [0, 4095], got [{int(d.min())}, {int(d.max())}]")
    expect_same_device(a_in=a_in, u0=u0, v0=v0, **params)


def lif_scan_reference(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str = "subtract",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float LIF over ``T`` steps, one Python loop iteration per step.

    Args:
        current: input current ``[T, B, N]`` (fp32/fp16/bf16).
        v0: initial membrane potential ``[B, N]``.
        decay, threshold, bias, v_reset: per-neuron parameters ``[N]`` (fp32).
        reset: ``"subtract"`` (v -= threshold on a spike) or ``"zero"`` (v = v_reset).

    Returns:
        spikes ``[T, B, N]`` in ``current``'s dtype (0/1) and the final potential ``[B, N]`` fp32.
    """
    check_lif_args(current, v0, decay, threshold, bias, v_reset, reset)
    decay, threshold, bias, v_reset = (p.float() for p in (decay, threshold, bias, v_reset))
    v = v0.float().clone()
    spikes = torch.empty_like(current)
    fired = torch.empty(v.shape, dtype=torch.bool, device=v.device)
    leaky, biased = bool(torch.any(decay != 1)), bool(torch.any(bias != 0))
    for t in range(current.shape[0]):  # in place, few ops per step: the CPU path's hot loop
        if leaky:
            v.mul_(decay)
        if biased:
            v.add_(bias)
        v.add_(current[t])
        if reset == "subtract":
            torch.gt(v, threshold, out=spikes[t])
            v.addcmul_(spikes[t], threshold, value=-1)  # v − s·threshold, s ∈ {0, 1}: exact
        else:
            torch.gt(v, threshold, out=fired)
            spikes[t].copy_(fired)
            v = torch.where(fired, v_reset, v)
    return spikes, v


def effective_bias(bias_mant: torch.Tensor, bias_exp: torch.Tensor) -> torch.Tensor:
    """``bias_mant << bias_exp`` (or ``>> -bias_exp`` for a negative exponent), int64 ``[N]``."""
    mant, exp = bias_mant.long(), bias_exp.long()
    return (mant << exp.clamp(min=0)) >> (-exp).clamp(min=0)


def decay_toward_zero(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``sgn(x * keep) * (|x * keep| >> 12)``: multiply by ``keep / 4096``, truncating toward 0."""
    prod = x * keep
    return torch.sign(prod) * (prod.abs() >> 12)


def lif_fixed_step_reference(
    a_t: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    bias: torch.Tensor,
    vth_eff: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fixed-point step on int64 tensors: ``a_t, u, v`` ``[B, N]``; ``du, dv, bias, vth_eff``
    ``[N]`` with ``bias`` already scaled and ``vth_eff = vth << 6``. Returns (spike, u, v)."""
    u = decay_toward_zero(u, DECAY_UNITY - (du + 1)) + (a_t << 6)
    u = torch.where(u > UV_LIMIT, u - 2 * UV_LIMIT, u)
    u = torch.where(u <= -UV_LIMIT, u + 2 * UV_LIMIT, u)
    v = decay_toward_zero(v, DECAY_UNITY - dv) + u + bias
    v = v.clamp(-(UV_LIMIT - 1), UV_LIMIT - 1)
    s = v > vth_eff
    return s, u, torch.where(s, torch.zeros_like(v), v)


def lif_fixed_scan_reference(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    bias_mant: torch.Tensor,
    bias_exp: torch.Tensor,
    vth: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loihi 2 bit-accurate CUBA LIF over ``T`` steps (Lava ``PyLifModelBitAcc`` arithmetic).

    Args:
        a_in: synaptic input ``[T, B, N]``, an int tensor holding int16 values.
        u0, v0: initial current and voltage ``[B, N]`` (int32/int64, 24-bit values).
        du, dv: 12-bit decays ``[N]`` in ``[0, 4095]``.
        bias_mant, bias_exp: bias mantissa and exponent ``[N]``.
        vth: 17-bit threshold mantissa ``[N]`` (the comparison uses ``vth << 6``).

    Returns:
        spikes ``[T, B, N]`` in ``a_in``'s dtype (0/1), ``u_final`` and ``v_final`` ``[B, N]`` in
        the dtypes of ``u0`` and ``v0``.
    """
    params = {"du": du, "dv": dv, "bias_mant": bias_mant, "bias_exp": bias_exp, "vth": vth}
    check_lif_fixed_args(a_in, u0, v0, params)
    bias = effective_bias(bias_mant, bias_exp)
    vth_eff = vth.long() << 6
    u, v = u0.long(), v0.long()
    spikes = torch.zeros(a_in.shape, dtype=a_in.dtype, device=a_in.device)
    for t, a_t in enumerate(a_in.long()):
        s, u, v = lif_fixed_step_reference(a_t, u, v, du.long(), dv.long(), bias, vth_eff)
        spikes[t] = s.to(a_in.dtype)
    return spikes, u.to(u0.dtype), v.to(v0.dtype)
