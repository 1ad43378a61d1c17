"""``ganglion convert dense`` end to end: the digits CNN from .pt2 (fp32 and int8) and from
ONNX, and a Transformer encoder with two named inputs, on torch and onnxruntime."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ganglion.models.errors import GanglionError
from ganglion.models.recipes.digits import DigitsData
from ganglion.runtime import load
from ganglion.runtime.cli import main


def _cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def _accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float((out.argmax(-1) == y).mean())


@pytest.fixture(scope="module")
def cnn_files(digits_cnn: tuple[nn.Module, DigitsData], tmp_path_factory: pytest.TempPathFactory):
    model, data = digits_cnn
    folder = tmp_path_factory.mktemp("dense-cnn")
    batch = torch.export.Dim("batch", min=1, max=4096)
    sample = torch.from_numpy(data.x_train[:2])
    program = torch.export.export(model.eval(), (sample,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "cnn.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (sample,),
            str(folder / "cnn.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    np.savez(folder / "calib.npz", x=data.x_train[:256], y=data.y_train[:256])
    return folder, model, data


def test_digits_cnn_from_pt2_runs_everywhere_with_int8(cnn_files, capsys, tampered) -> None:
    folder, model, data = cnn_files
    bundle = folder / "b"
    code, out, err = _cli(
        [
            "convert",
            "dense",
            folder / "cnn.pt2",
            "--calib",
            folder / "calib.npz",
            "-o",
            bundle,
            "--precision",
            "int8",
        ],
        capsys,
    )
    assert code == 0, err
    assert "int8 vs fp32" in out and "precisions: fp32, int8" in out
    with torch.no_grad():
        ann = _accuracy(model(torch.from_numpy(data.x_test)).numpy(), data.y_test)
    ref = load(bundle).run(data.x_test)
    assert _accuracy(ref, data.y_test) == ann
    np.testing.assert_allclose(load(bundle, backend="onnxruntime").run(data.x_test), ref, atol=1e-4)
    int8 = load(bundle, backend="onnxruntime", precision="int8").run(data.x_test)
    assert abs(_accuracy(int8, data.y_test) - ann) <= 0.03
    report = json.loads((bundle / "manifest.json").read_text())["report"]["accuracy_check"]
    assert report["int8_vs_fp32"]["argmax_agreement"] > 0.9
    assert report["onnx_vs_torch"]["output_max_abs_diff"] < 1e-4
    code, out, _ = _cli(["inspect", bundle], capsys)
    assert code == 0 and "dense program (exported" in out
    assert "onnx   model.int8.onnx: the same, quantized" in out
    graph = onnx.load(bundle / "model.onnx").graph  # the batch axis named for a peer
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"

    def external_weight(copy: Path) -> None:  # the int8 graph reads a file beside the process
        graph = onnx.load(copy / "model.int8.onnx")
        tensor = max(graph.graph.initializer, key=lambda t: len(t.raw_data))
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "leak.bin"
        onnx.save(graph, copy / "model.int8.onnx")

    bad = tampered(bundle, folder, edit=external_weight)
    with pytest.raises(
        GanglionError, match=r"model\.int8\.onnx: tensor .* refers to external data"
    ):
        load(bad, backend="onnxruntime", precision="int8")


def test_digits_cnn_from_onnx_runs_on_onnxruntime_only(cnn_files, capsys) -> None:
    folder, _, data = cnn_files
    bundle = folder / "from-onnx"
    assert _cli(["convert", "dense", folder / "cnn.onnx", "-o", bundle], capsys)[0] == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "image", "shape": [-1, 1, 8, 8], "dtype": "float32"}]
    out = load(bundle, backend="onnxruntime").run(data.x_test)
    assert out.shape == (len(data.x_test), 10)
    np.save(folder / "x.npy", data.x_test[:4])
    code, _, err = _cli(
        ["run", bundle, "--input", folder / "x.npy", "--output", folder / "y.npy"], capsys
    )
    assert code == 1 and "has no torch form; run it with --backend onnxruntime" in err
    # its parameters are the ONNX graph's weights (floating-point initializers), not 0
    weights = onnx.load(str(folder / "cnn.onnx")).graph.initializer
    expected = sum(
        onnx.numpy_helper.to_array(t).size
        for t in weights
        if onnx.numpy_helper.to_array(t).dtype.kind == "f"
    )
    assert expected > 0
    code, out, _ = _cli(["inspect", bundle, "--json"], capsys)
    assert code == 0 and json.loads(out)["parameters"] == expected


class Encoder(nn.Module):
    """Token ids and a float mask in; class logits and token features out."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.norm(self.layer(self.emb(ids) * mask.unsqueeze(-1)))
        return {"logits": self.head(h.mean(1)), "features": h}


def test_transformer_encoder_with_two_inputs(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    batch = torch.export.Dim("batch", min=1, max=256)
    args = (torch.zeros(2, 7, dtype=torch.int64), torch.ones(2, 7))
    torch.export.save(
        torch.export.export(model, args, dynamic_shapes=({0: batch}, {0: batch})),
        str(tmp_path / "enc.pt2"),
    )
    rng = np.random.default_rng(0)
    ids, mask = rng.integers(0, 20, (5, 7)), (rng.random((5, 7)) > 0.2).astype(np.float32)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    assert _cli(["convert", "dense", tmp_path / "enc.pt2", "-o", tmp_path / "b"], capsys)[0] == 0
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.from_numpy(mask))
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.npz"
        code, _, err = _cli(
            [
                "run",
                tmp_path / "b",
                "--input",
                f"ids={tmp_path / 'ids.npy'}",
                "--input",
                f"mask={tmp_path / 'mask.npy'}",
                "--output",
                out,
                "--backend",
                backend,
            ],
            capsys,
        )
        assert code == 0, err
        got = np.load(out)
        for name in ("logits", "features"):
            np.testing.assert_allclose(got[name], expected[name].numpy(), atol=1e-4, err_msg=name)
    np.save(tmp_path / "far.npy", np.full((1, 7), 99))  # past the embedding's 20 rows
    np.save(tmp_path / "mask1.npy", mask[:1])
    code, _, err = _cli(
        ["run", tmp_path / "b", "--input", f"ids={tmp_path / 'far.npy'}", "--input",
         f"mask={tmp_path / 'mask1.npy'}", "--output", tmp_path / "far.npz"],
        capsys,
    )  # fmt: skip
    assert code != 0 and err.count("\n") == 1  # refused before any backend: the table's rows
    assert "input 'ids' holds 99 at index (0, 0); it takes integers in [0, 19]" in err
    assert not (tmp_path / "far.npz").exists()
    # one bare array for a program of two inputs: how to give them, from the command line
    code, _, err = _cli(["run", tmp_path / "b", "--input", tmp_path / "ids.npy", "--output",
                         tmp_path / "one.npz"], capsys)  # fmt: skip
    assert code != 0 and err.count("\n") == 1
    assert "ids.npy: this program takes several inputs (ids, mask): give each as --input " in err


def test_operator_outside_aten_is_refused_by_name() -> None:
    """A custom operator (any code at all) never runs from a dense bundle."""
    from ganglion.converters.exported_archive import check_graph_ops
    from ganglion.models.errors import ConversionError

    @torch.library.custom_op("ganglion_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return twice(x) + 1

    program = torch.export.export(Custom(), (torch.zeros(2),))
    with pytest.raises(ConversionError, match="ganglion_test::twice .* not allowed"):
        check_graph_ops(program)


def test_a_bounded_batch_axis_is_kept_and_every_backend_keeps_to_it(tmp_path: Path) -> None:
    """A network exported with ``Dim("batch", max=8)`` takes at most 8 samples on torch (its
    guards); the manifest records the bound, so ONNX Runtime refuses a ninth too, in the same
    words, where it would have run it."""
    from ganglion.converters.dense import convert_dense
    from ganglion.models.errors import ShapeError
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.cli import invoke

    model = nn.Sequential(nn.Linear(4, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    bounded = torch.export.export(model, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    free = torch.export.export(model, (torch.zeros(2, 4),))
    bundle = save_bundle(convert_dense(bounded), tmp_path / "bounded")
    unbounded = save_bundle(convert_dense(free), tmp_path / "free")
    assert json.loads((bundle / "manifest.json").read_text())["max_batch"] == 8
    assert "max_batch" not in json.loads((unbounded / "manifest.json").read_text())
    code, out, _ = invoke("inspect", str(bundle))
    assert code == 0 and "batch  at most 8 (as exported)" in out
    x = np.ones((9, 4), np.float32)
    for backend in ("torch", "onnxruntime"):
        with load(bundle, backend=backend) as session:
            assert session.run(x[:8]).shape == (8, 3)
            with pytest.raises(ShapeError, match="a batch of 9 is more than this program takes"):
                session.run(x)
        with load(unbounded, backend=backend) as session:
            assert session.run(x).shape == (9, 3)


@pytest.mark.parametrize("bad", ["8", 0, -1, 2.5, True])
def test_a_malformed_max_batch_is_named(bad: object) -> None:
    _refused_manifest("max_batch", bad)


def _refused_manifest(field: str, value: object) -> None:
    """A dense manifest (a float input x, an int64 input ids) with ``field`` set to ``value``
    is refused, naming the field."""
    from ganglion.models.errors import BundleError
    from ganglion.models.manifest import Manifest

    data = {
        "kind": "dense",
        "architecture": "exported_program",
        "inputs": [
            {"name": "x", "shape": [-1, 4], "dtype": "float32"},
            {"name": "ids", "shape": [-1, 5], "dtype": "int64"},
        ],
        "outputs": [{"name": "y", "shape": [-1, 3], "dtype": "float32"}],
        field: value,
    }
    with pytest.raises(BundleError, match=f"manifest.{field}"):
        Manifest.from_dict(data)


class _Bag(nn.Module):
    """Token ids through an embedding, beside a float input."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids).mean(1)) + x


def test_embedding_indices_are_checked_alike_on_every_backend(tmp_path: Path) -> None:
    """torch refuses an index outside the table and ONNX's Gather reads a negative one from
    the table's end: the manifest keeps the table's rows and every session refuses the same
    index in the same words, naming where it is."""
    from ganglion.converters.dense import convert_dense
    from ganglion.models.errors import ShapeError
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.cli import invoke

    torch.manual_seed(0)
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 2))
    program = torch.export.export(_Bag().eval(), example, dynamic_shapes=({0: batch}, {0: batch}))
    bundle = save_bundle(convert_dense(program), tmp_path / "bag")
    assert json.loads((bundle / "manifest.json").read_text())["value_ranges"] == {"ids": [0, 9]}
    code, out, _ = invoke("inspect", str(bundle))
    assert code == 0 and "values ids in [0, 9] (table rows)" in out
    x = np.zeros((3, 2), np.float32)
    ids = np.arange(15, dtype=np.int64).reshape(3, 5) % 10
    answers = []
    for backend in ("torch", "onnxruntime"):
        with load(bundle, backend=backend) as session:
            answers.append(next(iter(session.run({"ids": ids, "x": x}).values())))
            for bad in (-1, 10):
                wrong = ids.copy()
                wrong[1, 2] = bad
                words = f"'ids' holds {bad} at index (1, 2); it takes integers in [0, 9]"
                with pytest.raises(ShapeError, match=re.escape(words)):
                    session.run({"ids": wrong, "x": x})
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-6)


@pytest.mark.parametrize(
    "ranges",
    [{"x": [0, 5]}, {"ids": [0]}, {"ids": [5, 0]}, {"ids": ["0", 5]}, {"nope": [0, 1]}, [0, 1]],
)
def test_malformed_value_ranges_are_named(ranges: object) -> None:
    _refused_manifest("value_ranges", ranges)


class _CastBag(nn.Module):
    """int32 ids cast to int64, into a table and a bag of 7 rows, and compared with 0."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 4)
        self.bag = nn.EmbeddingBag(7, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        wide = ids.long()
        kept = (ids >= 0).float().mean(1, keepdim=True)
        return self.table(wide).mean(1) + self.bag(wide) * kept


def test_indices_through_casts_bags_and_other_uses_are_ranged(tmp_path: Path) -> None:
    """The range holds wherever the input's values reach an embedding's indices: through a
    cast, into an EmbeddingBag, also when the input is read elsewhere too; the smaller table
    bounds it. Example inputs (warm-up, profiles) keep to it."""
    from ganglion.converters.dense import convert_dense
    from ganglion.models.errors import ShapeError
    from ganglion.runtime.bundle import save_bundle

    torch.manual_seed(0)
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, 5, dtype=torch.int32),)
    program = torch.export.export(_CastBag().eval(), example, dynamic_shapes=({0: batch},))
    bundle = save_bundle(convert_dense(program), tmp_path / "castbag")
    assert json.loads((bundle / "manifest.json").read_text())["value_ranges"] == {"ids": [0, 6]}
    ids = np.full((2, 5), 3, np.int32)
    for backend in ("torch", "onnxruntime"):
        with load(bundle, backend=backend) as session:
            session.run(session.kind.example_inputs(session.manifest, batch=3))
            assert session.run(ids).shape == (2, 4)
            for bad in (-1, 7):
                with pytest.raises(ShapeError, match=f"'ids' holds {bad} at index"):
                    session.run(np.full((2, 5), bad, np.int32))


def test_a_member_with_a_bounded_batch_is_calibrated_in_pieces(tmp_path: Path) -> None:
    """An ensemble's calibration runs a member bounded at 8 samples on 20, 8 at a time."""
    from ganglion.converters.dense import convert_dense
    from ganglion.runtime.ensemble_calibration import expert_probabilities

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    bounded = convert_dense(
        torch.export.export(model, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    )
    free = convert_dense(torch.export.export(model, (torch.zeros(2, 4),)))
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    got = expert_probabilities(bounded, {"x": x})
    np.testing.assert_allclose(got, expert_probabilities(free, {"x": x}), atol=1e-6)
    assert got.shape == (20, 3)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.full(6, -1), "must be in [0, 3), got -1..-1"),
        (np.full(6, 2**62), "must be in [0, 3), got 4611686018427387904"),
        (np.full(6, np.nan), "must be 6 integers in [0, 3) (one per sample), got float64 [6]"),
        (np.zeros(2, np.int64), "must be 6 integers in [0, 3) (one per sample), got int64 [2]"),
    ],
    ids=["negative", "huge", "nan", "short"],
)
def test_calibration_labels_are_checked_before_they_score(labels, words) -> None:
    """A label out of range scored accuracy 0 and a NaN or short one dropped the check, all
    with exit 0."""
    from ganglion.converters.dense import convert_dense
    from ganglion.models.errors import ConversionError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    program = torch.export.export(model, (torch.zeros(2, 4),))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with pytest.raises(ConversionError, match=re.escape(words)):
        convert_dense(program, {"x": x, "y": labels})
    report = convert_dense(program, {"x": x, "y": np.array([0, 1, 2, 0, 1, 2])}).manifest.report
    assert set(report["accuracy_check"]["onnx_vs_torch"]) >= {"accuracy", "source_accuracy"}


def test_an_onnx_tensor_without_a_shape_is_named_and_outputs_keep_their_names(
    tmp_path: Path, capsys, one_line_error
) -> None:
    from onnx import TensorProto, helper

    def model(shape: list | None) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    onnx.save(model(None), tmp_path / "noshape.onnx")
    code, _, err = _cli(["convert", "dense", tmp_path / "noshape.onnx", "-o", tmp_path / "b"],
                        capsys)  # fmt: skip
    one_line_error(code, err, "noshape.onnx", "'x' has no shape")
    assert not (tmp_path / "b").exists()
    onnx.save(model(["batch", 3]), tmp_path / "shaped.onnx")  # the same graph, shaped: fine
    code, _, err = _cli(["convert", "dense", tmp_path / "shaped.onnx", "-o", tmp_path / "b"],
                        capsys)  # fmt: skip
    assert code == 0, err
    # one bare .npy input, outputs by name: the program's output name, as from an .npz input
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for given in ("x.npy", "x.npz"):
        out = tmp_path / f"out-{given}.npz"
        code, _, err = _cli(["run", tmp_path / "b", "--input", tmp_path / given, "--output", out,
                             "--backend", "onnxruntime"],
                            capsys)  # fmt: skip
        assert code == 0, err
        with np.load(out) as saved:
            assert list(saved) == ["y"]
            np.testing.assert_array_equal(saved["y"], np.maximum(x, 0))
