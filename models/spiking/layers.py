"""Nodes of a spiking graph. Each docstring holds the node's discrete-time equation.

Shapes are per sample (no batch, no time axis). Tensor fields are float32 torch tensors;
the other fields are JSON-able and go to config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from ganglion.models.errors import ShapeError


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
        """x [N, in] -> [N, out]."""
        return F.linear(x, self.weight, self.bias)


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
        """x [N, C, H, W] -> [N, out, H', W']."""
        return F.conv2d(
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C, H', W']."""
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


@dataclass(eq=False)
class SumPool2d(AvgPool2d):
    """y = sum of each kernel window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C, H', W']."""
        area = self.kernel_size[0] * self.kernel_size[1]
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding) * area


@dataclass(eq=False)
class Flatten:
    """y = x reshaped to one feature axis."""

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (prod(in_shape),)."""
        n = 1
        for d in in_shape:
            n *= d
        return (n,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, ...] -> [N, prod(...)]."""
        return x.reshape(x.shape[0], -1)


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
class Neuron:
    """Discrete-time integrate-and-fire / leaky integrate-and-fire neuron, per element.

        v_t = decay ⊙ v_{t-1} + gain ⊙ I_t + bias
        s_t = v_t > threshold                      (strict)
        reset "subtract": v_t ← v_t − s_t ⊙ threshold;   "zero": v_t ← v_reset where s_t

    IF is decay = 1, bias = 0. The state starts at v_init. All parameters have the
    per-sample feature shape. Outputs are binary spikes s_t.
    """

    decay: torch.Tensor
    gain: torch.Tensor
    bias: torch.Tensor
    threshold: torch.Tensor
    v_reset: torch.Tensor
    v_init: torch.Tensor
    reset: str = "subtract"
    model: str = "if"  # "if" or "lif": how it was declared, for export
    shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.reset not in ("subtract", "zero"):
            raise ShapeError(f"Neuron reset must be 'subtract' or 'zero', got {self.reset!r}")
        self.shape = tuple(self.threshold.shape)
        for f in ("decay", "gain", "bias", "v_reset", "v_init"):
            if tuple(getattr(self, f).shape) != self.shape:
                raise ShapeError(
                    f"Neuron.{f} must have shape {self.shape} like threshold, "
                    f"got {tuple(getattr(self, f).shape)}"
                )

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input; checks it matches the neuron's shape."""
        if tuple(in_shape) != self.shape:
            raise ShapeError(f"Neuron of shape {self.shape} fed {tuple(in_shape)}")
        return in_shape

    @classmethod
    def integrate_and_fire(
        cls, threshold: torch.Tensor, v_init_fraction: float = 0.5, reset: str = "subtract"
    ) -> Neuron:
        """IF neuron with per-neuron thresholds, starting at v_init_fraction · threshold."""
        t = threshold.float()
        return cls(
            decay=torch.ones_like(t),
            gain=torch.ones_like(t),
            bias=torch.zeros_like(t),
            threshold=t,
            v_reset=torch.zeros_like(t),
            v_init=t * v_init_fraction,
            reset=reset,
            model="if",
        )


LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Affine, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, Neuron)
}
STATELESS = (Affine, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale)


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
