"""Multi-timestep LIF neurons: float LIF and Loihi 2 bit-accurate fixed-point CUBA LIF.

``lif_scan`` and ``lif_fixed_scan`` pick the fused Triton kernel on CUDA, the compiled CPU scan
(``cpu.py``, numba) on the CPU where numba is installed, and the PyTorch reference elsewhere;
``GANGLION_KERNELS=0`` turns both compiled paths off.
"""

import torch

from ganglion.kernels.dispatch import use_triton
from ganglion.kernels.lif.reference import lif_fixed_scan_reference, lif_scan_reference
from ganglion.kernels.switch import cpu_scan_available

__all__ = ["TILED_MEAN_MAX_ELEMENTS", "cpu_scan_available", "lif_fixed_scan", "lif_scan"]

TILED_MEAN_MAX_ELEMENTS = 2**16  # ``cpu.tiled_mean`` beats the torch adds up to about this size


def _use_cpu(use_kernel: bool | None, *tensors: torch.Tensor) -> bool:
    return use_kernel is None and cpu_scan_available() and not any(t.is_cuda for t in tensors)


def lif_scan(
    current: torch.Tensor,
    v0: torch.Tensor,
    decay: torch.Tensor,
    threshold: torch.Tensor,
    bias: torch.Tensor,
    v_reset: torch.Tensor,
    reset: str = "subtract",
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float LIF over ``T`` steps: ``v = decay*v + bias + current[t]``, spike on
    ``v > threshold``, then subtract ``threshold`` or set ``v_reset``.

    Args:
        current: input current ``[T, B, N]`` (fp32/fp16/bf16); flatten feature shapes to ``N``.
        v0: initial membrane potential ``[B, N]``.
        decay, threshold, bias, v_reset: per-neuron parameters ``[N]`` (fp32).
        reset: ``"subtract"`` or ``"zero"``.
        use_kernel: ``True``/``False`` force the Triton kernel / the reference; ``None`` uses the
            kernel on CUDA tensors and the compiled CPU scan on fp32 CPU tensors when kernels
            are enabled.

    Returns:
        spikes ``[T, B, N]`` (0/1, ``current``'s dtype) and ``v_final`` ``[B, N]`` fp32.
    """
    args = (current, v0, decay, threshold, bias, v_reset, reset)
    if use_triton(use_kernel, current, v0):
        from ganglion.kernels.lif.triton import lif_scan_triton

        return lif_scan_triton(*args)
    if _use_cpu(use_kernel, current, v0, decay, threshold, bias, v_reset):
        from ganglion.kernels.lif import cpu

        tensors = args[:6]
        if all(t.dtype == torch.float32 for t in tensors) and cpu.supports(*tensors):
            return cpu.lif_scan_cpu(*args)
    return lif_scan_reference(*args)


def lif_fixed_scan(
    a_in: torch.Tensor,
    u0: torch.Tensor,
    v0: torch.Tensor,
    du: torch.Tensor,
    dv: torch.Tensor,
    bias_mant: torch.Tensor,
    bias_exp: torch.Tensor,
    vth: torch.Tensor,
    use_kernel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loihi 2 bit-accurate CUBA LIF over ``T`` steps (Lava ``PyLifModelBitAcc``; see README.md).

    Args:
        a_in: synaptic input ``[T, B, N]``, an int tensor holding int16 values.
        u0, v0: initial current and voltage ``[B, N]`` (int32/int64, 24-bit values).
        du, dv: 12-bit decays ``[N]`` in ``[0, 4095]``.
        bias_mant, bias_exp: bias mantissa and exponent ``[N]``.
        vth: threshold mantissa ``[N]``; a neuron spikes when ``v > vth << 6``.
        use_kernel: as in ``lif_scan``.

    Returns:
        spikes ``[T, B, N]`` (0/1, ``a_in``'s dtype), ``u_final`` and ``v_final`` ``[B, N]``
        (dtypes of ``u0`` and ``v0``).
    """
    args = (a_in, u0, v0, du, dv, bias_mant, bias_exp, vth)
    if use_triton(use_kernel, a_in, u0, v0):
        from ganglion.kernels.lif.triton import lif_fixed_scan_triton

        return lif_fixed_scan_triton(*args)
    if _use_cpu(use_kernel, *args):
        from ganglion.kernels.lif import cpu

        if cpu.supports(*args):
            return cpu.lif_fixed_scan_cpu(*args)
    return lif_fixed_scan_reference(*args)
