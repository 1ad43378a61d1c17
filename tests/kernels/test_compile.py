"""Every Triton kernel compiles to machine code for Jetson Orin (sm_87) and Hopper (sm_90)
through Triton's real compiler, with no GPU here (``kernels/aot_check.py``)."""

import json
import os
import subprocess
import sys

import pytest

from ganglion.kernels.aot_check import KERNELS

pytest.importorskip("triton.backends.nvidia")


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_every_kernel_compiles_to_cubin(arch):
    # The other kernel tests run under the interpreter; compiling needs it off, so a subprocess.
    env = os.environ | {"TRITON_INTERPRET": "0"}
    run = subprocess.run(
        [sys.executable, "-m", "ganglion.kernels.aot_check", arch],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert {r["kernel"] for r in rows} == set(KERNELS), run.stderr[-2000:]
    failed = {r["kernel"]: r["error"] for r in rows if not r["ok"]}
    assert not failed, failed
    assert run.returncode == 0
