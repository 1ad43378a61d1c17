"""The coordinator and the cluster commands stay importable on Python 3.10 (JetPack 6's), like
the node: ``vermin`` finds nothing newer in any module they import, the selection problem's
builder included (the coordinator imports it at start)."""

from __future__ import annotations

import json
import subprocess
import sys

COORDINATOR_MODULES = (
    "ganglion.runtime.serving.coordinator",
    "ganglion.runtime.serving.cluster",
    "ganglion.runtime.cli.cluster",
    "ganglion.runtime.selection.from_ensemble",
    "ganglion.runtime.kinds.dense",
    "ganglion.runtime.kinds.spiking",
)
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(
    m.__file__ for n, m in list(sys.modules.items())
    if n.startswith("ganglion.") and (getattr(m, "__file__", None) or "").endswith(".py")
)))
"""


def test_coordinator_code_needs_nothing_newer_than_python_310() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *COORDINATOR_MODULES],
        capture_output=True,
        text=True,
        check=True,
    )
    files = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(f.endswith("runtime/serving/coordinator.py") for f in files)
    assert any(f.endswith("runtime/selection/solver.py") for f in files)
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    checked = subprocess.run(
        [*vermin, "-t=3.10-", "--violations", "--no-tips", "--eval-annotations", *files],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
