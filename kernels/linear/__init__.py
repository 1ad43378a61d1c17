"""Fully connected layers of small CPU batches in the arithmetic of ``F.linear``'s large calls.

Below a few rows MKL's ``F.linear`` sums a row's products in another order than in a larger
call (AVX-512, MKL 2024.2: below 3 rows at 64 inputs, 6 at 128, 16 at 512), so one timestep of
a spiking program (``step``, B rows) and the whole sequence (``run``, T·B rows at once) would
differ in the last bits. ``CpuLinear`` runs the compiled loop of ``cpu.py`` instead, which does
the large calls' arithmetic at every row count, and only where it has checked, once per layer
and torch thread count, that the loop's output equals ``F.linear``'s bit for bit on large calls
on this machine (MKL's order can differ with the instruction set, the number of inputs and the
threads; where it does, ``models.spiking.layers.Affine`` pads a small call with zero rows
instead). At a row or two it is also several times faster than ``F.linear``, whose cost there
is the call, not the arithmetic.

The loop is used for fp32 CPU inputs without autograd, finite weights, no bias of -0, weights
that are not inference tensors (``kernels.prepared``), numba installed and kernels on
(``GANGLION_KERNELS``), and at most ``CPU_LINEAR_MAX_MACS`` multiply-adds per call (above that
MKL's kernel wins on dense inputs), or at any size for a call of fewer rows than MKL needs to
round as in a large call (the alternative pads it: 16 rows cost MKL about 5 times one). The
spec is ``F.linear`` (``tests/kernels/test_linear_cpu.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ganglion.kernels.prepared import negative_zero, records_autograd, versions

__all__ = ["CPU_LINEAR_MAX_MACS", "CpuLinear"]

CPU_LINEAR_MAX_MACS = (
    65_536  # measured crossover with MKL here on dense inputs (spikes: 10-30x more)
)
_CHECK_ROWS = (67, 256)  # large calls the loop is compared with F.linear at


class CpuLinear:
    """One layer's weights laid out for the compiled loop, and whether the loop equals
    ``F.linear`` here. ``numpy`` gives None where ``F.linear`` (or padding) must run."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        from ganglion.kernels.linear import cpu  # numba: imported when a layer runs

        self._loop = cpu.linear_loop
        self.weight, self.bias = weight, bias
        self.versions = versions(weight, bias)
        self.usable = (
            weight.device.type == bias.device.type == "cpu"
            and weight.dtype == bias.dtype == torch.float32
            and weight.ndim == 2
            and bias.shape == (weight.shape[0],)
            and self.versions is not None
        )
        if self.usable:
            self.weight_t = cpu.transpose_weight(weight.detach().numpy())
            self.bias_array = bias.detach().numpy().astype(np.float32, copy=True)
            self.candidates = cpu.mkl_blocks(self.weight_t.shape[0])
            self.usable = bool(
                np.isfinite(self.weight_t).all()
                and np.isfinite(self.bias_array).all()
                and not negative_zero(self.bias_array)
            )
        # per torch thread count, checked at its first call: the block bounds that give
        # F.linear's bits (None: none does)
        self.blocks: dict[int, np.ndarray | None] = {}

    def holds(self, weight: torch.Tensor, bias: torch.Tensor) -> bool:
        """Whether this was prepared from these very tensors, unchanged since (inference
        tensors keep no version: for them this is never usable, so identity will do)."""
        if weight is not self.weight or bias is not self.bias:
            return False
        return self.versions is None or (weight._version, bias._version) == self.versions

    @staticmethod
    def takes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> bool:
        """Whether a call on ``x`` may go to the loop at all: an fp32 CPU input and no autograd
        to record (training never prepares a loop)."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return False
        return not records_autograd(x, weight, bias)

    def numpy(self, x: np.ndarray, any_size: bool = False) -> np.ndarray | None:
        """``F.linear`` of a C-contiguous fp32 [M, K] array from the loop, or None where the
        loop must not take it (module docstring); autograd aside (the CPU fast paths of spiking
        programs call it under ``torch.inference_mode``). ``any_size``: past
        ``CPU_LINEAR_MAX_MACS`` too (a call the alternative would pad to more rows)."""
        if (
            not self.usable
            or x.dtype != np.float32
            or x.ndim != 2
            or x.shape[1] != self.weight_t.shape[0]
            or (x.shape[0] * self.weight_t.size > CPU_LINEAR_MAX_MACS and not any_size)
        ):
            return None
        threads = torch.get_num_threads()
        if threads not in self.blocks:
            self.blocks[threads] = self._matching_blocks()
        blocks = self.blocks[threads]
        return None if blocks is None else self.run(x, blocks)

    def run(self, x: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """The loop on ``x`` [M, K] fp32, C-contiguous, summing in ``blocks`` (unchecked)."""
        out = np.empty((x.shape[0], self.bias_array.size), np.float32)
        acc, part = np.empty_like(self.bias_array), np.empty_like(self.bias_array)
        return self._loop(x, self.weight_t, self.bias_array, blocks, out, acc, part)

    def _matching_blocks(self) -> np.ndarray | None:
        """The first of ``cpu.mkl_blocks`` with which the loop equals ``F.linear`` bit for bit,
        at the current thread count, on inputs half zeros (as spikes are), the rest normal, at
        each of ``_CHECK_ROWS`` rows; None when none does."""
        generator = torch.Generator().manual_seed(0)
        checks = []
        for rows in _CHECK_ROWS:
            x = torch.randn(rows, self.weight_t.shape[0], generator=generator)
            x *= torch.rand(x.shape, generator=generator) < 0.5
            with torch.inference_mode():
                checks.append((x.numpy(), F.linear(x, self.weight, self.bias).numpy()))
        for blocks in self.candidates:
            if all(np.array_equal(self.run(x, blocks), want) for x, want in checks):
                return blocks
        return None
