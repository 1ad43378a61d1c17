"""Graphs written by snnTorch, Norse, Sinabs, SpikingJelly, Lava and the NIR paper reproduce the
framework's own simulation under their ``--like`` preset (fixtures: ``fixtures/nir``, made by
``make_fixtures.py``), and ``import-nir`` refuses or warns where conventions go wrong."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from ganglion.converters.nir_program import import_nir_program, silence_warning
from ganglion.converters.nir_semantics import semantics_for
from ganglion.models.errors import NIRError
from ganglion.runtime.bundle import load_bundle
from ganglion.runtime.cli.app import main

FIXTURES = Path(__file__).parent / "fixtures" / "nir"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
UNTYPED = ("norse", "sinabs")  # their exporters declare the Input with a batch/time axis


def _fixture(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    data = np.load(FIXTURES / f"{name}.npz", allow_pickle=False)
    return data["x"], data["y"], str(data["like"])


def _run(name: str, like: str) -> np.ndarray:
    x, _, _ = _fixture(name)
    program = import_nir_program(
        FIXTURES / f"{name}.nir", semantics=semantics_for(like), type_check=like not in UNTYPED
    )
    with torch.no_grad():
        return program.module.run(torch.from_numpy(x)).numpy()


def test_every_framework_has_a_fixture() -> None:
    likes = {_fixture(n)[2] for n in NAMES}
    assert likes == {"nir", "snntorch", "norse", "sinabs", "spikingjelly", "lava"}


@pytest.mark.parametrize("name", NAMES)
def test_preset_reproduces_the_frameworks_own_simulation(name: str) -> None:
    _, expected, like = _fixture(name)
    got = _run(name, like)
    assert np.abs(expected).sum() > 0, "the fixture's output must not be silent"
    if like in UNTYPED:  # a leaky read-out: membranes, equal to float rounding
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", [n for n in NAMES if _fixture(n)[2] != "nir"])
def test_plain_nir_rules_do_not_reproduce_a_framework_with_other_conventions(name: str) -> None:
    _, expected, like = _fixture(name)
    type_check = like not in UNTYPED
    try:
        program = import_nir_program(FIXTURES / f"{name}.nir", type_check=type_check)
    except NIRError as exc:  # Norse's τ at dt = 1e-4: refused, which is not reproducing either
        assert "leaves [0, 1]" in str(exc)
        return
    with torch.no_grad():
        got = program.module.run(torch.from_numpy(_fixture(name)[0])).numpy()
    assert not np.allclose(got, expected, atol=1e-5)


def test_type_check_failure_is_reported_as_such_and_can_be_skipped() -> None:
    path = FIXTURES / "norse_lifbox_iaf_lif_libox.nir"
    with pytest.raises(NIRError, match=r"fails NIR's type check.*--no-type-check"):
        import_nir_program(path, semantics=semantics_for("norse"))
    assert import_nir_program(path, semantics=semantics_for("norse"), type_check=False)


def _lif_graph(tau: float, r: float = 1.0) -> nir.NIRGraph:
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([3])),
            "lif": nir.LIF(
                tau=np.full(3, tau), r=np.full(3, r), v_leak=np.zeros(3),
                v_threshold=np.ones(3), v_reset=np.zeros(3),
            ),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "lif"), ("lif", "output")],
    )  # fmt: skip


def test_dt_larger_than_tau_names_the_node_and_the_fix(tmp_path: Path) -> None:
    nir.write(tmp_path / "fast.nir", _lif_graph(tau=1e-5))
    with pytest.raises(NIRError, match=r"node 'lif'.*leaves \[0, 1\].*--decay exact"):
        import_nir_program(tmp_path / "fast.nir")
    exact = import_nir_program(tmp_path / "fast.nir", semantics=semantics_for("nir", decay="exact"))
    assert float(exact.module.graph.nodes["lif"].decay[0]) == pytest.approx(np.exp(-10.0))
    forced = import_nir_program(tmp_path / "fast.nir", force=True)
    assert float(forced.module.graph.nodes["lif"].decay[0]) == pytest.approx(-9.0)


def test_if_graph_with_unit_r_at_default_dt_warns_that_it_stays_silent(tmp_path: Path) -> None:
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([3])),
            "if": nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3)),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "if"), ("if", "output")],
    )
    nir.write(tmp_path / "if.nir", graph)
    warning = silence_warning(import_nir_program(tmp_path / "if.nir"))
    assert warning is not None and "dt·R" in warning and "--dt 1" in warning
    assert silence_warning(import_nir_program(tmp_path / "if.nir", dt=1.0)) is None


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code or 0


def test_cli_records_the_conventions_and_export_keeps_them(tmp_path: Path, capsys) -> None:
    name = "snntorch_leaky_rleaky_synaptic"
    bundle, again = tmp_path / "b", tmp_path / "again"
    args = ["import-nir", str(FIXTURES / f"{name}.nir"), "-o", str(bundle), "--like", "snntorch"]
    assert _cli([*args, "--fire", "ge"]) == 0
    semantics = json.loads((bundle / "manifest.json").read_text())["time"]["semantics"]
    assert semantics["like"] == "snntorch" and semantics["reset_delay"] == 1
    assert semantics["fire"] == "ge"
    assert _cli(["inspect", str(bundle)]) == 0
    shown = capsys.readouterr().out
    assert "like=snntorch" in shown and "reset_delay=1" in shown and "fire=ge" in shown
    assert "timesteps=" not in shown and "T=the input's first axis" in shown  # time-major
    assert "{" not in shown and "None" not in shown  # no raw dicts, no absent fields
    same = str(tmp_path / "both.out")
    assert _cli(["export", str(bundle), "--nir", same, "--onnx", same, "--force"]) != 0
    assert "--nir and --onnx both name" in capsys.readouterr().err
    assert not (tmp_path / "both.out").exists()  # refused before anything was written
    assert _cli(["export", str(bundle), "--nir", str(tmp_path / "out.nir")]) == 0
    assert _cli(["import-nir", str(tmp_path / "out.nir"), "-o", str(again)]) == 0  # plain rules
    x = torch.from_numpy(_fixture(name)[0])
    first, second = load_bundle(bundle).module.run(x), load_bundle(again).module.run(x)
    assert torch.equal(first, second)  # node metadata carried the conventions


def test_failed_import_leaves_no_bundle(tmp_path: Path, capsys) -> None:
    nir.write(tmp_path / "fast.nir", _lif_graph(tau=1e-5))
    assert _cli(["import-nir", str(tmp_path / "fast.nir"), "-o", str(tmp_path / "b")]) != 0
    assert "--decay exact" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert _cli(["import-nir", str(tmp_path / "fast.nir"), "-o", str(tmp_path / "b"),
                 "--like", "bogus"]) != 0  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_a_graph_whose_shapes_disagree_imported_unchecked_is_named(
    tmp_path: Path, one_line_error
) -> None:
    """With --no-type-check a weight of the wrong width reached torch's matmul, whose message
    named neither the file nor the cause."""
    from ganglion.runtime.cli import invoke

    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([4])}),
            "fc": nir.Affine(weight=np.ones((3, 5)), bias=np.zeros(3)),
            "if": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
            "out": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("in", "fc"), ("fc", "if"), ("if", "out")],
        type_check=False,
    )
    nir.write(tmp_path / "wide.nir", graph)
    code, _, err = invoke(
        "import-nir", "--no-type-check", str(tmp_path / "wide.nir"), "-o", str(tmp_path / "b")
    )
    one_line_error(code, err, "wide.nir: the graph does not run", "shapes disagree")
    assert not (tmp_path / "b").exists()
