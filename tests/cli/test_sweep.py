"""``ganglion sweep``: a small grid on a tiny MLP, its JSON, the plot, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.runtime.cli import invoke as ganglion

SIMULATED = "loihi2"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A random 12-32-4 ReLU MLP (.pt2), calibration data, and test data labelled with the
    MLP's own predictions (so the ANN scores 1.0 and agreement equals accuracy)."""
    root = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (160, 12)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(-1).numpy()
    torch.export.save(torch.export.export(model, (torch.from_numpy(x[:2]),)), str(root / "m.pt2"))
    np.savez(root / "calib.npz", x=x[:96])
    np.savez(root / "test.npz", x=x[96:], y=labels[96:])
    return root


def _sweep(files: Path, *flags: str) -> tuple[int, str, str]:
    return ganglion(
        "sweep", str(files / "m.pt2"), "--calib", str(files / "calib.npz"),
        "--data", str(files / "test.npz"), "--runs", "3", "--warmup", "1", *flags,
    )  # fmt: skip


@pytest.fixture(scope="module")
def swept(files: Path) -> dict:
    """The JSON of a T=4,8 sweep measured here and simulated on Loihi 2, with a plot."""
    code, out, err = _sweep(
        files, "--timesteps", "8,4", "--device", "auto", "--device", SIMULATED,
        "--plot", str(files / "sweep.png"), "--json",
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_json_has_one_row_per_timestep_and_one_point_per_device(swept: dict) -> None:
    assert [row["timesteps"] for row in swept["grid"]] == [4, 8]
    assert swept["ann_accuracy"] == 1.0 and swept["samples"] == 64 and swept["batch"] == 1
    for row in swept["grid"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["spikes_per_sample"] > 0
        assert row["agreement"] == pytest.approx(row["accuracy"])
        assert row["gap_points"] == pytest.approx(100 * (1.0 - row["accuracy"]))
    assert len(swept["points"]) == 4
    assert {p["timesteps"] for p in swept["points"] if p["device"] == SIMULATED} == {4, 8}
    assert all(p["latency_s"] > 0 and p["energy_j"] > 0 for p in swept["points"])


def test_this_machine_is_measured_and_other_devices_simulated(swept: dict) -> None:
    here = [p for p in swept["points"] if p["device"] != SIMULATED]
    there = [p for p in swept["points"] if p["device"] == SIMULATED]
    assert len(here) == 2 and len(there) == 2
    for p in here:
        assert p["latency_kind"] == "measured" and p["latency_figure"].startswith("p50 of 3")
        assert p["energy_kind"] == "measured" or "power limit" in p["energy_source"]
    for p in there:
        assert p["latency_kind"] == p["energy_kind"] == "simulated"
        assert p["latency_figure"] == "roofline model"


@pytest.mark.parametrize("cost", ["latency", "energy"])
def test_pareto_flags_mark_exactly_the_undominated_points(swept: dict, cost: str) -> None:
    points = [(p[f"{cost}_s" if cost == "latency" else "energy_j"], p["accuracy"]) for p in
              swept["points"]]  # fmt: skip
    flags = [p[f"pareto_{cost}"] for p in swept["points"]]

    def dominated(c: float, a: float) -> bool:
        return any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)

    assert any(flags)
    for (c, a), flag in zip(points, flags, strict=True):
        assert flag == (not dominated(c, a)), (c, a, flag)


def test_plot_is_a_png_written_whole(swept: dict, files: Path) -> None:
    assert swept["plot"] == str(files / "sweep.png")
    assert (files / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(files.glob(".sweep.png.*")), "the temporary file must be gone"


def test_table_labels_measured_and_simulated_figures(files: Path) -> None:
    code, out, _ = _sweep(files, "--timesteps", "4", "--device", "auto", "--device", SIMULATED)
    assert code == 0
    lines = out.splitlines()
    assert any(" measured " in line and SIMULATED not in line for line in lines)
    assert any(SIMULATED in line and "simulated" in line for line in lines)
    assert "roofline model" in out and "p50 of 3 timed calls" in out


def test_existing_plot_is_refused_without_force(swept: dict, files: Path) -> None:
    before = (files / "sweep.png").read_bytes()
    code, _, err = _sweep(files, "--timesteps", "4", "--plot", str(files / "sweep.png"))
    assert code != 0 and err.count("\n") == 1 and "--force" in err
    assert (files / "sweep.png").read_bytes() == before


def test_a_plot_whose_suffix_is_no_image_format_is_refused(files: Path) -> None:
    code, _, err = _sweep(files, "--timesteps", "4", "--plot", str(files / "sweep.txt"))
    assert code != 0 and err.count("\n") == 1 and "must end in .png, .svg, .pdf" in err
    assert not (files / "sweep.txt").exists()


@pytest.mark.parametrize("grid", ["0", "a", "4,x", "100000", "", "4,-8", "²", "4,٣"])
def test_bad_timesteps_are_refused_in_one_line(files: Path, grid: str) -> None:
    code, out, err = _sweep(files, "--timesteps", grid)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: --timesteps takes integers in 1..")


def test_bad_method_is_refused_in_one_line(files: Path) -> None:
    code, _, err = _sweep(files, "--timesteps", "4", "--method", "fast")
    assert code != 0 and err.count("\n") == 1 and "--method must be one of" in err


def test_unknown_device_is_refused_in_one_line(files: Path) -> None:
    code, _, err = _sweep(files, "--timesteps", "4", "--device", "abacus")
    assert code != 0 and err.count("\n") == 1 and "unknown device 'abacus'" in err


@pytest.mark.parametrize(
    ("calib", "test", "named", "words"),
    [
        ({"x": np.zeros((8, 5), np.float32)}, None, "calib", "calibration x has features (5,)"),
        ({"x": np.array([["a"] * 12] * 8)}, None, "calib", "calibration x must be numeric"),
        (None, {"x": np.zeros((4, 12), np.float32), "y": np.full(4, 99)}, "test", "labels"),
    ],
    ids=["features", "strings", "labels"],
)
def test_data_the_model_cannot_take_names_its_file(
    files: Path, tmp_path: Path, calib, test, named, words, one_line_error
) -> None:
    paths = {"calib": files / "calib.npz", "test": files / "test.npz"}
    for key, arrays in (("calib", calib), ("test", test)):
        if arrays is not None:
            paths[key] = tmp_path / f"bad-{key}.npz"
            np.savez(paths[key], **arrays)
    code, _, err = ganglion(
        "sweep", str(files / "m.pt2"), "--calib", str(paths["calib"]), "--data",
        str(paths["test"]), "--timesteps", "4", "--runs", "1", "--warmup", "0",
    )  # fmt: skip
    one_line_error(code, err, f"{paths[named]}: ", words)
