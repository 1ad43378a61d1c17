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
from ganglion.models.errors import BundleError, ConversionError, ShapeError
from ganglion.models.recipes.digits import DigitsData, digits_mlp, load_digits, train_classifier
from ganglion.runtime import load
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import invoke, main
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
def member_bundles(digits: DigitsData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two experts saved as bundles: a dense one on classes 0-4, a spiking one on 5-9."""
    folder = tmp_path_factory.mktemp("members")
    return {
        "low": save_bundle(_expert(digits, range(0, 5), False), folder / "low"),
        "high": save_bundle(_expert(digits, range(5, 10), True), folder / "high"),
    }


@pytest.fixture(scope="module")
def ensemble(
    digits: DigitsData, member_bundles: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    members = {name: load_bundle(path) for name, path in member_bundles.items()}
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
    assert info["report"]["monotonicity"]["pairs"] == 2  # (low, +high) and (high, +low)
    with pytest.raises(SystemExit):
        main(["inspect", str(ensemble)])
    lowering = info["report"]["monotonicity"]["lowering"]
    assert f"lowers quality in {lowering} of 2 pairs" in capsys.readouterr().out


def test_report_says_how_far_the_gate_is_from_monotone(ensemble: Path) -> None:
    program = load_bundle(ensemble)
    report = program.manifest.report["monotonicity"]
    cache = program.module.calibration()
    gate, p_true = cache["gate"].double().numpy(), cache["p_true"].double().numpy()
    both = float(((gate * p_true).sum(1) / gate.sum(1)).mean())
    # the only pairs: adding the other expert to a single one, Q({e}) = mean p_true[:, e]
    drops = [float(p_true[:, e].mean()) - both for e in range(2)]
    assert report["exact"] is True and report["seed"] is None
    assert report["pairs"] == 2 and report["lowering"] == sum(d > 1e-6 for d in drops)
    assert report["fraction"] == report["lowering"] / 2
    assert report["largest_drop"] == pytest.approx(max(0.0, *drops), abs=1e-6)
    if report["worst"] is not None:
        assert report["worst"]["subset"][0] in ("low", "high")


def test_tampered_member_is_refused(ensemble: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(ensemble, tmp_path / "copy")
    config = copy / "members" / "low" / "config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(BundleError, match="low"):
        load_bundle(copy)


def test_experts_must_agree_on_inputs(digits: DigitsData, member_bundles: dict) -> None:
    a = load_bundle(member_bundles["low"])
    b = convert_dense(torch.export.export(torch.nn.Linear(5, 10).eval(), (torch.zeros(2, 5),)))
    with pytest.raises(ConversionError, match="takes inputs"):
        convert_ensemble(
            {"a": a, "b": b}, {"x": digits.x_train}, digits.y_train, np.zeros((1, 2, 10))
        )


def _ganglion(args: list[object], capsys) -> tuple[int, str, str]:
    """``ganglion ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main([*map(str, args)])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def _select(args: list[object], capsys) -> tuple[int, str, str]:
    return _ganglion(["select", *args], capsys)


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
    local = chosen["placement"]["experts"]["low"]  # not placed: runs where requests arrive
    assert local["device"] == "cpu" and local["transmission"] == "none (local)"
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


def test_select_json_names_each_experts_device_and_how_its_figures_were_got(
    ensemble: Path, capsys
) -> None:
    code, out, err = _select(
        [ensemble, "--energy-budget", 10, "--latency-budget", 1000, "--json"]
        + ["--requester", "cpu", "--placement", "low=rtx-4090"],
        capsys,
    )
    assert code == 0, err
    answer = json.loads(out)
    placement = answer["placement"]
    assert placement["requester"] == "cpu" and placement["gate"].startswith("simulated")
    experts = placement["experts"]
    assert {name: e["device"] for name, e in experts.items()} == {
        "low": "rtx-4090",  # --placement
        "high": "loihi2",  # the bundle's own placement
    }
    assert experts["high"]["kind"] == "spiking" and experts["low"]["kind"] == "dense"
    for expert in experts.values():
        assert expert["compute"] == "simulated (roofline)"
        assert expert["transmission"].startswith("simulated link")
    assert placement["quality"] == "measured on the calibration data"
    stored = load_bundle(ensemble).manifest.report["monotonicity"]
    assert answer["monotonicity"]["pairs"] == 2
    assert answer["monotonicity"]["lowering"] == stored["lowering"]


@pytest.fixture(scope="module")
def low_profile(member_bundles: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ganglion profile LOW --json`` measured here (batch 1), as the user writes it."""
    code, out, err = invoke("profile", str(member_bundles["low"]), "--runs", "5", "--json")
    assert code == 0, err
    path = tmp_path_factory.mktemp("profiles") / "low.json"
    path.write_text(out)
    return path


def test_select_takes_measured_costs_from_a_profile_of_the_member(
    ensemble: Path, low_profile: Path, tmp_path: Path, capsys
) -> None:
    measured = json.loads(low_profile.read_text())["results"][0]
    here = measured["device"]
    dumped = tmp_path / "p.json"
    code, out, err = _select(
        [ensemble, "--energy-budget", 10, "--latency-budget", 1000, "--json"]
        + ["--requester", here, "--profiled", f"low={low_profile}", "--dump-problem", dumped],
        capsys,
    )
    assert code == 0, err
    experts = json.loads(out)["placement"]["experts"]
    assert experts["low"]["compute"].startswith("measured latency (p50 of 5 runs, torch)")
    assert experts["high"]["compute"] == "simulated (roofline)"
    problem = {e["name"]: e for e in json.loads(dumped.read_text())["experts"]}
    assert problem["low"]["latency_ms"] == pytest.approx(measured["latency"]["p50"] * 1e3)
    assert problem["low"]["energy_j"] == pytest.approx(measured["energy_per_inference_j"])


def test_select_refuses_a_profile_of_another_bundle_or_device(
    ensemble: Path, low_profile: Path, capsys
) -> None:
    budgets = ["--energy-budget", 10, "--latency-budget", 1000, "--requester", "cpu"]
    code, _, err = _select([ensemble, *budgets, "--profiled", f"high={low_profile}"], capsys)
    assert code == 2 and "profiles another bundle" in err and err.count("\n") == 1
    placed = ["--placement", "low=rtx-4090", "--profiled", f"low={low_profile}"]
    code, _, err = _select([ensemble, *budgets, *placed], capsys)
    assert code == 2 and "no measured result for device 'rtx-4090'" in err
    assert str(low_profile) in err and err.count("\n") == 1


def test_select_refuses_a_hostile_profile_naming_the_field(
    ensemble: Path, low_profile: Path, tmp_path: Path, capsys
) -> None:
    data = json.loads(low_profile.read_text())
    data["results"][0]["latency"]["p50"] = -1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    requester = data["results"][0]["device"]
    args = [ensemble, "--energy-budget", 10, "--latency-budget", 1000, "--requester", requester]
    code, _, err = _select([*args, "--profiled", f"low={bad}"], capsys)
    assert code == 2 and "results[0].latency.p50 must be a finite number >= 0" in err
    bad.write_text(low_profile.read_text().replace('"p50": ', '"p50": NaN, "x": ', 1))
    code, _, err = _select([*args, "--profiled", f"low={bad}"], capsys)
    assert code == 2 and str(bad) in err and err.count("\n") == 1
    data = json.loads(low_profile.read_text())
    data["results"].append(dict(data["results"][0]))  # two results for one device: which?
    bad.write_text(json.dumps(data))
    code, _, err = _select([*args, "--profiled", f"low={bad}"], capsys)
    assert code == 2 and "results[0], results[1] all measure device" in err


@pytest.fixture
def calib_npz(digits: DigitsData, tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, x=digits.x_train[:300], y=digits.y_train[:300].astype(np.int64))
    return path


def test_convert_ensemble_cli_builds_a_top_k_placed_ensemble(
    member_bundles: dict, calib_npz: Path, digits: DigitsData, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "cli-moe"
    members = [f"{name}={path}" for name, path in member_bundles.items()]
    code, stdout, err = _ganglion(
        ["convert", "ensemble", *members, "--calib", calib_npz, "-o", out]
        + ["--top-k", 1, "--placement", "high=loihi2", "--epochs", 20],
        capsys,
    )
    assert code == 0, err
    assert "ensemble of 2 experts written to" in stdout
    program = load_bundle(out)
    assert program.manifest.kind == "ensemble" and set(program.members) == {"low", "high"}
    assert program.module.top_k == 1 and program.module.placement == {"high": "loihi2"}
    assert program.manifest.report["calibration_samples"] == 300
    assert program.manifest.report["monotonicity"]["pairs"] == 2
    with load(out) as session:
        gate = session.run(digits.x_test[:32])["gate"]
    assert ((gate > 0).sum(axis=1) == 1).all()  # top-1: one expert per input
    np.testing.assert_allclose(gate.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--placement", "nobody=loihi2"], "--placement names 'nobody': give EXPERT=DEVICE"),
        (["--placement", "high"], "--placement 'high': give EXPERT=DEVICE"),
        (["--top-k", 3], "--top-k must be in [1, 2], got 3"),
        (["--placement", "high=nodevice"], "unknown device 'nodevice'; known:"),
    ],
)
def test_convert_ensemble_cli_bad_option_is_one_line(
    member_bundles: dict, calib_npz: Path, tmp_path: Path, capsys, extra, message
) -> None:
    members = [f"{name}={path}" for name, path in member_bundles.items()]
    code, _, err = _ganglion(
        ["convert", "ensemble", *members, "--calib", calib_npz, "-o", tmp_path / "x", *extra],
        capsys,
    )
    assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_convert_ensemble_cli_member_without_a_name_is_one_line(
    member_bundles: dict, calib_npz: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = _ganglion(
        ["convert", "ensemble", f"={member_bundles['low']}", f"high={member_bundles['high']}"]
        + ["--calib", calib_npz, "-o", tmp_path / "x"],
        capsys,
    )
    assert code == 1 and err == "error: expert name '': use 1-128 letters, digits or _.:-\n"


@pytest.mark.parametrize("mbps", ["0", "1e-320", "0.0009"])
def test_select_refuses_a_link_too_slow_to_time(ensemble: Path, capsys, mbps: str) -> None:
    """Transfer times divide by the bandwidth: zero or a denormal used to fail inside."""
    args = [ensemble, "--energy-budget", 1, "--latency-budget", 100, "--link-mbps", mbps]
    code, _, err = _select(args, capsys)
    assert code == 2 and f"--link-mbps must be at least 0.001 (1 kb/s), got {float(mbps)}" in err
    assert err.count("\n") == 1


def test_a_batch_above_a_members_bound_is_refused_naming_it_before_any_member_runs(
    monkeypatch,
) -> None:
    """An expert exported with ``Dim("batch", max=4)`` takes at most 4 samples: the ensemble
    says so, naming it, and runs no member; the others' bound does not hold the choice back."""
    members = {}
    for seed, (name, bound) in enumerate((("wide", 64), ("narrow", 4))):
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
        if name == "narrow":  # its scores overflow on large inputs: 8 x 3e38 > float32's max
            torch.nn.init.ones_(mlp[0].weight)
        batch = torch.export.Dim("batch", min=1, max=bound)
        members[name] = convert_dense(
            torch.export.export(mlp, (torch.zeros(2, 8),), dynamic_shapes=({0: batch},))
        )
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 4, 32)
    probs = all_expert_probabilities(members, {"x": x})
    with load(convert_ensemble(members, {"x": x}, labels, probs, epochs=2)) as session:
        ran = []
        for member in session.members.values():
            real = member.run
            monkeypatch.setattr(member, "run", lambda *a, real=real: ran.append(1) or real(*a))
        assert session.run(x[:4])["probs"].shape == (4, 4) and ran
        ran.clear()
        with pytest.raises(ShapeError, match=r"^expert 'narrow': a batch of 5 is more than"):
            session.run(x[:5])
        assert not ran
        session.select(["wide"])
        assert session.run(x[:5])["probs"].shape == (5, 4)
        session.select(None)
        with pytest.raises(
            ShapeError, match=r"(gate's weights|'narrow' gives non-finite scores) for sample 1"
        ):
            session.run(np.stack([x[0], np.full(8, 3e38, np.float32)]))  # refused, not NaN out


@pytest.mark.parametrize(
    "extra", [["--epochs", "0"], ["--epochs", "-3"], ["--seed", "99999999999999999999999"]]
)
def test_convert_ensemble_cli_numbers_out_of_range_exit_2(
    member_bundles: dict, calib_npz: Path, tmp_path: Path, extra, one_line_error
) -> None:
    members = [f"{name}={path}" for name, path in member_bundles.items()]
    code, _, err = invoke(
        "convert", "ensemble", *members, "--calib", str(calib_npz), "-o", str(tmp_path / "x"),
        *extra,
    )  # fmt: skip
    one_line_error(code, err, extra[0])
    assert code == 2 and not (tmp_path / "x").exists()


def test_convert_ensemble_cli_prefers_the_inputs_own_name_to_x(
    member_bundles: dict, digits: DigitsData, tmp_path: Path
) -> None:
    """A calibration file holding the members' input by its name and an unrelated 'x': the
    named array is the input ('x' stands in only for a lone input with no array of its own).
    The same seed gives the same gate however many were trained before in the process."""
    name = load_bundle(member_bundles["low"]).manifest.inputs[0].name
    x, y = digits.x_train[:300], digits.y_train[:300].astype(np.int64)
    named, both = tmp_path / "named.npz", tmp_path / "both.npz"
    np.savez(named, **{name: x}, y=y)
    np.savez(both, **{name: x}, x=np.zeros_like(x), y=y)
    members = [f"{n}={p}" for n, p in member_bundles.items()]
    for calib, out in ((named, "a"), (named, "b"), (both, "c")):
        code, _, err = invoke(
            "convert", "ensemble", *members, "--calib", str(calib), "-o",
            str(tmp_path / out), "--epochs", "20",
        )  # fmt: skip
        assert code == 0, err
    reports = [load_bundle(tmp_path / s).manifest.report["quality"] for s in "abc"]
    assert reports[0] == reports[1] == reports[2]  # one seed, one gate (it was not so)


def test_convert_ensemble_cli_names_a_nan_in_the_calibration_inputs(
    member_bundles: dict, digits: DigitsData, tmp_path: Path, one_line_error
) -> None:
    x, y = digits.x_train[:50].copy(), digits.y_train[:50].astype(np.int64)
    x[3, 7] = np.nan
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x, y=y)
    members = [f"{n}={p}" for n, p in member_bundles.items()]
    code, _, err = invoke("convert", "ensemble", *members, "--calib", str(calib), "-o",
                          str(tmp_path / "x"))  # fmt: skip
    one_line_error(code, err, f"{calib}: array 'x' holds nan at index (3, 7)")
    assert "allow" not in err and not (tmp_path / "x").exists()


def test_a_dense_program_is_never_placed_on_a_neuromorphic_chip(
    ensemble: Path, member_bundles: dict, calib_npz: Path, tmp_path: Path, capsys, one_line_error
) -> None:
    """Loihi 2 runs spiking programs only: costs for a dense expert or the gate there would
    describe no real placement, so select, convert ensemble and profile refuse it by name."""
    words = "loihi2 is a neuromorphic chip and runs spiking programs only, not a 'dense' program"
    budgets = ["--energy-budget", 10, "--latency-budget", 1000]
    code, _, err = _select([ensemble, *budgets, "--placement", "low=loihi2"], capsys)
    one_line_error(code, err, "expert 'low' placed on loihi2", words)
    assert code == 2
    placed = ["--requester", "loihi2", "--placement", "low=cpu"]  # the experts placed well
    code, _, err = _select([ensemble, *budgets, *placed], capsys)
    one_line_error(code, err, "the gate (on the requester) placed on loihi2", words)
    members = [f"{name}={path}" for name, path in member_bundles.items()]
    code, _, err = _ganglion(
        ["convert", "ensemble", *members, "--calib", calib_npz, "-o", tmp_path / "m"]
        + ["--placement", "low=loihi2"],
        capsys,
    )
    one_line_error(code, err, "--placement low=loihi2", words)
    assert not (tmp_path / "m").exists()
    code, _, err = _ganglion(["profile", member_bundles["low"], "--device", "loihi2"], capsys)
    one_line_error(code, err, "--device loihi2", words)
    code, out, err = _ganglion(["profile", member_bundles["high"], "--device", "loihi2"], capsys)
    assert code == 0 and "loihi2" in out, err  # the spiking expert is placed there


def test_calibration_inputs_an_expert_does_not_take_name_the_file_and_the_expert(
    member_bundles: dict, tmp_path: Path, capsys, one_line_error
) -> None:
    np.savez(tmp_path / "narrow.npz", x=np.zeros((8, 32), np.float32), y=np.zeros(8, np.int64))
    members = [f"{name}={path}" for name, path in member_bundles.items()]
    code, _, err = _ganglion(
        ["convert", "ensemble", *members, "--calib", tmp_path / "narrow.npz", "-o", tmp_path / "m"],
        capsys,
    )
    one_line_error(code, err, "narrow.npz: expert 'low': input ")
    assert not (tmp_path / "m").exists()


def test_language_models_and_classifiers_do_not_mix(
    member_bundles: dict, tmp_path: Path, capsys, one_line_error
) -> None:
    flags = ["--arch", "gla", "--steps", "1", "--d-model", "16", "--layers", "1"]
    flags += ["--batch", "2", "--length", "16", "--eval-chars", "0"]
    code, _, err = _ganglion(["train", "lm", *flags, "-o", tmp_path / "lm"], capsys)
    assert code == 0, err
    code, _, err = _ganglion(
        ["convert", "ensemble", f"prose={tmp_path / 'lm'}", f"low={member_bundles['low']}"]
        + ["-o", tmp_path / "m"],
        capsys,
    )
    one_line_error(code, err, "'prose' is a language model, 'low' a dense program")
    assert not (tmp_path / "m").exists()
