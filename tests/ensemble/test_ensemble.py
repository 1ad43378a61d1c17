"""MoE² ensembles end to end: experts trained on different digit classes, a post-hoc gate,
the composite bundle on every backend, selection from the bundle's cached outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import BundleError, ConversionError
from ganglion.models.recipes.digits import DigitsData, digits_mlp, load_digits, train_classifier
from ganglion.runtime import load
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.ensemble_calibration import all_expert_probabilities


def _expert(data: DigitsData, classes: range, spiking: bool):
    keep = np.isin(data.y_train, list(classes))
    subset = DigitsData(data.x_train[keep], data.y_train[keep], data.x_test, data.y_test)
    torch.manual_seed(0)
    model = digits_mlp()
    train_classifier(model, subset, epochs=15)
    model.eval()
    if spiking:
        return convert_spiking(model, data.x_train[:256], None, SpikingOptions(timesteps=16))
    batch = torch.export.Dim("batch", min=1, max=4096)
    sample = torch.from_numpy(data.x_train[:2])
    return convert_dense(torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)))


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return load_digits(image=False)


@pytest.fixture(scope="module")
def ensemble(digits: DigitsData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    members = {
        "low": _expert(digits, range(0, 5), False),
        "high": _expert(digits, range(5, 10), True),
    }
    probs = all_expert_probabilities(members, {"x": digits.x_train})
    program = convert_ensemble(
        members,
        {"x": digits.x_train},
        digits.y_train,
        probs,
        epochs=150,
        placement={"high": "loihi2"},
    )
    return save_bundle(program, tmp_path_factory.mktemp("ens") / "digits-moe")


def test_gated_ensemble_beats_each_expert(ensemble: Path, digits: DigitsData) -> None:
    program = load_bundle(ensemble)
    quality = program.manifest.report["quality"]
    assert quality["quality_all"] > quality["best_single_expert"] + 0.2
    with load(ensemble) as session:
        out = session.run(digits.x_test)
    accuracy = float((out["probs"].argmax(-1) == digits.y_test).mean())
    singles = []
    for name in ("low", "high"):
        with load(ensemble) as session:
            session.select([name])
            singles.append(
                float((session.run(digits.x_test)["probs"].argmax(-1) == digits.y_test).mean())
            )
    assert accuracy > 0.9 and accuracy > max(singles) + 0.3
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, atol=1e-5)


def test_onnxruntime_matches_torch(ensemble: Path, digits: DigitsData) -> None:
    with load(ensemble) as a, load(ensemble, backend="onnxruntime") as b:
        x = digits.x_test[:64]
        np.testing.assert_allclose(a.run(x)["probs"], b.run(x)["probs"], atol=1e-4)


def test_selected_subset_runs_only_its_experts(ensemble: Path, digits: DigitsData) -> None:
    with load(ensemble) as session:
        session.select(["low"])
        out = session.run(digits.x_test[:8])
    np.testing.assert_array_equal(out["gate"][:, 1], 0.0)
    np.testing.assert_allclose(out["gate"][:, 0], 1.0)


def test_inspect_shows_members_and_placement(ensemble: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["inspect", str(ensemble), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "ensemble" and set(info["members"]) == {"low", "high"}
    assert info["experts"] == {"low": "-", "high": "loihi2"}
    assert info["members"]["high"]["kind"] == "spiking"


def test_tampered_member_is_refused(ensemble: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(ensemble, tmp_path / "copy")
    config = copy / "members" / "low" / "config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(BundleError, match="low"):
        load_bundle(copy)


def test_experts_must_agree_on_inputs(digits: DigitsData) -> None:
    a = _expert(digits, range(0, 5), False)
    b = convert_dense(torch.export.export(torch.nn.Linear(5, 10).eval(), (torch.zeros(2, 5),)))
    with pytest.raises(ConversionError, match="takes inputs"):
        convert_ensemble(
            {"a": a, "b": b}, {"x": digits.x_train}, digits.y_train, np.zeros((1, 2, 10))
        )


def _select(args: list[object], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["select", *map(str, args)])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_select_from_the_bundle_and_from_its_dumped_problem_agree(
    ensemble: Path, tmp_path, capsys
) -> None:
    dumped = tmp_path / "p.json"
    code, out, err = _select(
        [
            ensemble,
            "--energy-budget",
            10,
            "--latency-budget",
            1000,
            "--json",
            "--requester",
            "cpu",
            "--dump-problem",
            dumped,
        ],
        capsys,
    )
    assert code == 0, err
    chosen = json.loads(out)
    assert chosen["feasible"] and set(chosen["experts"]) == {"low", "high"}
    code, out, _ = _select(
        ["--problem", dumped, "--energy-budget", 10, "--latency-budget", 1000, "--json"], capsys
    )
    again = json.loads(out)
    assert code == 0 and again["experts"] == chosen["experts"]
    assert again["quality"] == pytest.approx(chosen["quality"])


def test_select_placement_of_an_unknown_expert_is_one_line(ensemble: Path, capsys) -> None:
    code, _, err = _select(
        [ensemble, "--energy-budget", 1, "--latency-budget", 100, "--placement", "nobody=cpu"],
        capsys,
    )
    assert code == 2 and "'nobody', not an expert" in err and err.count("\n") == 1
