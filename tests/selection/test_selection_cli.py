"""``ganglion select`` as a user runs it (a subprocess): JSON answers, exit codes, the table."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ganglion.runtime.cli.app import _register, app
from ganglion.runtime.selection import brute_force, read_problem, write_problem
from ganglion.runtime.selection.synthetic import synthetic_problem


def strict_json(text: str):
    """Parse like a strict JSON parser: NaN and Infinity are errors."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def ganglion_select(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ganglion.runtime.cli", "select", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory):
    problem = synthetic_problem(np.random.default_rng(4), 10, 40, "random", duplicates=2)
    return write_problem(problem, tmp_path_factory.mktemp("select") / "P.json")


def test_json_answer_is_the_brute_force_optimum(problem_file):
    problem = read_problem(problem_file)
    energy = float(problem.cost_j.sum() * 0.3)
    latency = float(np.quantile(problem.delay_ms, 0.8) + 3.0)
    done = ganglion_select(
        "--problem", str(problem_file), "--energy-budget", repr(energy),
        "--latency-budget", repr(latency), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = strict_json(done.stdout)
    reference = brute_force(problem, energy, latency)
    assert answer["feasible"] is True
    assert answer["experts"] == [problem.experts[e].name for e in reference.experts]
    assert answer["quality"] == pytest.approx(reference.quality, abs=1e-12)
    assert answer["energy_j"] == pytest.approx(reference.energy_j, abs=0)
    assert answer["latency_ms"] == pytest.approx(reference.latency_ms, abs=0)
    assert answer["energy_j"] <= energy and answer["latency_ms"] <= latency
    assert answer["solve_ms"] >= 0
    baselines = answer["baselines"]
    assert set(baselines) == {"single", "all", "greedy_per_joule", "random"}
    for base in baselines.values():
        if base["feasible"]:
            assert base["quality"] <= answer["quality"] + 1e-12


def test_infeasible_exits_1_with_the_cheapest_subsets(problem_file):
    problem = read_problem(problem_file)
    energy = float(problem.cost_j.min()) / 2
    done = ganglion_select(
        "--problem", str(problem_file), "--energy-budget", repr(energy),
        "--latency-budget", "1e6", "--json",
    )  # fmt: skip
    assert done.returncode == 1
    answer = strict_json(done.stdout)
    assert answer["feasible"] is False and "energy budget" in answer["reason"]
    frugal = int(np.argmin(problem.cost_j))
    assert answer["least_energy"]["experts"] == [problem.experts[frugal].name]
    assert answer["least_energy"]["energy_j"] == problem.energy((frugal,))
    fastest = int(np.argmin(problem.delay_ms))
    assert answer["least_latency"]["latency_ms"] == problem.latency((fastest,))
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: no expert subset")


def test_malformed_problem_exits_2_without_traceback(tmp_path):
    path = tmp_path / "P.json"
    path.write_text('{"experts": [], "aggregation": {}, "gate": [], "p_true": []}')
    done = ganglion_select("--problem", str(path), "--energy-budget", "1", "--latency-budget", "9")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {path}: experts must be a non-empty list of expert objects\n"


def test_table_names_the_choice_and_every_baseline(problem_file):
    _register()  # in this process: a subprocess per case costs seconds of imports
    args = ["select", "--problem", str(problem_file), "--energy-budget", "6"]
    result = CliRunner().invoke(app, [*args, "--latency-budget", "60"])
    assert result.exit_code == 0, result.stderr
    chosen = brute_force(read_problem(problem_file), 6.0, 60.0)
    names = ", ".join(read_problem(problem_file).experts[e].name for e in chosen.experts)
    assert f"chosen: {names};" in result.stdout
    for word in ("exact optimum", "single", "all", "greedy_per_joule", "random"):
        assert word in result.stdout
