"""GraphBuilder: a thin, checked layer over ``onnx.helper`` that names values uniquely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str
DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "bool": TensorProto.BOOL}


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(self, name: str, prefix: str = "") -> None:
        self.name = name
        self.prefix = prefix  # keeps a subgraph's names apart from its outer graph's
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        """A value name not used before in this graph."""
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        """Declare a graph input; returns its name."""
        self.inputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def output(self, name: str, value: str, dtype: str, shape: Sequence[Dim] | None) -> None:
        """Expose ``value`` as graph output ``name`` (through an Identity when names differ)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        dims = None if shape is None else list(shape)
        self.outputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], dims))

    def const(self, hint: str, array: np.ndarray) -> str:
        """An initializer holding ``array``; returns its name."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        """Append one single-output node; returns the output's name."""
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def ops(self, op_type: str, inputs: Sequence[str], n_out: int, **attrs: Any) -> list[str]:
        """Append one node with ``n_out`` outputs; returns their names."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def graph(self) -> onnx.GraphProto:
        """The GraphProto built so far."""
        return helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )


def make_model(graph: onnx.GraphProto, opset: int, doc: str) -> onnx.ModelProto:
    """A model at ``opset`` with the lowest IR version that opset needs (for older runtimes)."""
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opset_ids, producer_name="ganglion", doc_string=doc
    )
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    return model
