"""The JSON problem form: exact round trip, atomic writes, one-line errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ganglion.runtime.cli.app import _register, app
from ganglion.runtime.selection import problem as problem_module
from ganglion.runtime.selection import read_problem, write_problem
from ganglion.runtime.selection.synthetic import synthetic_problem


def small_problem() -> dict:
    """A valid 3-expert, 4-sample problem in its JSON form."""
    experts = [
        {"name": f"x{j}", "energy_j": 1.0 + j, "latency_ms": 5.0, "tx_energy_j": 0.1,
         "tx_latency_ms": 1}
        for j in range(3)
    ]  # fmt: skip
    return {
        "experts": experts,
        "aggregation": {"base_ms": 1.0, "per_expert_ms": 0.5},
        "gate": [[0.2, 0.3, 0.5]] * 4,
        "p_true": [[0.9, 0.5, 0.1]] * 4,
    }


_register()


def ganglion(*args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_write_then_read_round_trips_exactly(tmp_path):
    problem = synthetic_problem(np.random.default_rng(0), 7, 33, "random", duplicates=2)
    path = write_problem(problem, tmp_path / "p.json")
    again = read_problem(path)
    assert again.experts == problem.experts
    assert (again.base_ms, again.per_expert_ms) == (problem.base_ms, problem.per_expert_ms)
    assert np.array_equal(again.gate, problem.gate)
    assert np.array_equal(again.p_true, problem.p_true)


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "p.json"
    target.write_text("old")
    problem = synthetic_problem(np.random.default_rng(1), 3, 5, "trained")
    write_problem(problem, target)
    assert json.loads(target.read_text())["aggregation"]["base_ms"] == problem.base_ms
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def mutate(change):
    def apply(data):
        change(data)
        return data

    return apply


def set_expert(j, field, value):
    return mutate(lambda d: d["experts"][j].__setitem__(field, value))


MALFORMED = {
    "not-json": ("{", "not valid JSON (line 1"),
    "not-an-object": ("[]", "problem must be an object"),
    "unknown-top": (mutate(lambda d: d.__setitem__("extra", 1)),
                    'problem has unknown field "extra"'),
    "missing-gate": (mutate(lambda d: d.pop("gate")), 'problem is missing field "gate"'),
    "no-experts": (mutate(lambda d: d.__setitem__("experts", [])), "experts must be a non-empty"),
    "expert-missing": (mutate(lambda d: d["experts"][1].pop("tx_energy_j")),
                       'experts[1] is missing field "tx_energy_j"'),
    "expert-unknown": (set_expert(0, "watts", 3), 'experts[0] has unknown field "watts"'),
    "duplicate-name": (set_expert(2, "name", "x0"), 'experts[2].name duplicates experts[0].name'),
    "empty-name": (set_expert(1, "name", ""), "experts[1].name must be a non-empty string"),
    "negative-cost": (set_expert(0, "energy_j", -1), "experts[0].energy_j must be a finite "
                      "number >= 0, got -1"),
    "nan-cost": ('NaN', "experts[1].latency_ms must be a finite number >= 0, got nan"),
    "bool-cost": (set_expert(2, "tx_latency_ms", True), "experts[2].tx_latency_ms must be a "
                  "number, got true"),
    "string-cost": (set_expert(0, "energy_j", "1.5"), 'experts[0].energy_j must be a number'),
    "negative-base": (mutate(lambda d: d["aggregation"].__setitem__("base_ms", -0.5)),
                      "aggregation.base_ms must be a finite number >= 0, got -0.5"),
    "aggregation-missing": (mutate(lambda d: d["aggregation"].pop("per_expert_ms")),
                            'aggregation is missing field "per_expert_ms"'),
    "gate-not-list": (mutate(lambda d: d.__setitem__("gate", 3)), "gate must be a non-empty list"),
    "gate-row-not-list": (mutate(lambda d: d["gate"].__setitem__(1, 0.5)),
                          "gate[1] must be a list of 3 numbers"),
    "ragged-gate": (mutate(lambda d: d["gate"].__setitem__(2, [0.5, 0.5])),
                    "gate[2] has 2 entries, expected 3"),
    "row-count": (mutate(lambda d: d["p_true"].pop()), "p_true has 3 rows, gate has 4"),
    "gate-negative": (mutate(lambda d: d["gate"].__setitem__(3, [0.3, -0.2, 0.9])),
                      "gate[3][1] must be >= 0, got -0.2"),
    "gate-zero-row": (mutate(lambda d: d["gate"].__setitem__(0, [0, 0, 0])),
                      "gate[0] must hold a positive weight (all are 0), got 0.0"),
    "gate-too-small": (mutate(lambda d: d["gate"].__setitem__(2, [0.0, 1.0, 1e-307])),
                       "gate[2][2] must be 0 or at least 1e-150 of its row's largest weight"),
    "gate-bool": (mutate(lambda d: d["gate"].__setitem__(1, [True, 0.5, 0.5])),
                  "gate[1][0] must be a number, got true"),
    "gate-huge-int": (mutate(lambda d: d["gate"].__setitem__(0, [10**400, 1, 1])),
                      "gate[0][0] must be finite"),
    "p-above-one": (mutate(lambda d: d["p_true"].__setitem__(0, [0.5, 0.5, 1.5])),
                    "p_true[0][2] must be in [0, 1], got 1.5"),
    "p-infinite": ("Infinity", "p_true[2][1] must be finite, got inf"),
    "duplicate-key": ('{"gate": [], "gate": []}', 'key "gate" appears twice'),
    "deep-nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
}  # fmt: skip


def write_case(tmp_path: Path, case) -> Path:
    path = tmp_path / "P.json"
    if case == "NaN":  # literals json.dumps refuses to write
        text = json.dumps(small_problem()).replace('"latency_ms": 5.0', '"latency_ms": NaN', 2)
        text = text.replace('"latency_ms": NaN', '"latency_ms": 5.0', 1)
    elif case == "Infinity":
        data = small_problem()
        data["p_true"][2] = [0.5, 12345.0, 0.5]
        text = json.dumps(data).replace("12345.0", "Infinity")
    elif isinstance(case, str):
        text = case
    else:
        text = json.dumps(case(small_problem()))
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_problem_exits_2_naming_the_file_and_field(tmp_path, name):
    case, expected = MALFORMED[name]
    path = write_case(tmp_path, case)
    code, out, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", "5", "--latency-budget", "50"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path}: ") and expected in err, err


def test_more_than_64_experts_is_refused(tmp_path):
    data = small_problem()
    data["experts"] = [dict(data["experts"][0], name=f"x{j}") for j in range(65)]
    path = write_case(tmp_path, mutate(lambda d: d.update(data)))
    with pytest.raises(problem_module.SelectionProblemError, match="takes at most 64"):
        read_problem(path)


def test_size_limits_are_checked_before_parsing(tmp_path, monkeypatch):
    path = write_case(tmp_path, mutate(lambda d: None))
    monkeypatch.setattr(problem_module, "MAX_SAMPLES", 3)
    with pytest.raises(problem_module.SelectionProblemError, match="gate has 4 rows, more than 3"):
        read_problem(path)
    monkeypatch.setattr(problem_module, "MAX_FILE_BYTES", 100)
    with pytest.raises(problem_module.SelectionProblemError, match="larger than the 100 bytes"):
        read_problem(path)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "P.json"
    path.write_bytes(b'{"experts": "\xff"}')
    with pytest.raises(problem_module.SelectionProblemError, match="not UTF-8"):
        read_problem(path)


@pytest.mark.parametrize("budget", ["-1", "nan", "inf"])
def test_bad_budget_exits_2(tmp_path, budget):
    path = write_case(tmp_path, mutate(lambda d: None))
    code, _, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", budget, "--latency-budget", "50"
    )
    assert code == 2 and "--energy-budget must be a finite number >= 0" in err


def test_zero_gate_weights_are_allowed_and_a_sample_without_weight_scores_its_mean(tmp_path):
    data = small_problem()
    data["gate"] = [[0, 0, 1], [1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]
    data["p_true"] = [[0.9, 0.5, 0.1], [0.2, 0.8, 0.6], [0.4, 0.7, 1.0], [0.3, 0.3, 0.3]]
    path = tmp_path / "zeros.json"
    path.write_text(json.dumps(data))
    problem = read_problem(path)
    gate, p = np.array(data["gate"], float), np.array(data["p_true"], float)
    for subset in ([0], [1, 2], [0, 1], [0, 1, 2]):
        w = gate[:, subset]
        weighted = (w * p[:, subset]).sum(1) / np.where(w.sum(1) > 0, w.sum(1), 1)
        expected = np.where(w.sum(1) > 0, weighted, p[:, subset].mean(1)).mean()
        assert problem.quality(subset) == pytest.approx(expected, rel=1e-12)
    code, out, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", "100", "--latency-budget", "100",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    assert answer["feasible"] and np.isfinite(answer["quality"])


@pytest.mark.parametrize(
    ("gate", "p_true", "expected"),
    [
        ([[1e-300, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], (1.0 + 0.5) / 2),  # tiny vs zero
        ([[5e-324, 5e-324]], [[0.3, 0.9]], 0.6),  # subnormal weights, alike
        ([[1e308, 1e308]], [[0.3, 0.9]], 0.6),  # the row's sum overflows float64
    ],
)
def test_gate_rows_at_float64_extremes_are_read_as_written(tmp_path, gate, p_true, expected):
    """Q of both experts by the formula: rows are rescaled exactly, so tiny, subnormal and huge
    weights neither vanish, nor overflow, nor lose to a zero."""
    data = small_problem()
    data["experts"] = data["experts"][:2]
    data["gate"], data["p_true"] = gate, p_true
    path = tmp_path / "extreme.json"
    path.write_text(json.dumps(data))
    problem = read_problem(path)
    assert problem.quality((0, 1)) == pytest.approx(expected, abs=1e-15)
    code, out, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", "100", "--latency-budget", "100",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    best = max(problem.quality(s) for s in ((0,), (1,), (0, 1)))
    assert json.loads(out)["quality"] == pytest.approx(best, abs=1e-15)


def test_rescaled_rows_keep_every_quality_bit_for_bit():
    problem = synthetic_problem(np.random.default_rng(3), 6, 40, "random")
    scaled = problem_module.SelectionProblem(
        problem.experts, problem.base_ms, problem.per_expert_ms, problem.gate * 2.0**-600,
        problem.p_true,
    )  # fmt: skip
    for subset in ((0,), (1, 4), (0, 2, 3, 5), tuple(range(6))):
        assert scaled.quality(subset) == problem.quality(subset)


@pytest.mark.parametrize(
    "name", ["a\nb", "x\x1b[31m", "tab\there", "line\u2028sep", "para\u2029sep"]
)
def test_an_expert_name_with_a_control_character_is_refused(tmp_path, name):
    data = small_problem()
    data["experts"][1]["name"] = name
    path = tmp_path / "names.json"
    path.write_text(json.dumps(data))
    with pytest.raises(problem_module.SelectionProblemError, match=r"experts\[1\]\.name holds"):
        read_problem(path)


def test_many_separators_are_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "rows.json"
    path.write_text('{"gate": [' + "[]," * 5000 + "[]]}")
    monkeypatch.setattr(problem_module, "MAX_SEPARATORS", 4000)
    monkeypatch.setattr(problem_module.json, "loads", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(problem_module.SelectionProblemError, match="commas and brackets, more"):
        read_problem(path)


def test_a_cost_equal_to_its_budget_up_to_rounding_fits(tmp_path):
    """0.1 + 0.2 is 0.30000000000000004 in float64: a 0.3 J budget still takes the expert."""
    data = small_problem()
    data["experts"] = [dict(data["experts"][0], energy_j=0.1, tx_energy_j=0.2)]
    data["gate"] = [[1.0]] * 4
    data["p_true"] = [[0.5]] * 4
    path = tmp_path / "point3.json"
    path.write_text(json.dumps(data))
    code, out, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", "0.3", "--latency-budget", "100",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["experts"] == ["x0"]
    code, _, err = ganglion(
        "select", "--problem", str(path), "--energy-budget", "0.2999999999", "--latency-budget",
        "100",
    )  # fmt: skip
    assert code == 1 and "needs 0.3 J" in err


def test_a_name_longer_than_the_limit_is_refused_quickly_in_a_short_message(tmp_path):
    import time

    data = small_problem()
    data["experts"][0]["name"] = "e" * 10_000_000  # a 10 MB name, within the file size limit
    path = tmp_path / "long.json"
    path.write_text(json.dumps(data))
    start = time.perf_counter()
    with pytest.raises(problem_module.SelectionProblemError) as refused:
        read_problem(path)
    assert time.perf_counter() - start < 10  # a table wrapping such a name took minutes
    message = str(refused.value)
    assert "experts[0].name is 10000000 characters long (at most 256)" in message
    assert len(message) < 300
    data["experts"][0]["name"] = "e" * problem_module.MAX_NAME_CHARS  # at the limit: fine
    path.write_text(json.dumps(data))
    assert read_problem(path).names[0] == data["experts"][0]["name"]
