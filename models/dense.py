"""``DenseProgram``: a network deployed as it is — one call, named inputs and outputs, no time.

It wraps either a ``torch.export`` program (a user's network, any architecture) or one of our
own architectures (``models/vision``), and maps the program's named tensors onto the wrapped
module's positional arguments and (tensor, tuple or dict) result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ganglion.models.errors import ShapeError


class DenseProgram(nn.Module):
    """A stateless program: ``run(named inputs) -> named outputs``.

    inner: the network (an ``nn.Module``; for a ``torch.export`` program, its module).
    input_names / output_names: the manifest's names, in the order of the network's positional
    arguments and of its flattened result.
    exported: the ``torch.export`` program ``inner`` came from, if any (written to bundles).
    onnx_models: serialized ONNX graphs by precision ("fp32", "int8") made by the converter.
    """

    def __init__(
        self,
        inner: nn.Module,
        input_names: list[str],
        output_names: list[str],
        exported: torch.export.ExportedProgram | None = None,
        onnx_models: dict[str, bytes] | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.exported = exported
        self.onnx_models = dict(onnx_models or {})

    def train(self, mode: bool = True) -> DenseProgram:
        """Set training mode; an exported program's graph is fixed (torch refuses ``train``)."""
        self.training = mode
        if self.exported is None:
            self.inner.train(mode)
        return self

    def forward(self, *args: torch.Tensor) -> Any:
        """The wrapped network on positional tensors."""
        return self.inner(*args)

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named inputs -> named outputs; a ShapeError for inputs outside the shapes a
        ``torch.export`` program was exported for (torch's guard raises AssertionError)."""
        try:
            result = self.inner(*(inputs[name] for name in self.input_names))
        except AssertionError as exc:
            text = str(exc).strip().partition("\n")[0]
            if not text.startswith("Guard failed"):
                raise
            shapes = ", ".join(f"{n} {list(inputs[n].shape)}" for n in self.input_names)
            guard = text.removeprefix("Guard failed:").strip()
            raise ShapeError(
                f"inputs {shapes} are outside the shapes the exported network takes ({guard})"
            ) from exc
        leaves, _ = tree_flatten(result)
        if len(leaves) != len(self.output_names):
            raise ValueError(
                f"the network returned {len(leaves)} tensors, the program declares "
                f"{len(self.output_names)} outputs ({', '.join(self.output_names)})"
            )
        return dict(zip(self.output_names, leaves, strict=True))
