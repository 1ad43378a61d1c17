"""MoE² exact expert-subset solver: optimality against brute force, solve time, baselines.

Instances are synthetic (``ganglion.runtime.selection.synthetic``): topic-structured
correctness, three gates in turn — ``trained`` (follows correctness), ``random`` (unrelated to
it) and ``adversarial`` (favours the wrong experts; quality far from monotone) — a quarter of
them with duplicated experts (ties), and budgets drawn so that both constraints bind (10-40 % of
all experts' energy; a latency that drops the slowest experts and caps the size).

Rows (one JSON line each, then a table):
- ``optimality``: many small problems (1-12 experts) solved exactly and by vectorized brute
  force; the chosen subset (tie-broken) and its quality must agree on every one (goal 100 %).
- ``size``: per expert count, solve time median / p90 / worst (wall clock and process CPU time)
  over the instances, the subsets the search evaluated, agreement with brute force where that
  is affordable (<= ``--brute-max`` experts), and each baseline's quality relative to the
  optimum (mean and worst, over the instances where it finds a feasible subset), and, for
  each instance whose exact solve took longer than the size's goal, a second solve with the
  goal as its time limit (``--time-limit``): the share of the optimum's quality its best-found
  subset reaches and the optimality gap it reports.
- ``compiled_loops``: the seconds ``bounds.warm_up()`` takes to load the bounds' compiled numba
  loops (from the cache beside ``bounds.py``, or compiling them when it is empty). Every process
  pays it once, in its first solve unless it warms up; it runs first, so the timed rows below
  measure the search alone.
``--gate random`` / ``--instance 13`` time only that gate's instances / that instance of each
size (every instance is still drawn, so each one is the same as in a full run).
Goals: <= 10 ms at 16 experts and <= 1 s at 64, both on the worst case. numpy's BLAS is held
to ``--threads`` threads (default 1). The search runs on ``--search-threads`` threads (default:
``solver.default_threads()``, the CPUs it may use, at most 4); with more than one, each instance
is also solved on one thread in the same run (the order alternating), which must give the same
subset and work, and both times are reported.
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS = "1"
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    if "--threads" in sys.argv:
        THREADS = sys.argv[sys.argv.index("--threads") + 1]
    os.environ[_name] = THREADS  # before numpy loads BLAS

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ganglion.runtime.selection import brute_force, run_baselines, solve  # noqa: E402
from ganglion.runtime.selection.bounds import warm_up  # noqa: E402
from ganglion.runtime.selection.solver import default_threads  # noqa: E402
from ganglion.runtime.selection.synthetic import (  # noqa: E402
    GATES,
    binding_budgets,
    edge_budgets,
    synthetic_problem,
)

GOAL_MS = {16: 10.0, 64: 1000.0}


def instance(rng: np.random.Generator, n: int, m: int, i: int):
    """The i-th instance of a size: gates in turn, every fourth with duplicated experts."""
    duplicates = int(rng.integers(1, max(2, n // 4))) if i % 4 == 3 and n > 1 else 0
    problem = synthetic_problem(rng, n, m, GATES[i % 3], duplicates)
    return problem, *binding_budgets(problem, rng)


def same(a, b) -> bool:
    """Both infeasible, or the same subset with the same quality (to 1e-12)."""
    if a is None or b is None:
        return a is None and b is None
    return a.experts == b.experts and abs(a.quality - b.quality) <= 1e-12


def compiled_loops_row() -> dict:
    """Time loading (or compiling) the bounds' numba loops, once per process."""
    start_cpu = time.process_time()
    wall_s = warm_up()
    cpu_ms = 1e3 * (time.process_time() - start_cpu)
    return {
        "benchmark": "moe2_solver",
        "row": "compiled_loops",
        "wall_ms": 1e3 * wall_s,
        "cpu_ms": cpu_ms,
    }


def optimality_row(count: int, samples: int, seed: int) -> dict:
    """Exact vs brute force on many small instances, edge budgets included."""
    rng = np.random.default_rng(seed)
    agree = 0
    for i in range(count):
        n = int(rng.integers(1, 13))
        problem = synthetic_problem(rng, n, samples, GATES[i % 3], int(rng.integers(0, n)))
        budgets = edge_budgets(problem, rng) if i % 5 == 0 else binding_budgets(problem, rng)
        agree += same(solve(problem, *budgets), brute_force(problem, *budgets))
    return {
        "benchmark": "moe2_solver",
        "row": "optimality",
        "instances": count,
        "experts": "1-12",
        "samples": samples,
        "agree_with_brute_force": agree,
        "optimality_pct": 100.0 * agree / count,
        "goal_pct": 100.0,
    }


def size_row(
    n: int,
    count: int,
    samples: int,
    seed: int,
    brute_max: int,
    gate: str | None = None,
    only: int | None = None,
    search_threads: int = 1,
) -> dict:
    """Solve ``count`` instances with ``n`` experts; time, effort, optimality, baselines.
    ``gate`` / ``only``: solve just that gate's instances / instance ``only`` (the others are
    still drawn, so every instance is the same as in a full run)."""
    rng = np.random.default_rng(seed + n)
    wall, cpu, evaluated, agree, checked, solved = [], [], [], 0, 0, []
    wall_one, same_one = [], 0  # one search thread, when search_threads > 1
    by_gate: dict[str, list[float]] = {g: [] for g in GATES}
    ratios: dict[str, list[float]] = {}
    all_fit = 0
    goal = GOAL_MS.get(n)
    limited: list[tuple[float, float]] = []  # (share of the optimum, gap) at the goal's limit
    for i in range(count):
        problem, energy, latency = instance(rng, n, samples, i)
        if (gate is not None and GATES[i % 3] != gate) or (only is not None and i != only):
            continue
        solved.append(i)
        for threads in (1, search_threads)[:: 1 if i % 2 else -1] if search_threads > 1 else (1,):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            found = solve(problem, energy, latency, threads=threads)
            took = 1e3 * (time.perf_counter() - start_wall), 1e3 * (time.process_time() - start_cpu)
            if threads == search_threads:
                best, (spent, used) = found, took
            else:
                alone, spent_one = found, took[0]
        wall.append(spent)
        cpu.append(used)
        if search_threads > 1:
            wall_one.append(spent_one)
            same_one += alone == best  # same subset, quality and work
        by_gate[GATES[i % 3]].append(wall[-1])
        evaluated.append(best.evaluated if best else 0)
        if goal is not None and best is not None and wall[-1] > goal and best.quality > 0:
            stopped = solve(problem, energy, latency, time_limit_s=goal / 1e3)
            limited.append((stopped.quality / best.quality, stopped.gap))
        if n <= brute_max:
            checked += 1
            agree += same(best, brute_force(problem, energy, latency))
        for name, base in run_baselines(problem, energy, latency, seed=i).items():
            if best is not None and base is not None and best.quality > 0:
                ratios.setdefault(name, []).append(base.quality / best.quality)
        all_fit += problem.fits(range(n), energy, latency)
    return {
        "benchmark": "moe2_solver",
        "row": "size",
        "experts": n,
        "samples": samples,
        "instances": len(solved),
        "instance_indices": solved,
        "gates": {g: sum(GATES[i % 3] == g for i in solved) for g in GATES},
        "all_experts_fit": all_fit,
        "search_threads": search_threads,
        "wall_ms": _spread(wall),
        "cpu_ms": _spread(cpu),
        "wall_ms_one_thread": _spread(wall_one) if wall_one else None,
        "one_thread_same_answer": same_one if wall_one else None,
        "wall_ms_by_gate": {g: _spread(v) for g, v in by_gate.items() if v},
        "subsets_evaluated": {"median": float(np.median(evaluated)), "max": max(evaluated)},
        "brute_force_checked": checked,
        "agree_with_brute_force": agree if checked else None,
        "baseline_quality_vs_optimum": {
            name: {"mean": float(np.mean(r)), "worst": float(np.min(r)), "feasible": len(r)}
            for name, r in ratios.items()
        },
        "goal_ms": goal,
        "goal_met_worst_wall": None if goal is None else max(wall) <= goal,
        "at_goal_time_limit": {
            "solves_over_goal": len(limited),
            "share_of_optimum_worst": min((r for r, _ in limited), default=None),
            "gap_largest": max((g for _, g in limited), default=None),
        },
        "blas_threads": int(THREADS),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": float(np.median(values)),
        "p90": float(np.quantile(values, 0.9)),
        "max": float(max(values)),
    }


def main() -> None:
    """Run the optimality sweep and every size, print JSON lines and a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="8,16,32,64", help="expert counts, comma-separated")
    ap.add_argument("--instances", type=int, default=24, help="instances per size")
    ap.add_argument("--samples", type=int, default=512, help="calibration samples M")
    ap.add_argument("--optimality", type=int, default=600, help="small instances vs brute force")
    ap.add_argument("--brute-max", type=int, default=16, help="largest size checked by brute force")
    ap.add_argument("--threads", default=THREADS, help="BLAS threads (set before numpy loads)")
    ap.add_argument(
        "--search-threads", type=int, default=default_threads(), help="the search's threads"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate", choices=GATES, help="time only this gate's instances")
    ap.add_argument("--instance", type=int, help="time only this instance index of each size")
    args = ap.parse_args()
    if args.instance is not None and not 0 <= args.instance < args.instances:
        ap.error(f"--instance must be in [0, {args.instances}), got {args.instance}")
    if args.instance is not None and args.gate not in (None, GATES[args.instance % 3]):
        ap.error(f"instance {args.instance} has the {GATES[args.instance % 3]} gate")
    rows = [compiled_loops_row()]
    if args.optimality > 0:
        rows.append(optimality_row(args.optimality, 32, args.seed))
    for row in rows:
        print(json.dumps(row), flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        row = size_row(
            n,
            args.instances,
            args.samples,
            args.seed,
            args.brute_max,
            args.gate,
            args.instance,
            args.search_threads,
        )
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    console = Console(width=200)
    load = rows[0]
    console.print(
        f"loading the bounds' compiled loops (once per process, not in the rows below): "
        f"{load['wall_ms']:.0f} ms wall, {load['cpu_ms']:.0f} ms CPU"
    )
    for first in (r for r in rows if r["row"] == "optimality"):
        console.print(
            f"optimality: {first['agree_with_brute_force']}/{first['instances']} small instances "
            f"({first['optimality_pct']:.1f} %) equal to brute force (same subset and quality)"
        )
    table = Table(
        "experts",
        "M",
        "n",
        "wall ms median / p90 / worst",
        "worst by gate: trained / random / adv.",
        "cpu ms worst",
        "subsets eval. (max)",
        "= brute force",
        "single / greedy / random / all (mean % of opt)",
        "goal (worst)",
        "stopped at the goal: % of opt (worst), gap",
        "1 thread: worst ms (same)",
        title=f"MoE² exact solver: search on {args.search_threads} thread(s), "
        f"{args.threads} BLAS thread(s)",
    )
    for row in (r for r in rows if r["row"] == "size"):
        w, base = row["wall_ms"], row["baseline_quality_vs_optimum"]
        pct = " / ".join(
            f"{100 * base[b]['mean']:.1f}" if b in base else "-"
            for b in ("single", "greedy_per_joule", "random", "all")
        )
        check = (
            "-"
            if row["agree_with_brute_force"] is None
            else (f"{row['agree_with_brute_force']}/{row['brute_force_checked']}")
        )
        goal = (
            "-"
            if row["goal_ms"] is None
            else (f"{row['goal_ms']:g} ms: {'met' if row['goal_met_worst_wall'] else 'missed'}")
        )
        limited = row["at_goal_time_limit"]
        stopped = (
            "-"
            if not limited["solves_over_goal"]
            else f"{limited['solves_over_goal']}: {100 * limited['share_of_optimum_worst']:.1f}, "
            f"{limited['gap_largest']:.3f}"
        )
        table.add_row(
            str(row["experts"]),
            str(row["samples"]),
            str(row["instances"]),
            f"{w['median']:.1f} / {w['p90']:.1f} / {w['max']:.1f}",
            " / ".join(
                f"{row['wall_ms_by_gate'][g]['max']:.1f}" if g in row["wall_ms_by_gate"] else "-"
                for g in GATES
            ),
            f"{row['cpu_ms']['max']:.1f}",
            str(row["subsets_evaluated"]["max"]),
            check,
            pct,
            goal,
            stopped,
            "-"
            if row["wall_ms_one_thread"] is None
            else f"{row['wall_ms_one_thread']['max']:.1f} "
            f"({row['one_thread_same_answer']}/{row['instances']})",
        )
    console.print(table)


if __name__ == "__main__":
    main()
