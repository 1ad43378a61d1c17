"""`ganglion demo --quick`, the README's main command, end to end in its own process: every
section reports, the bundles it names exist, and its figures are plausible, not constants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_demo_runs_every_section_and_leaves_the_bundles_it_names(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganglion.runtime.cli",
            "demo",
            "--quick",
            "--json",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    sections = {row["section"] for row in rows}
    assert sections == {
        "spiking", "tour", "kinds", "selection", "language", "events", "methods", "cluster"
    }  # fmt: skip
    small, large = (r for r in rows if r["section"] == "selection")
    assert (small["experts"], large["experts"]) == (16, 64) and small["exact"]
    assert small["gap"] == 0.0 and small["time_limit_s"] is None
    assert large["time_limit_s"] == 1.0 and large["gap"] >= 0.0 and 0.0 < large["quality"] < 1.0
    assert large["exact"] or large["solve_ms"] > 900.0  # stopped only at its limit
    methods = {r["method"]: r for r in rows if r["section"] == "methods"}
    assert set(methods) == {"percentile", "mse", "calibrated", "burst"}
    assert all(r["timesteps"] == 4 and 0.8 < r["snn_accuracy"] <= 1.0 for r in methods.values())
    free, budget, failover = (r for r in rows if r["section"] == "cluster")
    assert free["experts"].count(",") == 1
    assert set(free["nodes"].split(", ")) <= {"orin-agx", "orin-nano"}
    assert "," not in budget["experts"] and budget["energy_mj"] < free["energy_mj"]
    # the replica answers; whether the coordinator's call met the dead node (a retry) or a
    # health probe had already taken it out depends on when the probe ran
    assert failover["nodes"] == "orin-agx"
    assert failover["accuracy"] == free["accuracy"]  # the same experts, on the replica
    spiking = [r for r in rows if r["section"] == "spiking"]
    assert all(0.8 < r["snn_accuracy"] <= 1.0 for r in spiking)
    events = [r for r in rows if r["section"] == "events"]
    assert all(0.3 < r["snn_accuracy"] <= 1.0 for r in events)  # chance is 0.1
    for name in ("digits-moe", "lm-moe", "events-snn"):
        assert (out / name / "manifest.json").is_file(), name
    assert (out / "event-stream.npy").is_file()
    assert "ganglion run" in done.stdout and "-> class" in done.stdout
