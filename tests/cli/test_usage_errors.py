"""A bad flag, value or command is one line naming it and the ``--help`` that explains it,
exit status 2 (Click's own form is four lines); help and typer.Exit codes are unchanged."""

from __future__ import annotations

import pytest

from ganglion.runtime.cli import invoke


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["profile", "b", "--runs", "0"], ["'--runs'", "ganglion profile --help"]),
        (["select", "--bogus"], ["No such option: --bogus", "ganglion select --help"]),
        (["nosuch"], ["No such command 'nosuch'", "'ganglion --help'"]),
        (["profile"], ["Missing argument 'BUNDLE'", "ganglion profile --help"]),
        (["profile", "b", "--batch", "x"], ["'--batch'", "valid integer"]),
    ],
)
def test_a_usage_error_is_one_line_with_status_2(args, words, one_line_error) -> None:
    code, out, err = invoke(*args)
    assert code == 2 and not out
    one_line_error(code, err, *words)


def test_demo_refuses_a_bad_bundle_timesteps_before_writing_anything(
    tmp_path, one_line_error
) -> None:
    out = tmp_path / "demo"
    code, _, err = invoke("demo", "--quick", "--bundle-timesteps", "0", "--out", str(out))
    one_line_error(code, err, "'--bundle-timesteps'", "ganglion demo --help")
    assert code == 2 and not out.exists()


def test_help_and_a_bare_command_still_print_the_help() -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and out.startswith("Usage: ganglion")
    code, out, _ = invoke()
    assert code == 2 and "Usage: ganglion" in out and "profile" in out


@pytest.mark.parametrize(
    "flag",
    [
        ["spikegpt", "m", "-o", "x", "--calib-windows", "100000"],  # used to take 18 GB
        ["spikegpt", "m", "-o", "x", "--seed", "-3"],
        ["linear", "m", "-o", "x", "--distill-steps", "10000001"],
        ["linear", "m", "-o", "x", "--finetune-steps", "-1"],
    ],
)
def test_convert_flags_are_bounded_before_any_work(flag, one_line_error) -> None:
    code, _, err = invoke("convert", *flag)
    one_line_error(code, err, f"'{flag[-2]}'", f"ganglion convert {flag[0]} --help")
    assert code == 2


@pytest.mark.parametrize(
    ("device", "words"),
    [
        ("cudax", "unknown device 'cudax' (use cpu, cuda or cuda:N)"),
        ("cuda:99", "'cuda:99'"),
        ("cuda:²", "unknown device 'cuda:²'"),
    ],
)
def test_a_torch_device_is_read_exactly(device, words, tmp_path, one_line_error) -> None:
    """'cuda:99' was reported as 'cuda', and anything starting with 'cuda' passed the check."""
    import numpy as np
    import torch

    from ganglion.converters.spiking import convert_spiking
    from ganglion.runtime.bundle import save_bundle

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    bundle = save_bundle(convert_spiking(model.eval(), calib), tmp_path / "b")
    np.save(tmp_path / "x.npy", calib[:2])
    args = [
        "run",
        str(bundle),
        "--input",
        str(tmp_path / "x.npy"),
        "--output",
        str(tmp_path / "o.npy"),
    ]
    code, _, err = invoke(*args, "--device", device)
    one_line_error(code, err, "torch backend", words)
    assert code == (1 if device == "cuda:99" else 2)  # a malformed name; no GPU here


def test_a_flag_for_another_backend_or_a_missing_bundle_is_named(tmp_path, one_line_error) -> None:
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    given = ["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]
    code, _, err = invoke("run", str(tmp_path / "absent"), *given, "--lava-precision", "fixed_pt")
    one_line_error(code, err, "--lava-precision applies to --backend lava, not torch")
    code, _, err = invoke("deploy", str(tmp_path / "absent"), "--to", "127.0.0.1:9")
    one_line_error(code, err, "absent: no such bundle")
