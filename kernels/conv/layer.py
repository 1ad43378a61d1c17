"""2-D convolution of small CPU batches, bit for bit ``F.conv2d``, without its per-call cost.

At a few rows ``F.conv2d`` spends most of its time around oneDNN's kernel, not in it: 11 µs at
one row and 60 µs at eight for the digits CNN's second convolution, where the arithmetic takes
a few. ``CpuConv2d`` runs the compiled loop of ``cpu.py`` instead, in oneDNN's own arithmetic,
and only where it has checked, once per layer and input shape, that the loop's output equals
``F.conv2d``'s bit for bit at two batch sizes on this machine (oneDNN's order can differ with
the instruction set or the channel count; where it does, ``F.conv2d`` keeps every call). So a
program gives the same bits whichever path a call takes, and at one row the loop also agrees
with the larger batches, where ``F.conv2d`` switches to another kernel at one row.

Of fewer than ``BLOCKED_MIN_CHANNELS`` input channels (a CNN's first convolution, on the
image itself) to at least ``O_BLOCK`` output channels of at least ``LANES`` columns, a call runs
``columns.py``'s loop, which walks the outputs; else ``cpu.py``'s, which walks the inputs and
skips their zeros (spikes). The two add every output's taps in the same order, to the same
bits.

The loops are used for fp32 CPU inputs without autograd, stride 1, dilation 1, one group,
finite weights, no bias of -0, numba installed and kernels on (``GANGLION_KERNELS``), and at
most ``CPU_CONV_MAX_MACS`` multiply-adds per call: above that oneDNN's vector kernel wins. A
layer whose output channels fill ``cpu.py``'s register blocks (a multiple of ``cpu.BLOCK``) from
at least ``BLOCKED_MIN_CHANNELS`` input channels keeps it up to ``BLOCKED_CONV_MAX_MACS``: its
accumulators then stay in registers while every channel adds into them; one input channel
keeps the columns loop up to ``ONE_CHANNEL_MAX_MACS`` (oneDNN is slow there). The spec is
``F.conv2d`` (``tests/kernels/test_conv_cpu.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ganglion.kernels.prepared import negative_zero, records_autograd, versions

__all__ = [
    "BLOCKED_CONV_MAX_MACS",
    "CPU_CONV_MAX_MACS",
    "ONE_CHANNEL_MAX_MACS",
    "CpuConv2d",
    "ShapeSizes",
    "Layout",
]

CPU_CONV_MAX_MACS = 2_000_000  # crossover with oneDNN measured here before the register blocks
# (about 32 rows of 16x4x4); layers whose runs do not fill a block keep it
# measured here on the digits CNN's whole run (its second convolution 32 <- 16 channels, 4x4):
# 0.75 ms with the loop against 0.91 with oneDNN at 256 rows a call (18.9 M multiply-adds;
# T=8, batch 32), even at 512 rows (37.7 M)
BLOCKED_CONV_MAX_MACS = 20_000_000
BLOCKED_MIN_CHANNELS = 8
MAX_SHAPES = 64  # input shapes a layer remembers (its probes, its sizes); then it starts over
# measured here, 16 output channels 3x3 over 8x8 images: of one input channel, 0.11 ms with the
# columns loop against 0.66 with oneDNN at 256 rows (2.4 M multiply-adds), 0.99 against 4.9 at
# 2,048 (18.9 M); over 28x28 images 0.107 against 0.100 at 24 rows (2.7 M), and 1.8 against 5.8
# ms for 32 channels 5x5 at 100 rows (63 M); of three input channels oneDNN wins from a few
# million (0.22 against 0.12 ms at 7.1 M)
ONE_CHANNEL_MAX_MACS = BLOCKED_CONV_MAX_MACS
Layout = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]  # stride, padding,
# dilation, groups


@dataclass(frozen=True)
class ShapeSizes:
    """What a layer's calls on one input shape (C, H, W) need, worked out once."""

    out_hw: tuple[int, int]
    by_columns: bool  # the columns loop (module docstring), else ``cpu.py``'s
    padded: tuple[int, int, int]  # the columns loop's scratch: the image zero-padded
    max_macs: int  # the most multiply-adds of a call that runs a loop
    neurons: int  # outputs per row, O·OH·OW
    pass_fits: bool  # ``scan_pool``'s one pass takes the output (``scan_pool.fits``)


class CpuConv2d:
    """One convolution's weights laid out for the compiled loops, and, per input shape, whether
    the loops equal ``F.conv2d`` here. ``__call__`` gives None where ``F.conv2d`` must run."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, layout: Layout) -> None:
        from ganglion.kernels.conv import columns, cpu  # numba: imported when a convolution runs

        self._loop, self._columns_loop = cpu.conv2d_loop, columns.conv2d_columns_loop
        self._lanes, self._o_block = columns.LANES, columns.O_BLOCK
        self._sizes: dict[tuple[int, ...], ShapeSizes] = {}  # per input shape (C, H, W)
        self.weight, self.bias, self.layout = weight, bias, layout
        self.versions = versions(weight, bias)
        stride, self.padding, dilation, groups = layout
        self.kernel = (int(weight.shape[2]), int(weight.shape[3]))
        self.flipped = cpu.flip_weight(weight.detach().numpy())
        self.bias_array = bias.detach().numpy().astype(np.float32, copy=True)
        self.usable = (
            (stride, dilation, groups) == ((1, 1), (1, 1), 1)
            and weight.dtype == bias.dtype == torch.float32
            and self.versions is not None
            and bool(np.isfinite(self.flipped).all() and np.isfinite(self.bias_array).all())
            and not negative_zero(self.bias_array)
        )
        self.shapes: dict[tuple[int, ...], int] = {}  # input shape -> MACs per row, 0: not exact
        out_channels, in_channels = int(weight.shape[0]), int(weight.shape[1])
        blocked = out_channels % cpu.BLOCK == 0 and in_channels >= BLOCKED_MIN_CHANNELS
        self._blocked_max_macs = BLOCKED_CONV_MAX_MACS if blocked else CPU_CONV_MAX_MACS

    def holds(self, weight: torch.Tensor, bias: torch.Tensor, layout: Layout) -> bool:
        """Whether this was prepared from these very tensors, unchanged since, and layout
        (inference tensors keep no version: for them this is never usable, so identity will
        do)."""
        if weight is not self.weight or bias is not self.bias or layout != self.layout:
            return False
        return self.versions is None or (weight._version, bias._version) == self.versions

    @staticmethod
    def takes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> bool:
        """Whether a call on ``x`` may go to the loop at all: an fp32 [N, C, H, W] input and no
        autograd to record. Checked before a layer prepares its loop, so training (weights
        changing every step) never prepares one."""
        if x.dtype != torch.float32 or x.dim() != 4:
            return False
        return not records_autograd(x, weight, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """``F.conv2d(x, weight, bias, 1, padding)`` from the compiled loop, or None where the
        loop must not take it (module docstring)."""
        if not self.takes(x, self.weight, self.bias):
            return None
        out = self.numpy(x.detach().contiguous().numpy())
        return None if out is None else torch.from_numpy(out)

    def numpy(self, x: np.ndarray) -> np.ndarray | None:
        """``__call__`` on a C-contiguous fp32 [N, C, H, W] array, autograd aside (the CPU
        fast paths of spiking programs call it under ``torch.inference_mode``)."""
        if not self.usable or x.dtype != np.float32 or x.ndim != 4:
            return None
        sizes = self.sizes(x.shape[1:])
        if not 0 < x.shape[0] * self._exact_macs(x.shape[1:]) <= sizes.max_macs:
            return None
        return self._run(x, sizes)

    def sizes(self, shape: tuple[int, ...]) -> ShapeSizes:
        """What calls on inputs of ``shape`` (C, H, W) need, worked out once per shape: the
        output's sides, the loop they run and the most multiply-adds a call runs it for
        (module docstring), whether ``scan_pool``'s pass takes them."""
        sizes = self._sizes.get(shape)
        if sizes is None:
            from ganglion.kernels.conv import scan_pool

            (c, h, w), (pad_h, pad_w), o_count = shape, self.padding, self.bias_array.size
            oh, ow = self._out_hw(shape)
            if len(self._sizes) >= MAX_SHAPES:
                self._sizes.clear()
            by_columns = c < BLOCKED_MIN_CHANNELS and o_count >= self._o_block and ow >= self._lanes
            if by_columns:
                max_macs = ONE_CHANNEL_MAX_MACS if c == 1 else CPU_CONV_MAX_MACS
            else:
                max_macs = self._blocked_max_macs
            sizes = self._sizes[shape] = ShapeSizes(
                (oh, ow), by_columns, (c, h + 2 * pad_h, w + 2 * pad_w), max_macs,
                o_count * oh * ow, bool(scan_pool.fits(o_count, oh, ow)),
            )  # fmt: skip
        return sizes

    def _exact_macs(self, shape: tuple[int, ...]) -> int:
        """Multiply-adds of one row of input ``shape`` (C, H, W) where the loops equal
        ``F.conv2d`` on it (checked once per shape, on the loop its calls run: the two give the
        same bits, so ``scan_pool``'s pass may rely on it too), else 0."""
        macs = self.shapes.get(shape)
        if macs is None:
            if len(self.shapes) >= MAX_SHAPES:
                self.shapes.clear()
            macs = self.shapes[shape] = self._macs(shape) if self._matches_torch(shape) else 0
        return macs

    def scan_pool(
        self, x: np.ndarray, params: tuple[np.ndarray, ...], v0: np.ndarray, zero_reset: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``x`` [S, B, C, H, W] (C-contiguous fp32) through this convolution, then plain
        neurons (``params`` = (gain, decay, threshold, bias, v_reset), each [N] in [O, OH, OW]
        order; potentials ``v0`` [B, N], kept) over the S steps, then 2x2 average pooling of
        their spikes, in one pass (``scan_pool.conv_scan_pool_loop``) -> (pooled [S, B, O,
        OH/2, OW/2], v [B, N]), the bits of the three loops run apart; None where ``numpy``
        would not take the convolution (its size cap aside: the pass never stores it) or the
        pass does not suit (output channels not a multiple of ``LANES``, an odd output side)."""
        from ganglion.kernels.conv import scan_pool

        if not self.usable or x.dtype != np.float32 or x.ndim != 5 or not x.flags.c_contiguous:
            return None
        shape = x.shape[2:]
        if self._exact_macs(shape) == 0:
            return None
        sizes = self.sizes(shape)
        want = (sizes.neurons,)
        if not sizes.pass_fits or v0.shape != (x.shape[1], sizes.neurons):
            return None
        gain, decay, threshold, bias, v_reset = params
        if not gain.shape == decay.shape == threshold.shape == bias.shape == v_reset.shape == want:
            return None
        pooled, v = scan_pool.conv_scan_pool_loop(
            x, self.flipped, self.bias_array, self.padding[0], self.padding[1], sizes.out_hw,
            gain, np.ascontiguousarray(v0), decay, threshold, bias, v_reset, zero_reset,
        )  # fmt: skip
        return pooled, v

    def run(self, x: np.ndarray) -> np.ndarray:
        """The loop for its shape on ``x`` [N, C, H, W] fp32, C-contiguous (unchecked)."""
        return self._run(x, self.sizes(x.shape[1:]))

    def _run(self, x: np.ndarray, sizes: ShapeSizes) -> np.ndarray:
        (pad_h, pad_w), (oh, ow) = self.padding, sizes.out_hw
        out = np.empty((x.shape[0], self.bias_array.size, oh, ow), np.float32)
        if sizes.by_columns:
            padded = np.empty(sizes.padded, np.float32)
            self._columns_loop(x, self.flipped, self.bias_array, pad_h, pad_w, out, padded)
        else:
            scratch = np.empty(oh * ow * self.bias_array.size, np.float32)
            self._loop(x, self.flipped, self.bias_array, pad_h, pad_w, out, scratch)
        return out

    def _macs(self, shape: tuple[int, ...]) -> int:
        """Multiply-adds of one row of input ``shape`` (C, H, W), counted dense."""
        oh, ow = self._out_hw(shape)
        return int(self.flipped.size) * oh * ow

    def _out_hw(self, shape: tuple[int, ...]) -> tuple[int, int]:
        kh, kw = self.kernel
        return shape[1] + 2 * self.padding[0] - kh + 1, shape[2] + 2 * self.padding[1] - kw + 1

    def _matches_torch(self, shape: tuple[int, ...]) -> bool:
        """Whether the loop equals ``F.conv2d`` bit for bit on inputs of ``shape``
        (``cpu.probe_inputs``); False where that probe would be too large (``probe_fits``)."""
        from ganglion.kernels.conv import cpu

        oh, ow = self._out_hw(shape)
        if oh < 1 or ow < 1 or shape[0] != self.weight.shape[1]:
            return False
        if not cpu.probe_fits(shape, (self.bias_array.size, oh, ow)):
            return False
        for x in cpu.probe_inputs(shape):
            with torch.inference_mode():
                expected = F.conv2d(torch.from_numpy(x), self.weight, self.bias, 1, self.padding)
            if not np.array_equal(self.run(x), expected.numpy()):
                return False
        return True
