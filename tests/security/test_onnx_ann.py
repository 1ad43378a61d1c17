"""converters/spiking/onnx_ann.py: an ONNX ANN becomes the same AnnGraph as its torch.export
program; unsupported nodes are named; external data and oversized files are refused."""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ganglion.converters.onnx_file import load_onnx
from ganglion.converters.spiking.ann_graph import export_module, read_ann
from ganglion.converters.spiking.ann_to_snn import SpikingOptions, ann_to_spiking_graph
from ganglion.converters.spiking.onnx_ann import read_ann_onnx
from ganglion.models.errors import ConversionError


class ViewResidual(nn.Module):
    """conv -> relu -> [conv + skip] -> relu -> x.view(batch, -1) -> linear -> BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem, self.body = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.head, self.norm = nn.Linear(4 * 8 * 8, 10), nn.BatchNorm1d(10)
        self.norm.running_mean.uniform_(-0.2, 0.2)
        self.norm.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.body(h) + h)
        return self.norm(self.head(h.view(h.shape[0], -1)))


def onnx_bytes(model: nn.Module, sample: torch.Tensor, dynamo: bool = False) -> bytes:
    """The model exported to ONNX (self-contained) with a dynamic batch axis."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model, (sample,), dynamo=True, dynamic_shapes=({0: "batch"},)
            )
            return program.model_proto.SerializeToString()
        torch.onnx.export(
            model,
            (sample,),
            buffer,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    return buffer.getvalue()


@pytest.mark.parametrize("net", ["mlp", "cnn", "view-residual"])
def test_onnx_ann_runs_like_the_torch_model(craft, net, tmp_path):
    model = {"mlp": craft.small_mlp, "cnn": craft.small_cnn, "view-residual": ViewResidual}[net]()
    model.eval()
    x = torch.rand(16, 64) if net == "mlp" else torch.rand(16, 1, 8, 8)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, x[:2]))
    ann = read_ann_onnx(path)
    with torch.no_grad():
        torch.testing.assert_close(ann.run(x)[0], model(x), atol=1e-5, rtol=1e-5)
    assert ann.input_shape == tuple(x.shape[1:])


@pytest.mark.slow
def test_dynamo_exported_onnx_runs_like_the_torch_model(craft, tmp_path):
    pytest.importorskip("onnxscript")  # torch.onnx's dynamo exporter needs it
    model, x = craft.small_cnn(), torch.rand(8, 1, 8, 8)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, x[:2], dynamo=True))
    with torch.no_grad():
        torch.testing.assert_close(read_ann_onnx(path).run(x)[0], model(x), atol=1e-5, rtol=1e-5)


def handmade_model() -> onnx.ModelProto:
    """MatMul + bias Add, BatchNormalization, Relu, Dropout, Identity, Reshape(allowzero)
    to [-1, features], Gemm with transB=0 and alpha/beta: nodes torch's exporters may emit."""
    rng = np.random.default_rng(0)

    def const(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(array.astype(np.float32), name)

    initializers = [
        const("w", rng.normal(size=(6, 5))),
        const("b", rng.normal(size=(5,))),
        const("gamma", rng.uniform(0.5, 1.5, 5)),
        const("beta", rng.normal(size=5)),
        const("mean", rng.normal(size=5)),
        const("var", rng.uniform(0.5, 1.5, 5)),
        const("w2", rng.normal(size=(5, 3))),
        const("c2", rng.normal(size=(1, 3))),
        numpy_helper.from_array(np.array([-1, 5], dtype=np.int64), "target"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
        helper.make_node("Add", ["b", "mm"], ["biased"], name="bias"),
        helper.make_node(
            "BatchNormalization", ["biased", "gamma", "beta", "mean", "var"], ["bn"], name="bn"
        ),
        helper.make_node("Relu", ["bn"], ["act"], name="act"),
        helper.make_node("Dropout", ["act"], ["drop"], name="drop"),
        helper.make_node("Identity", ["drop"], ["same"], name="same"),
        helper.make_node("Reshape", ["same", "target"], ["flat"], name="flat", allowzero=1),
        helper.make_node("Gemm", ["flat", "w2", "c2"], ["y"], name="head", alpha=0.5, beta=2.0),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_handmade_graph_matches_onnxruntime():
    model = handmade_model()
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    ann = read_ann_onnx(model)
    assert [op.kind for op in ann.ops.values()] == ["affine", "relu", "flatten", "affine"]
    np.testing.assert_allclose(ann.run(torch.from_numpy(x))[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_spiking_conversion_from_onnx_equals_conversion_from_torch_export(craft, net, tmp_path):
    model = craft.small_mlp() if net == "mlp" else craft.small_cnn()
    x = torch.rand(64, 64) if net == "mlp" else torch.rand(64, 1, 8, 8)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(model, x[:2]))
    opts = SpikingOptions(timesteps=8)
    from_onnx, from_export = (
        ann_to_spiking_graph(ann, x, opts)[0]
        for ann in (read_ann_onnx(path), read_ann(export_module(model, x[:2])))
    )
    assert len(from_onnx.nodes) == len(from_export.nodes) > 2
    rename = dict(zip(from_onnx.nodes, from_export.nodes, strict=True))
    assert [(rename.get(a, a), rename.get(b, b)) for a, b in from_onnx.edges] == from_export.edges
    for ours, theirs in zip(from_onnx.nodes.values(), from_export.nodes.values(), strict=True):
        assert type(ours) is type(theirs)
        for field in dataclasses.fields(ours):
            mine, other = getattr(ours, field.name), getattr(theirs, field.name)
            if isinstance(mine, torch.Tensor):
                torch.testing.assert_close(mine, other, atol=1e-5, rtol=1e-5)
            else:
                assert mine == other, field.name


def test_unsupported_node_is_named_with_its_op_type(tmp_path):
    model = handmade_model()
    model.graph.node[3].op_type = "Sigmoid"  # the Relu
    with pytest.raises(ConversionError) as caught:
        read_ann_onnx(model)
    message = str(caught.value)
    assert "'act' (Sigmoid)" in message and "supported: Gemm" in message and "\n" not in message


def test_external_data_is_refused_before_it_is_read(tmp_path):
    """A tensor whose bytes live in another file (here a local 'secret') is refused; the
    model is loaded without external data, so the secret's bytes reach nothing."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(30, 7.0, dtype=np.float32).tobytes())
    model = handmade_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": str(secret), "offset": "0", "length": "120"}.items():
        weight.external_data.add(key=key, value=value)
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    for source in (path, onnx.load(str(path), load_external_data=False)):
        with pytest.raises(ConversionError, match="tensor 'w' refers to external data"):
            read_ann_onnx(source)


def test_oversized_and_unreadable_files_get_one_line_errors(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(handmade_model().SerializeToString())
    with pytest.raises(ConversionError, match="more than the 100 allowed"):
        load_onnx(path, max_bytes=100)
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ConversionError, match="not a readable ONNX model"):
        read_ann_onnx(path)
    with pytest.raises(ConversionError, match="no such file"):
        read_ann_onnx(tmp_path / "missing.onnx")
