"""MoE² expert selection: the exact subset solver under energy and latency budgets, its
baselines, the two-level (cached coarse subset, fine gating) use, and the JSON problem form.

See README.md in this folder for the formulation, the algorithm and why each bound is valid.
"""

from ganglion.models.monotonicity import MonotonicityReport, monotonicity_report
from ganglion.runtime.selection.baselines import (
    all_experts,
    greedy_per_joule,
    random_feasible,
    run_baselines,
    single_best,
)
from ganglion.runtime.selection.problem import (
    MAX_EXPERTS,
    Expert,
    SelectionProblem,
    SelectionProblemError,
    budget_limit,
    check_budget,
    problem_from_dict,
    problem_to_dict,
    read_problem,
    write_problem,
)
from ganglion.runtime.selection.solver import (
    TIE_TOLERANCE,
    Selection,
    brute_force,
    solve,
    tie_key,
)
from ganglion.runtime.selection.two_level import SubsetCache, gate_within

__all__ = [
    "MAX_EXPERTS",
    "TIE_TOLERANCE",
    "Expert",
    "MonotonicityReport",
    "Selection",
    "SelectionProblem",
    "SelectionProblemError",
    "budget_limit",
    "SubsetCache",
    "all_experts",
    "brute_force",
    "check_budget",
    "gate_within",
    "greedy_per_joule",
    "monotonicity_report",
    "problem_from_dict",
    "problem_to_dict",
    "random_feasible",
    "read_problem",
    "run_baselines",
    "single_best",
    "solve",
    "tie_key",
    "write_problem",
]
