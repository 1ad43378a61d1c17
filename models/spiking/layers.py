"""Nodes of a spiking graph. Each docstring holds the node's discrete-time equation.

Shapes are per sample (no batch, no time axis). Tensor fields are float32 torch tensors;
the other fields are JSON-able and go to config.json. Stateful nodes: ``Neuron`` (its own
module) and ``Delay``; every other node is a function of this step's input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from ganglion.kernels.conv.layer import CpuConv2d
from ganglion.kernels.lif import TILED_MEAN_MAX_ELEMENTS, cpu_scan_available
from ganglion.kernels.linear import CPU_LINEAR_MAX_MACS, CpuLinear
from ganglion.models.errors import ShapeError
from ganglion.models.spiking.neuron import Neuron


@dataclass(eq=False)
class Affine:
    """y = W x + b.  weight [out, in], bias [out]."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ShapeError(
                f"Affine expects weight [out, in] and bias [out], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape."""
        return (self.weight.shape[0],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, in] (or [S, B, in], taken as [S·B, in]) -> [..., out]: ``F.linear``, with each
        row rounded on a CPU as in a large call whatever the rows that come with it (``run``
        takes all timesteps' rows at once, ``step`` one timestep's): a small call runs the
        compiled loop of ``kernels.linear`` where it equals large calls bit for bit, else is
        padded with zero rows up to ``stable_rows`` (layers of over ``STABLE_PROBE_MAX_WEIGHTS``
        weights are not probed, and keep ``F.linear``'s rounding of small calls)."""
        in_features = self.weight.shape[1]
        rows = x.numel() // in_features if in_features else 0
        if x.dim() == 0 or x.shape[-1] != in_features or rows == 0:
            return F.linear(x, self.weight, self.bias)  # refuses a wrong width, as torch does
        fewest = self._fewest_rows()
        if (
            (rows < fewest or rows * self.weight.numel() <= CPU_LINEAR_MAX_MACS)
            and cpu_scan_available()
            and CpuLinear.takes(x, self.weight, self.bias)
        ):
            flat = x.detach()
            if flat.dim() != 2 or not flat.is_contiguous():
                flat = flat.reshape(rows, in_features).contiguous()
            out = self.cpu_loop().numpy(flat.numpy(), any_size=rows < fewest)
            if out is not None:
                out = torch.from_numpy(out)
                return out if x.dim() == 2 else out.reshape(*x.shape[:-1], -1)
        if rows >= fewest or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, in_features)
        padded = torch.cat([flat, flat.new_zeros(fewest - rows, in_features)])
        return F.linear(padded, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], -1)

    def numpy_forward(self, x: np.ndarray) -> np.ndarray | None:
        """``forward`` on a C-contiguous fp32 numpy batch [N, in] where the compiled loop takes
        it, else None (call ``forward``): for the CPU fast paths, under
        ``torch.inference_mode``."""
        large = x.size * self.weight.shape[0] > CPU_LINEAR_MAX_MACS
        return self.cpu_loop().numpy(x, any_size=large and x.shape[0] < self._fewest_rows())

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the compiled loop's prepared weights behind."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_prepared", "_fewest")}

    def cpu_loop(self) -> CpuLinear:
        """The compiled loop prepared from the current weights (prepared again if they change)."""
        loop = self.__dict__.get("_prepared")
        if loop is None or not loop.holds(self.weight, self.bias):
            loop = self.__dict__["_prepared"] = CpuLinear(self.weight, self.bias)
        return loop

    def _fewest_rows(self) -> int:
        """``stable_rows`` of this layer's weight at the current thread count (1 off the CPU
        or not fp32), kept per weight tensor (``to`` replaces it) and thread count."""
        threads = torch.get_num_threads()
        cached = self.__dict__.get("_fewest")
        if cached is None or cached[0] is not self.weight or cached[1] != threads:
            weight = self.weight
            out_features, in_features = weight.shape
            usable = weight.device.type == "cpu" and weight.dtype == torch.float32
            fewest = stable_rows(in_features, out_features, threads) if usable else 1
            cached = self.__dict__["_fewest"] = (weight, threads, fewest)
        return cached[2]


STABLE_PROBE_ROWS = 64  # row counts probed for a change of kernel
STABLE_PROBE_MAX_WEIGHTS = 1 << 20  # larger layers are not probed (nor padded)


@functools.cache
def stable_rows(in_features: int, out_features: int, threads: int) -> int:
    """The fewest rows from which this machine's CPU ``F.linear`` (float32, at ``threads`` torch
    threads, the current count) rounds every row of an ``[out, in]`` layer as it does in a call
    of 256 rows; 1 where no call of up to ``STABLE_PROBE_ROWS`` rows differs, or none reaches
    it, or the layer is too large to probe. Some BLAS kernels sum a row's products in another
    order below a few rows (measured: MKL 2024.2 on AVX-512, with 64 inputs below 3 rows, 128
    below 6, 512 below 16); the development machine before it gave the same bits at every row
    count."""
    if in_features * out_features > STABLE_PROBE_MAX_WEIGHTS:
        return 1
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=gen)
    bias = torch.randn(out_features, generator=gen)
    x = torch.rand(4 * STABLE_PROBE_ROWS, in_features, generator=gen)
    large = F.linear(x, weight, bias)
    fewest = 1
    for rows in range(1, STABLE_PROBE_ROWS + 1):
        if not torch.equal(F.linear(x[:rows], weight, bias), large[:rows]):
            fewest = rows + 1
    return fewest if fewest <= STABLE_PROBE_ROWS else 1


@dataclass(eq=False)
class Conv2d:
    """y = conv2d(x, W) + b.  weight [out, in/groups, kh, kw], bias [out]."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        self.stride, self.padding = tuple(self.stride), tuple(self.padding)
        self.dilation = tuple(self.dilation)
        if self.weight.ndim != 4 or self.bias.shape != (self.weight.shape[0],):
            raise ShapeError(
                f"Conv2d expects weight [out, in/groups, kh, kw] and bias [out], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C, H, W)."""
        _, h, w = in_shape
        kh, kw = self.weight.shape[2:]
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (self.weight.shape[0], oh, ow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, out, H', W']: ``F.conv2d``, or for a small CPU batch the
        compiled loop of ``kernels.conv`` where it equals ``F.conv2d`` bit for bit."""
        if not x.is_cuda and cpu_scan_available() and CpuConv2d.takes(x, self.weight, self.bias):
            out = self.cpu_loop().numpy(x.detach().contiguous().numpy())
            if out is not None:
                return torch.from_numpy(out)
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def numpy_forward(self, x: np.ndarray) -> np.ndarray | None:
        """``forward`` on a C-contiguous fp32 numpy batch where the compiled loop takes it, else
        None (call ``forward``): for the CPU fast paths, under ``torch.inference_mode``."""
        return self.cpu_loop().numpy(x)

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the compiled loop's prepared weights behind."""
        return {k: v for k, v in self.__dict__.items() if k != "_prepared"}

    def cpu_loop(self) -> CpuConv2d:
        """The compiled loop prepared from the current weights (prepared again if they or the
        layout change)."""
        layout = (self.stride, self.padding, self.dilation, self.groups)
        loop = self.__dict__.get("_prepared")
        if loop is None or not loop.holds(self.weight, self.bias, layout):
            loop = self.__dict__["_prepared"] = CpuConv2d(self.weight, self.bias, layout)
        return loop


@dataclass(eq=False)
class Conv1d:
    """y = conv1d(x, W) + b.  weight [out, in/groups, k], bias [out]."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        self.stride, self.padding = int(self.stride), int(self.padding)
        self.dilation, self.groups = int(self.dilation), int(self.groups)
        if self.weight.ndim != 3 or self.bias.shape != (self.weight.shape[0],):
            raise ShapeError(
                f"Conv1d expects weight [out, in/groups, k] and bias [out], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C, L)."""
        _, length = in_shape
        k = self.weight.shape[2]
        out = (length + 2 * self.padding - self.dilation * (k - 1) - 1) // self.stride + 1
        return (self.weight.shape[0], out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, L] -> [N, out, L']."""
        return F.conv1d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


@dataclass(eq=False)
class AvgPool2d:
    """y = mean of each kernel window (zero padding counted)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.kernel_size, self.stride = tuple(self.kernel_size), tuple(self.stride)
        self.padding = tuple(self.padding)

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C, H, W)."""
        c, h, w = in_shape
        oh = (h + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1
        return (c, oh, ow)

    def numpy_forward(self, x: np.ndarray) -> np.ndarray | None:
        """``forward`` on a C-contiguous fp32 numpy batch where a compiled loop takes it, else
        None (call ``forward``): for the CPU fast paths, which check that kernels are on."""
        if self.kernel_size == self.stride and self.padding == (0, 0) and x.dtype == np.float32:
            if _compiled_pool_fits(x.size, self.kernel_size):
                from ganglion.kernels.lif import cpu

                return cpu.tiled_mean_numpy(x, self.kernel_size)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C, H', W']."""
        if self.kernel_size == self.stride and self.padding == (0, 0) and not x.is_cuda:
            if _compiled_pool(x, self.kernel_size):
                from ganglion.kernels.lif import cpu

                return cpu.tiled_mean(x, self.kernel_size)
            return tiled_mean(x, self.kernel_size)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


def _compiled_pool_fits(size: int, kernel: tuple[int, int]) -> bool:
    """Whether the compiled loop beats the torch adds: a 2x2 window, or a small input."""
    return kernel == (2, 2) or size <= TILED_MEAN_MAX_ELEMENTS


def _compiled_pool(x: torch.Tensor, kernel: tuple[int, int]) -> bool:
    """Whether ``kernels.lif.cpu.tiled_mean`` should pool ``x``: an fp32 CPU input without
    autograd that suits it (``_compiled_pool_fits``), numba installed and kernels on."""
    return (
        _compiled_pool_fits(x.numel(), kernel)
        and x.dtype == torch.float32
        and not x.requires_grad
        and cpu_scan_available()
    )


def tiled_mean(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """``F.avg_pool2d`` for stride = kernel and no padding, bit for bit, several times faster on
    the CPU: the window's elements are added in its order (row by row), then divided. Where
    numba is installed the compiled ``kernels.lif.cpu.tiled_mean`` does the same in one loop."""
    kh, kw = kernel
    oh, ow = x.shape[-2] // kh, x.shape[-1] // kw
    tiles = x[..., : oh * kh, : ow * kw]
    total = tiles[..., 0::kh, 0::kw].clone(memory_format=torch.contiguous_format)
    for i in range(kh):
        for j in range(kw):
            if i or j:
                total.add_(tiles[..., i::kh, j::kw])
    return total.div_(kh * kw)


@dataclass(eq=False)
class SumPool2d(AvgPool2d):
    """y = sum of each kernel window."""

    def numpy_forward(self, x: np.ndarray) -> None:  # noqa: ARG002
        """None: the sum always runs through ``forward``."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C, H', W']."""
        area = self.kernel_size[0] * self.kernel_size[1]
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding) * area


@dataclass(eq=False)
class Flatten:
    """y = x with per-sample axes start_dim..end_dim merged into one (default: all of them)."""

    start_dim: int = 0
    end_dim: int = -1

    def _span(self, rank: int) -> tuple[int, int]:
        start = self.start_dim % rank if rank else 0
        end = self.end_dim % rank if rank else 0
        if start > end:
            raise ShapeError(
                f"Flatten axes {self.start_dim}..{self.end_dim} of a rank-{rank} input"
            )
        return start, end

    @property
    def full(self) -> bool:
        """True when every per-sample axis is merged (the result is [N, features])."""
        return self.start_dim == 0 and self.end_dim == -1

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape: the flattened axes' product in their place."""
        start, end = self._span(len(in_shape))
        merged = 1
        for d in in_shape[start : end + 1]:
            merged *= d
        return (*in_shape[:start], merged, *in_shape[end + 1 :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, ...] -> [N, ...flattened]."""
        return x.reshape(x.shape[0], *self.out_shape(tuple(x.shape[1:])))

    def numpy_forward(self, x: np.ndarray) -> np.ndarray:
        """``forward`` on a numpy batch (a view where numpy's reshape makes one, as torch's)."""
        return x.reshape(x.shape[0], *self.out_shape(x.shape[1:]))


@dataclass(eq=False)
class Scale:
    """y = s ⊙ x.  scale has the per-sample feature shape (or broadcasts to it)."""

    scale: torch.Tensor

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input."""
        return in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, ...] -> [N, ...]."""
        return x * self.scale


@dataclass(eq=False)
class Threshold:
    """y = (x > threshold), elementwise: NIR's Threshold (a spike wherever x exceeds θ)."""

    threshold: torch.Tensor

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input."""
        return in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, ...] -> [N, ...] of 0/1."""
        return (x > self.threshold).to(x.dtype)


@dataclass(eq=False)
class Delay:
    """y_t = x_{t − steps}, per element (x before the first step is 0). NIR's Delay.

    ``steps`` holds whole timesteps (stored as float); state ``d.<node>`` [B, D, *shape] keeps
    the last D = max(steps) inputs, newest first.
    """

    steps: torch.Tensor

    def __post_init__(self) -> None:
        if bool((self.steps < 0).any()) or not torch.equal(self.steps, self.steps.round()):
            raise ShapeError("Delay steps must be whole non-negative numbers of timesteps")

    @property
    def depth(self) -> int:
        """D: the longest delay, the number of past inputs kept."""
        return int(self.steps.max()) if self.steps.numel() else 0

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input (steps broadcast to it)."""
        torch.broadcast_shapes(tuple(self.steps.shape), tuple(in_shape))
        return in_shape

    def scan(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, B, *shape], buffer [B, D, *shape] -> (y [T, B, *shape], new buffer)."""
        depth, steps = buffer.shape[1], x.shape[0]
        history = torch.cat([buffer.flip(1).transpose(0, 1), x])  # [D + T, B, *shape], oldest first
        offset = torch.arange(steps, device=x.device).reshape(-1, *[1] * (x.ndim - 1))
        index = (depth + offset - self.steps.long()).expand_as(x)
        y = torch.gather(history, 0, index)
        return y, history[steps:].flip(0).transpose(0, 1).contiguous()


LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Affine, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, Threshold, Delay, Neuron
    )
}  # fmt: skip
STATELESS = (Affine, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, Threshold)
SYNAPTIC = (Affine, Conv1d, Conv2d)  # weighted connections: where a synaptic delay sits


def tensor_fields(layer: object) -> dict[str, torch.Tensor]:
    """The tensor-valued fields of a layer (its weights)."""
    return {
        f.name: getattr(layer, f.name)
        for f in fields(layer)  # type: ignore[arg-type]
        if isinstance(getattr(layer, f.name), torch.Tensor)
    }


def plain_fields(layer: object) -> dict[str, object]:
    """The JSON-able fields of a layer (its hyper-parameters)."""
    out: dict[str, object] = {}
    for f in fields(layer):  # type: ignore[arg-type]
        value = getattr(layer, f.name)
        if not isinstance(value, torch.Tensor):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
