"""What a node needs (serving, the onnxruntime backend, the kinds, device/) stays importable
on Python 3.10, JetPack 6's Python: ``vermin`` finds nothing newer in those modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ganglion.runtime.serving as serving

ROOT = Path(serving.__file__).resolve().parents[2]
NODE_MODULES = (
    "ganglion.runtime.serving.node",
    "ganglion.runtime.serving.client",
    "ganglion.runtime.serving.upload",
    "ganglion.runtime.serving.signing",
    "ganglion.runtime.backends.onnxruntime_backend",
    "ganglion.runtime.kinds.spiking",
    "ganglion.runtime.kinds.sequence",
    "ganglion.runtime.kinds.dense",
    "ganglion.runtime.kinds.ensemble",
    "ganglion.device",
    "ganglion.runtime.cli.serve",
    "ganglion.runtime.cli.deploy",
)
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
files = sorted(
    m.__file__ for n, m in list(sys.modules.items())
    if n.startswith("ganglion.") and (getattr(m, "__file__", None) or "").endswith(".py")
)
print(json.dumps({"files": files, "torch": "torch" in sys.modules}))
"""


def _node_imports() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *NODE_MODULES], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_node_code_needs_nothing_newer_than_python_310() -> None:
    imports = _node_imports()
    files = set(imports["files"])
    files |= {
        str(p) for folder in ("runtime/serving", "device") for p in (ROOT / folder).rglob("*.py")
    }
    assert str(ROOT / "runtime" / "session.py") in files  # the closure reached the contract
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    command = [*vermin, "-t=3.10-", "--violations", "--no-tips"]
    done = subprocess.run(
        [*command, "--eval-annotations", *sorted(files)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_node_serving_onnx_needs_no_torch() -> None:
    assert not _node_imports()["torch"]
