"""ONNX export: checked graphs, the naming convention, bundles and the export command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ganglion.converters.torch_onnx import torch_to_onnx
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError, ConversionError
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.kinds import get_kind
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import export_graph, onnx_face


def _names(values: list[onnx.ValueInfoProto]) -> list[str]:
    return [v.name for v in values]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("decoding", ["membrane", "count"])
def test_step_graph_names_state_by_convention(
    make_program: Callable[..., Deployable], decoding: str
) -> None:
    program = make_program(decoding=decoding)
    model = export_graph(program, "step")
    states = [s.name for s in program.manifest.state]
    assert _names(model.graph.input) == ["input"] + [naming.state_input(s) for s in states]
    assert _names(model.graph.output) == ["output"] + [naming.state_output(s) for s in states]
    assert _dims(model.graph.input[0]) == ["batch", 12]
    assert _dims(model.graph.output[0]) == ["batch", 4]


def test_sequence_graph_has_dynamic_time_and_batch(program: Deployable) -> None:
    model = export_graph(program, "sequence")
    assert _names(model.graph.input) == ["input"]
    assert _dims(model.graph.input[0]) == ["time", "batch", 12]
    assert any(node.op_type == "Scan" for node in model.graph.node)


@pytest.mark.parametrize("opset", [naming.MIN_OPSET, naming.DEFAULT_OPSET, 21])
def test_graphs_pass_full_check_at_opset(program: Deployable, opset: int) -> None:
    for graph in ("step", "sequence"):
        model = export_graph(program, graph, opset)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset


def test_opset_out_of_range_is_refused(program: Deployable) -> None:
    with pytest.raises(BundleError, match="--opset must be in"):
        export_graph(program, "step", naming.MIN_OPSET - 1)


def test_unknown_graph_is_refused(program: Deployable) -> None:
    with pytest.raises(BundleError, match="--graph must be one of"):
        export_graph(program, "loop")


def test_bundle_holds_checksummed_graphs_and_opset(program: Deployable, tmp_path: Path) -> None:
    folder = save_bundle(program, tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {naming.STEP_FILE, naming.SEQUENCE_FILE} <= set(manifest["artifacts"])
    record = manifest["provenance"]["onnx"]
    assert record["opset"] == naming.DEFAULT_OPSET
    assert record["graphs"] == {"step": naming.STEP_FILE, "sequence": naming.SEQUENCE_FILE}
    onnx.checker.check_model(str(folder / naming.STEP_FILE), full_check=True)
    (folder / naming.STEP_FILE).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="model.onnx does not match"):
        load_bundle(folder)


@pytest.mark.parametrize("graph", ["step", "sequence"])
def test_export_command_writes_graph(
    program: Deployable, tmp_path: Path, graph: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    out = tmp_path / f"{graph}.onnx"
    with pytest.raises(SystemExit) as done:
        main(["export", str(folder), "--onnx", str(out), "--graph", graph, "--opset", "18"])
    assert done.value.code == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert f"ONNX {graph} graph (opset 18)" in capsys.readouterr().out


def test_export_command_bad_opset_is_one_line(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    with pytest.raises(SystemExit) as done:
        main(["export", str(folder), "--onnx", str(tmp_path / "x.onnx"), "--opset", "9"])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --opset must be in") and "\n" not in err


def test_rate_encoded_graph_takes_encoded_input(make_program: Callable[..., Deployable]) -> None:
    """The host encodes rate inputs with the reference encoder: binary spikes, seeded by t."""
    program = make_program(encoding="rate")
    kind, manifest = get_kind("spiking"), program.manifest
    x = {"input": np.full((2, 12), 0.5, dtype=np.float32)}

    def feed(t: int) -> np.ndarray:
        return kind.onnx_feeds(manifest, x, {"t": np.array([t])})["input"]

    first, again, later = feed(0), feed(0), feed(1)
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)


def test_fixed_point_program_gets_no_onnx_graphs(program: Deployable, tmp_path: Path) -> None:
    """Loihi fixed-point numerics have no float ONNX form: the bundle is written without."""
    program.manifest.numerics = "loihi2-fixed"
    with pytest.raises(BundleError, match="no ONNX export for 'loihi2-fixed' numerics"):
        onnx_face(program)
    folder = save_bundle(program, tmp_path / "b")
    assert not (folder / naming.STEP_FILE).exists()
    assert "onnx" not in json.loads((folder / "manifest.json").read_text())["provenance"]


class _BatchPinning(torch.nn.Module):
    """Neither exporter keeps its batch dynamic: TorchScript bakes the Python int ``n`` in, and
    torch.export cannot carry the batch through ``chunk`` of a concatenation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        a, b = torch.cat([x, x * 2]).chunk(2)
        return (a + b).reshape(n, -1)


def test_a_graph_that_fixes_its_declared_dynamic_batch_is_refused() -> None:
    batch = torch.export.Dim("batch")
    with pytest.raises(ConversionError, match="does not give torch's outputs at another batch"):
        torch_to_onnx(_BatchPinning(), (torch.randn(3, 4),), ["x"], ["y"], ({0: batch},))
