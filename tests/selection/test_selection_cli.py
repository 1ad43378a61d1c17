"""``ganglion select`` as a user runs it (a subprocess): JSON answers, exit codes, the table."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ganglion.runtime.cli import invoke
from ganglion.runtime.cli.app import _register, app
from ganglion.runtime.selection import (
    Expert,
    SelectionProblem,
    brute_force,
    read_problem,
    solve,
    write_problem,
)
from ganglion.runtime.selection.problem import EXPERT_FIELDS
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
    assert "gate monotonicity on the calibration data: adding an expert lowers" in result.stdout


def select_json(path, energy: str, latency: str) -> tuple[int, dict]:
    """``ganglion select --problem path --json`` in this process: (exit code, the JSON)."""
    _register()
    args = ["select", "--problem", str(path), "--energy-budget", energy]
    result = CliRunner().invoke(app, [*args, "--latency-budget", latency, "--json"])
    return result.exit_code, strict_json(result.stdout)


def test_json_reports_a_weak_expert_that_lowers_quality(tmp_path):
    # x1 is always wrong and the gate trusts it 9:1: adding it to {x0} takes Q from 0.9 to 0.09,
    # adding x0 to {x1} raises Q from 0 to 0.09
    experts = tuple(Expert(f"x{j}", 1.0, 10.0, 0.0, 0.0) for j in range(2))
    problem = SelectionProblem(
        experts, 0.0, 0.0, np.array([[0.1, 0.9]] * 4), np.array([[0.9, 0.0]] * 4)
    )
    code, answer = select_json(write_problem(problem, tmp_path / "P.json"), "10", "100")
    assert code == 0 and answer["experts"] == ["x0"]
    report = answer["monotonicity"]
    assert report["exact"] is True and (report["pairs"], report["lowering"]) == (2, 1)
    assert report["fraction"] == 0.5 and report["largest_drop"] == pytest.approx(0.81)
    assert report["worst"] == {"subset": ["x0"], "added": "x1"}
    assert "placement" not in answer  # a raw problem has no devices


def test_json_monotonicity_counts_every_lowering_pair(tmp_path):
    problem = synthetic_problem(np.random.default_rng(9), 6, 30, "adversarial")
    drops = {}  # (S, e) -> Q(S) - Q(S + e), every non-empty S and e outside it
    for size in range(1, 6):
        for subset in itertools.combinations(range(6), size):
            for e in set(range(6)) - set(subset):
                joined = tuple(sorted((*subset, e)))
                drops[subset, e] = problem.quality(subset) - problem.quality(joined)
    (worst, added), largest = max(drops.items(), key=lambda item: item[1])
    path = write_problem(problem, tmp_path / "P.json")
    code, answer = select_json(path, "0.01", "1")  # nothing fits: the report comes anyway
    report = answer["monotonicity"]
    assert code == 1 and answer["feasible"] is False
    assert report["pairs"] == len(drops) == 6 * 2**5 - 6
    assert report["lowering"] == sum(d > 1e-12 for d in drops.values()) > 0
    assert report["largest_drop"] == pytest.approx(largest, abs=1e-12)
    names = [x.name for x in problem.experts]
    assert report["worst"] == {"subset": [names[e] for e in worst], "added": names[added]}


def test_names_are_printed_as_written_not_as_markup(tmp_path):
    problem = synthetic_problem(np.random.default_rng(5), 3, 8, "trained")
    names = ("[/]", "[bold]x", "y[/bold]")
    renamed = tuple(
        Expert(name, *(getattr(x, f) for f in EXPERT_FIELDS[1:]))
        for name, x in zip(names, problem.experts, strict=True)
    )
    marked = SelectionProblem(renamed, 1.0, 0.5, problem.gate, problem.p_true)
    path = write_problem(marked, tmp_path / "P.json")
    code, out, err = invoke("select", "--problem", str(path), "--energy-budget", "100",
                            "--latency-budget", "1000")  # fmt: skip
    assert code == 0, err
    chosen = solve(read_problem(path), 100.0, 1000.0)
    assert f"chosen: {', '.join(renamed[e].name for e in chosen.experts)};" in out


@pytest.mark.parametrize("flag", [("--seed", "-1"), ("--dump-problem", "EXISTING")])
def test_a_bad_flag_or_dump_target_exits_2_before_solving(problem_file, tmp_path, flag):
    existing = tmp_path / "taken.json"
    existing.write_text("mine")
    name, value = flag
    value = str(existing) if value == "EXISTING" else value
    code, out, err = invoke("select", "--problem", str(problem_file), "--energy-budget", "6",
                            "--latency-budget", "60", "--json", name, value)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, (code, out, err)
    assert ("--seed" in err) if name == "--seed" else ("already exists" in err)
    assert existing.read_text() == "mine"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--placement", "e0=rtx-4090"), "--placement applies to an ensemble BUNDLE"),
        (("--requester", "bogus"), "--requester applies to an ensemble BUNDLE"),
        (("--link-mbps", "0"), "--link-mbps / --link-ms / --link-nj-per-bit applies to"),
        (("--dump-problem", "{P}/sub.json"), "P.json is a file, not a folder"),
    ],
)
def test_malformed_arguments_exit_2_never_1_which_means_no_subset_fits(
    problem_file, extra, words, one_line_error
) -> None:
    extra = tuple(a.replace("{P}", str(problem_file)) for a in extra)
    code, _, err = invoke(
        "select", "--problem", str(problem_file), "--energy-budget", "9", "--latency-budget", "9",
        *extra,
    )  # fmt: skip
    one_line_error(code, err, words)
    assert code == 2
    code, _, err = invoke(
        "select", str(problem_file.parent / "absent"), "--energy-budget", "9",
        "--latency-budget", "9",
    )  # fmt: skip
    one_line_error(code, err, "absent: no such bundle")
    assert code == 2


def test_costs_whose_sum_is_beyond_float64_are_refused_naming_the_file(tmp_path) -> None:
    costs = {"energy_j": 1.7e308, "latency_ms": 1.0, "tx_energy_j": 0.0, "tx_latency_ms": 0.0}
    data = {
        "experts": [{"name": n, **costs} for n in "ab"],
        "aggregation": {"base_ms": 0.0, "per_expert_ms": 0.0},
        "gate": [[1.0, 1.0]],
        "p_true": [[0.5, 0.5]],
    }
    path = tmp_path / "P.json"
    path.write_text(json.dumps(data))
    args = ("--problem", str(path), "--energy-budget", "1e308", "--latency-budget", "9")
    code, out, err = invoke("select", *args, "--json")
    assert code == 2 and out == "" and "P.json: costs: the experts' energy_j" in err


def test_an_infeasible_cost_just_over_its_budget_is_printed_apart_from_it(tmp_path) -> None:
    """6 significant digits read 'needs 0.3 J (budget 0.3 J)' for a cost just over."""
    costs = {"energy_j": 0.3000001, "latency_ms": 1.0, "tx_energy_j": 0.0, "tx_latency_ms": 0.0}
    data = {
        "experts": [{"name": "a", **costs}],
        "aggregation": {"base_ms": 0.0, "per_expert_ms": 0.0},
        "gate": [[1.0]],
        "p_true": [[0.5]],
    }
    path = tmp_path / "P.json"
    path.write_text(json.dumps(data))
    args = ("--problem", str(path), "--energy-budget", "0.3", "--latency-budget", "9")
    code, _, err = invoke("select", *args)
    assert code == 1 and "needs 0.3000001 J (budget 0.3 J)" in err


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "inf"])
def test_a_time_limit_that_is_not_a_positive_number_exits_2(problem_file, limit, one_line_error):
    code, out, err = invoke("select", "--problem", str(problem_file), "--energy-budget", "9",
                            "--latency-budget", "90", "--time-limit", limit)  # fmt: skip
    one_line_error(code, err, "--time-limit")
    assert code == 2 and out == ""


def test_a_search_stopped_at_its_time_limit_says_so(tmp_path):
    rng = np.random.default_rng(64)
    problem = synthetic_problem(rng, 64, 256, "random")
    path = write_problem(problem, tmp_path / "P64.json")
    energy, latency = float(problem.cost_j.sum() * 0.1), float(problem.delay_ms.max() + 20.0)
    args = ["--problem", str(path), "--energy-budget", repr(energy), "--latency-budget",
            repr(latency), "--time-limit", "1e-9"]  # fmt: skip
    done = ganglion_select(*args, "--json")
    assert done.returncode == 0, done.stderr
    answer = strict_json(done.stdout)
    assert answer["feasible"] is True and answer["exact"] is False
    assert answer["optimality_gap"] > 0 and answer["time_limit_s"] == 1e-9
    assert problem.fits(tuple(answer["expert_indices"]), energy, latency)
    table = ganglion_select(*args)
    assert table.returncode == 0, table.stderr
    assert "best found" in table.stdout and "NOT exact" in table.stdout
    assert "exact optimum" not in table.stdout


def test_an_answer_within_the_time_limit_is_marked_exact(problem_file):
    code, out, _ = invoke("select", "--problem", str(problem_file), "--energy-budget", "9",
                          "--latency-budget", "90", "--json")  # fmt: skip
    answer = strict_json(out)
    assert code == 0 and answer["exact"] is True and answer["optimality_gap"] == 0.0
    assert answer["time_limit_s"] == 300.0


def test_threads_change_nothing_but_a_bad_count_is_refused(problem_file):
    problem = read_problem(problem_file)
    energy = float(problem.cost_j.sum() * 0.3)
    latency = float(np.quantile(problem.delay_ms, 0.8) + 3.0)
    common = ("--problem", str(problem_file), "--energy-budget", repr(energy),
              "--latency-budget", repr(latency), "--json")  # fmt: skip
    one, three = (ganglion_select(*common, "--threads", n) for n in ("1", "3"))
    assert one.returncode == three.returncode == 0, (one.stderr, three.stderr)
    first, second = strict_json(one.stdout), strict_json(three.stdout)
    assert first["experts"] == second["experts"] and first["quality"] == second["quality"]
    refused = ganglion_select(*common, "--threads", "0")
    assert refused.returncode == 2 and "--threads" in refused.stderr
