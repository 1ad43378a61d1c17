"""Read a trained ANN from ``torch.export`` into a small graph of supported operations.

Supported: Linear, Conv2d, AvgPool2d, Flatten (or a reshape to [batch, features]), ReLU,
BatchNorm (folded into the preceding Linear/Conv2d), Dropout (dropped) and residual
additions. Anything else raises ConversionError naming the layer, its path and this set.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch

from ganglion.models.errors import ConversionError, first_line
from ganglion.models.spiking.layers import Affine, AvgPool2d, Conv2d, Flatten

SUPPORTED = "Linear, Conv2d, AvgPool2d, Flatten, ReLU, BatchNorm (after Linear/Conv2d), Dropout, +"
INPUT = "input"

aten = torch.ops.aten
_IDENTITY = {
    aten.dropout.default,
    aten.clone.default,
    aten.contiguous.default,
    aten.alias.default,
    aten.detach.default,
}
_RELU = {aten.relu.default, aten.relu_.default}
_ADD = {aten.add.Tensor, aten.add_.Tensor}
_RESHAPE = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


@dataclass
class AnnOp:
    """One operation: kind is affine | conv | avgpool | flatten | relu | add."""

    name: str
    kind: str
    inputs: list[str]
    path: str
    layer: Any = None  # Affine | Conv2d | AvgPool2d | Flatten for the linear kinds
    consumers: list[str] = field(default_factory=list)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Evaluate the op on its inputs (batch-first tensors)."""
        if self.kind == "relu":
            return torch.relu(args[0])
        if self.kind == "add":
            return args[0] + args[1]
        return self.layer.forward(args[0])


@dataclass
class AnnGraph:
    """Ops in execution order; ``output`` names the op whose value is the model's output."""

    ops: dict[str, AnnOp]
    output: str
    input_shape: tuple[int, ...]

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x [B, ...] -> (output, value of every op)."""
        values: dict[str, torch.Tensor] = {INPUT: x}
        for name, op in self.ops.items():
            values[name] = op.forward(*(values[i] for i in op.inputs))
        return values[self.output], values


def _module_path(node: torch.fx.Node) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<top>", "<function>"
    path, type_name = list(stack.values())[-1]
    return path or "<top>", str(type_name).rsplit(".", 1)[-1].rstrip("'>")


def _unsupported(node: torch.fx.Node, why: str = "") -> ConversionError:
    path, type_name = _module_path(node)
    detail = f" ({why})" if why else ""
    return ConversionError(
        f"layer {type_name} at '{path}' ({node.target}) is not supported{detail}; "
        f"supported: {SUPPORTED}"
    )


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if v else (1, 1)


class _Reader:
    """Walks the FX graph of an ExportedProgram once, building AnnOps."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        sig = program.graph_signature
        self.params = {
            **sig.inputs_to_parameters,
            **sig.inputs_to_buffers,
            **getattr(sig, "inputs_to_lifted_tensor_constants", {}),
        }
        user_inputs = list(sig.user_inputs)
        if len(user_inputs) != 1:
            raise ConversionError(f"the model must take one input tensor, it takes {user_inputs}")
        self.user_input = user_inputs[0]
        self.ops: dict[str, AnnOp] = {}
        self.alias: dict[str, str] = {}  # fx node name -> op name
        self.counts: dict[str, int] = {}

    def tensor(self, arg: Any) -> torch.Tensor | None:
        if arg is None:
            return None
        key = self.params[arg.name]
        table = (
            self.program.state_dict if key in self.program.state_dict else self.program.constants
        )
        return table[key].detach().float().clone()

    def source(self, arg: Any, node: torch.fx.Node) -> str:
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.alias:
            raise _unsupported(node, "operand is not a tensor produced by a supported layer")
        return self.alias[arg.name]

    def add(self, node: torch.fx.Node, kind: str, inputs: list[str], layer: Any = None) -> None:
        path = _module_path(node)[0]
        base = f"{kind}_{path}".replace(".", "_").replace("<top>", "top")
        self.counts[base] = self.counts.get(base, 0) + 1
        name = base if self.counts[base] == 1 else f"{base}_{self.counts[base]}"
        self.ops[name] = AnnOp(name, kind, inputs, path, layer)
        for i in inputs:
            if i in self.ops:
                self.ops[i].consumers.append(name)
        self.alias[node.name] = name

    def read(self) -> AnnGraph:
        output = None
        shape: tuple[int, ...] = ()
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name == self.user_input:
                    self.alias[node.name] = INPUT
                    shape = tuple(int(d) for d in node.meta["val"].shape[1:])
            elif node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    raise ConversionError(
                        f"the model must return one tensor, it returns {len(outs)}"
                    )
                output = self.source(outs[0], node)
            elif node.op == "call_function":
                self.visit(node)
            else:
                raise _unsupported(node)
        if output is None or output == INPUT:
            raise ConversionError("the model has no layer to convert")
        return AnnGraph(self.ops, output, shape)

    def visit(self, node: torch.fx.Node) -> None:  # noqa: C901 - one branch per aten op
        t, a = node.target, node.args
        if t in _IDENTITY:
            self.alias[node.name] = self.source(a[0], node)
        elif t is aten.linear.default:
            w, b = self.tensor(a[1]), self.tensor(a[2] if len(a) > 2 else None)
            bias = b if b is not None else torch.zeros(w.shape[0])
            self.add(node, "affine", [self.source(a[0], node)], Affine(w, bias))
        elif t is aten.conv2d.default:
            self.visit_conv(node)
        elif t in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default):
            self.fold_batch_norm(node)
        elif t is operator.getitem:
            self.alias[node.name] = self.source(a[0], node)
        elif t in _RELU:
            self.add(node, "relu", [self.source(a[0], node)])
        elif t in _ADD:
            if len(a) != 2 or not all(isinstance(x, torch.fx.Node) for x in a) or node.kwargs:
                raise _unsupported(node, "only the sum of two layer outputs is supported")
            self.add(node, "add", [self.source(a[0], node), self.source(a[1], node)])
        elif t is aten.avg_pool2d.default:
            self.visit_avg_pool(node)
        elif t is aten.flatten.using_ints:
            start = a[1] if len(a) > 1 else 0
            end = a[2] if len(a) > 2 else -1
            if start != 1 or end != -1:
                raise _unsupported(node, "only flatten(start_dim=1) is supported")
            self.add(node, "flatten", [self.source(a[0], node)], Flatten())
        elif t in _RESHAPE:
            out_shape = tuple(node.meta["val"].shape)
            if len(out_shape) != 2:
                raise _unsupported(node, "only a reshape to [batch, features] is supported")
            self.add(node, "flatten", [self.source(a[0], node)], Flatten())
        else:
            raise _unsupported(node)

    def visit_conv(self, node: torch.fx.Node) -> None:
        a = list(node.args) + [None] * (7 - len(node.args))
        w, b = self.tensor(a[1]), self.tensor(a[2])
        if isinstance(a[4], str):
            raise _unsupported(node, f"padding={a[4]!r}; give explicit padding")
        layer = Conv2d(
            w,
            b if b is not None else torch.zeros(w.shape[0]),
            stride=_pair(a[3] if a[3] is not None else 1),
            padding=_pair(a[4] if a[4] is not None else 0),
            dilation=_pair(a[5] if a[5] is not None else 1),
            groups=int(a[6] if a[6] is not None else 1),
        )
        self.add(node, "conv", [self.source(a[0], node)], layer)

    def visit_avg_pool(self, node: torch.fx.Node) -> None:
        a = list(node.args) + [None] * (7 - len(node.args))
        kernel = _pair(a[1])
        stride = _pair(a[2]) if a[2] else kernel
        padding = _pair(a[3] if a[3] is not None else 0)
        if a[4]:
            raise _unsupported(node, "ceil_mode=True")
        if a[6] is not None or (a[5] is False and padding != (0, 0)):
            raise _unsupported(node, "divisor_override or count_include_pad=False with padding")
        self.add(node, "avgpool", [self.source(a[0], node)], AvgPool2d(kernel, stride, padding))

    def fold_batch_norm(self, node: torch.fx.Node) -> None:
        a = node.args
        src = self.source(a[0], node)
        prev = self.ops.get(src)
        if prev is None or prev.kind not in ("affine", "conv") or prev.consumers:
            raise _unsupported(node, "BatchNorm must directly follow a Linear or Conv2d")
        gamma, beta, mean, var = (self.tensor(x) for x in a[1:5])
        eps = float(a[7] if node.target is aten.batch_norm.default else a[6])
        n = mean.shape[0]
        gamma = gamma if gamma is not None else torch.ones(n)
        beta = beta if beta is not None else torch.zeros(n)
        scale = gamma / torch.sqrt(var + eps)
        layer = prev.layer
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight = layer.weight * scale.reshape(shape)
        layer.bias = (layer.bias - mean) * scale + beta
        self.alias[node.name] = src


def read_ann(program: torch.export.ExportedProgram) -> AnnGraph:
    """Parse an exported ANN into an AnnGraph (BatchNorm folded, Dropout dropped)."""
    return _Reader(program).read()


def export_module(model: torch.nn.Module, sample: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` a module in eval mode on a sample batch."""
    model = model.eval()
    try:
        return torch.export.export(model, (sample,))
    except Exception as exc:  # torch.export raises many types; surface one line
        first = first_line(exc)
        raise ConversionError(f"torch.export failed on the model: {first}") from exc
