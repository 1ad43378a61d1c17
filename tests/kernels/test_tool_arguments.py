"""Bad arguments to the kernel tools get a one-line error and exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from ganglion.kernels.aot_check import main as aot_main
from ganglion.kernels.launch import Launch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.parametrize("arch", ["87", "sm_", "sm_9x", "compute_90"])
def test_aot_check_rejects_a_malformed_architecture(arch, capsys):
    assert aot_main([arch]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "expected a CUDA architecture like sm_87" in err and repr(arch) in err


def test_aot_check_refuses_to_run_under_the_interpreter(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert aot_main(["sm_87"]) == 2
    assert "set TRITON_INTERPRET=0" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["kernels.py", "kernel_tuning.py"])
@pytest.mark.parametrize("ops", ["lif,bogus", ","])
def test_kernel_benchmarks_reject_unknown_ops(script, ops):
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--ops", ops],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert "expected ops from lif, lif_fixed, wkv" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("field", ["block", "depth", "num_warps"])
@pytest.mark.parametrize("value", [0, 3, 48])
def test_launch_shape_must_be_powers_of_two(field, value):
    shape = {"block": 64, "depth": 4, "num_warps": 1} | {field: value}
    with pytest.raises(ValueError, match=f"expected {field} a power of two >= 1, got {value}"):
        Launch(**shape)
