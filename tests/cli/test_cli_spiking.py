"""The command line end to end: convert, inspect, run, export, import-nir; one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import typer

from ganglion.runtime.cli import invoke as ganglion
from ganglion.runtime.cli.app import _REGISTERED, _register, app


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, digits_mlp) -> Path:
    model, data = digits_mlp
    root = tmp_path_factory.mktemp("cli")
    torch.export.save(
        torch.export.export(model, (torch.from_numpy(data.x_train[:2]),)), str(root / "mlp.pt2")
    )
    np.savez(root / "calib.npz", x=data.x_train[:400], y=data.y_train[:400])
    np.save(root / "x.npy", data.x_test[:30])
    np.save(root / "y.npy", data.y_test[:30])
    return root


def convert_mlp(workspace: Path, out: str, *flags: str) -> tuple[int, str, str]:
    """``ganglion convert spiking`` on the workspace's MLP into ``workspace/out``."""
    model, calib = str(workspace / "mlp.pt2"), str(workspace / "calib.npz")
    return ganglion(
        "convert", "spiking", model, "--calib", calib, "-o", str(workspace / out), *flags
    )


def test_convert_inspect_run(workspace: Path) -> None:
    flags = ("--timesteps", "24", "--neuron", "lif", "--decoding", "count")
    code, out, _ = convert_mlp(workspace, "b", *flags)
    assert code == 0 and "bundle written" in out and "firing rate" in out
    code, out, _ = ganglion("inspect", str(workspace / "b"), "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "spiking" and info["time"]["timesteps"] == 24
    assert info["time"]["decoding"] == "count" and "raw features" in info["shapes"]["input"]
    assert {"config.json", "weights.safetensors", "graph.nir"} <= set(info["checksums"])
    code, _, _ = ganglion(
        "run",
        str(workspace / "b"),
        "--input",
        str(workspace / "x.npy"),
        "--output",
        str(workspace / "out.npy"),
    )
    out_arr = np.load(workspace / "out.npy")
    assert code == 0 and out_arr.shape == (30, 10)
    assert (out_arr.argmax(-1) == np.load(workspace / "y.npy")).mean() > 0.85


def test_onnx_graphs_run_in_plain_onnxruntime_as_inspect_says(workspace: Path) -> None:
    """A peer feeds the bundle's graphs from what ``inspect`` prints, with onnxruntime and
    safetensors only, and gets ``ganglion run``'s answer."""
    import onnxruntime as ort
    from safetensors.numpy import load_file

    code, _, _ = convert_mlp(workspace, "peer", "--timesteps", "8")
    folder = workspace / "peer"
    code, text, _ = ganglion("inspect", str(folder))
    assert code == 0 and "state_in.<state>" in text and "time-major [time, batch, ...]" in text
    x = np.load(workspace / "x.npy")[:5].astype(np.float32)
    code, _, _ = ganglion(
        "run",
        str(folder),
        "--input",
        str(workspace / "x.npy"),
        "--output",
        str(workspace / "peer.npy"),
    )
    want = np.load(workspace / "peer.npy")[:5]
    info = json.loads(ganglion("inspect", str(folder), "--json")[1])
    fresh = load_file(folder / "initial_state.safetensors")
    state = {
        s["name"]: np.repeat(fresh[s["name"]][None], 5, 0)
        if s["shape"][0] == -1
        else fresh[s["name"]]
        for s in info["state"]
    }
    step = ort.InferenceSession(str(folder / "model.onnx"))
    for _ in range(8):
        feeds = {"input": x, **{f"state_in.{k}": v for k, v in state.items()}}
        names = [o.name for o in step.get_outputs()]
        values = dict(zip(names, step.run(names, feeds), strict=True))
        state = {k: values[f"state_out.{k}"] for k in state}
    np.testing.assert_allclose(values["output"], want, atol=1e-4)
    whole = ort.InferenceSession(str(folder / "model.sequence.onnx"))
    (got,) = whole.run(
        ["output"], {"input": np.ascontiguousarray(np.broadcast_to(x, (8, *x.shape)))}
    )
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_fixed_point_program_is_not_exported_as_nir(workspace: Path, one_line_error) -> None:
    """Loihi 2 integer weights and thresholds written as NIR read back as another network: the
    quantized bundle holds no graph.nir and ``export --nir`` refuses it, writing nothing."""
    convert_mlp(workspace, "float")
    quantized, out = workspace / "fixed", workspace / "fixed.nir"
    code, _, err = ganglion("quantize", str(workspace / "float"), "-o", str(quantized),
                            "--calib", str(workspace / "calib.npz"))  # fmt: skip
    assert code == 0, err
    assert not (quantized / "graph.nir").exists()
    code, _, err = ganglion("export", str(quantized), "--nir", str(out))
    one_line_error(code, err, "no NIR export for 'loihi2-fixed' numerics")
    assert not out.exists()
    code, _, err = ganglion("run", str(quantized), "--input", str(workspace / "x.npy"),
                            "--output", str(workspace / "fixed-out.npy"))  # fmt: skip
    assert code == 0, err


def test_quantize_names_calibration_data_of_the_wrong_shape(workspace: Path, one_line_error):
    convert_mlp(workspace, "to-quantize")
    np.savez(workspace / "narrow.npz", x=np.zeros((8, 5), np.float32))
    target, narrow = str(workspace / "q-narrow"), str(workspace / "narrow.npz")
    code, _, err = ganglion(
        "quantize", str(workspace / "to-quantize"), "-o", target, "--calib", narrow
    )
    one_line_error(code, err, "narrow.npz: ")
    assert not (workspace / "q-narrow").exists()


def test_operators_of_a_spiking_program_say_why_none_are_listed(workspace: Path) -> None:
    convert_mlp(workspace, "ops")
    code, out, err = ganglion("inspect", str(workspace / "ops"), "--operators")
    assert code == 0, err
    assert "operators: none listed" in out and "this is a spiking program" in out


def test_export_then_import_nir_runs_as_the_original(workspace: Path) -> None:
    convert_mlp(workspace, "c")
    assert ganglion("export", str(workspace / "c"), "--nir", str(workspace / "c.nir"))[0] == 0
    code, _, _ = ganglion(
        "import-nir", str(workspace / "c.nir"), "-o", str(workspace / "i"), "--dt", "1e-3"
    )
    assert code == 0
    info = json.loads(ganglion("inspect", str(workspace / "i"), "--json")[1])
    original = json.loads(ganglion("inspect", str(workspace / "c"), "--json")[1])
    for key in ("timesteps", "encoding", "decoding", "seed", "delay"):  # from ganglion_time
        assert info["time"][key] == original["time"][key], key
    assert info["time"]["dt"] == 1e-3  # --dt still wins
    # the conventions shown are those that run: our export's metadata gives subtract reset
    # and v_init = θ/2, not the nir preset's zero reset and zero start
    semantics = info["time"]["semantics"]
    assert semantics["like"] == "nir" and semantics["reset"] == "subtract"
    assert "v_init" not in semantics
    np.save(workspace / "x.npy", np.random.default_rng(0).random((3, 64), dtype=np.float32))
    for bundle in ("c", "i"):
        args = ["--input", str(workspace / "x.npy"), "--output", str(workspace / f"{bundle}.npy")]
        assert ganglion("run", str(workspace / bundle), *args)[0] == 0
    np.testing.assert_array_equal(np.load(workspace / "i.npy"), np.load(workspace / "c.npy"))


@pytest.mark.parametrize(
    "args,reason",
    [
        (
            ["convert", "spiking", "{ws}/calib.npz", "--calib", "{ws}/calib.npz", "-o", "{ws}/z"],
            "not a torch.export archive",
        ),
        (
            ["convert", "spiking", "{ws}/mlp.pt2", "--calib", "{ws}/x.npy", "-o", "{ws}/z"],
            "not a readable .npz",
        ),
        (
            ["run", "{ws}/absent", "--input", "{ws}/x.npy", "--output", "{ws}/o.npy"],
            "no such bundle",
        ),
        (["import-nir", "{ws}/x.npy", "-o", "{ws}/z"], "not a readable NIR (HDF5) file"),
        (["export", "{ws}/absent", "--nir", "{ws}/o.nir"], "no such bundle"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(workspace: Path, args, reason) -> None:
    code, _, err = ganglion(*[a.format(ws=workspace) for a in args])
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and reason in err


def test_wrong_input_shape_from_the_command_line(workspace: Path) -> None:
    convert_mlp(workspace, "d")
    np.save(workspace / "bad.npy", np.zeros((3, 8, 8), np.float32))
    code, _, err = ganglion(
        "run",
        str(workspace / "d"),
        "--input",
        str(workspace / "bad.npy"),
        "--output",
        str(workspace / "o.npy"),
    )
    assert (
        code != 0
        and "must be [batch, 64], got [3, 8, 8]" in err
        and not (workspace / "o.npy").exists()
    )


def test_traceback_only_with_debug(workspace: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ganglion.runtime.cli",
        "import-nir",
        str(workspace / "x.npy"),
        "-o",
        str(workspace / "z"),
    ]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    debug = subprocess.run(
        cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``command``, as the words that name it."""
    paths = [path]
    if isinstance(command, typer.core.TyperGroup):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, (*path, name))
    return paths


def _listed_commands(help_text: str) -> list[str]:
    """The names in the Commands section of a group's ``--help``, in the order shown."""
    section = help_text.split("Commands:\n", 1)[1]
    rows = (re.match(r"  (\S+)", line) for line in section.splitlines())
    return [row.group(1) for row in rows if row]


def test_every_command_has_help() -> None:
    _register()
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) > 20 and ("convert", "ensemble") in paths and ("eval",) in paths
    for path in paths:
        code, out, _ = ganglion(*path, "--help")
        assert code == 0 and "Usage" in out, path
        for python_type in ("{", "<path>", "<list"):  # Typer's own rendering of arguments
            assert python_type not in out, (path, python_type)
    _, top, _ = ganglion("--help")
    listed = _listed_commands(top)
    assert listed == _REGISTERED  # as registered, groups among the commands
    assert listed[:2] == ["train", "convert"] and listed.index("cluster") < listed.index("demo")
