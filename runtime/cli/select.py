"""``ganglion select``: MoE²'s exact expert subset under an energy and a latency budget.

Forms: ``ganglion select --problem P.json --energy-budget J --latency-budget MS [--json]``, or
``ganglion select BUNDLE ...`` for an ensemble bundle (problem built from its calibration cache
and the device profiles; ``--dump-problem`` writes it).
Both print how far the gate departs from monotone quality on the calibration data
(``monotonicity``); a bundle's answer also names each expert's device and whether each figure
is simulated or measured (``placement``).
``--time-limit`` bounds the search: at the limit the answer is the best subset found, marked not
exact, with a bound on how much better the optimum can be (``optimality_gap``).
Exit codes: 0 a subset fits (the optimum, or at the time limit the best found); 1 no non-empty
subset fits (one-line reason on stderr; with
``--json`` also ``{"feasible": false, ...}`` on stdout); 2 anything else: a malformed problem,
budget or flag, a missing bundle, a flag only a BUNDLE takes given with ``--problem``, or a
``--dump-problem`` target that may not be written (one line naming the file and the field).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ganglion.models.errors import GanglionError, first_line
from ganglion.models.monotonicity import monotonicity_line
from ganglion.runtime.atomic import check_target
from ganglion.runtime.cli.pairs import option_pairs
from ganglion.runtime.cli.terminal import plain, printable
from ganglion.runtime.selection import (
    Selection,
    SelectionProblem,
    SelectionProblemError,
    budget_limit,
    check_budget,
    monotonicity_report,
    read_problem,
    run_baselines,
    solve,
    write_problem,
)

PIPE_WIDTH = 120  # rich's width when stdout is not a terminal
MIN_LINK_MBPS = 0.001  # --link-mbps below this (1 kb/s) is refused: transfer times overflow
LINK_DEFAULTS = (100.0, 2.0, 50.0)  # --link-mbps, --link-ms, --link-nj-per-bit
MONOTONICITY_WORK = 4e6  # subsets x calibration rows the monotonicity check evaluates (<~1 s)
TIME_LIMIT_S = 300.0  # --time-limit's default: the search's wall-clock bound


def select(
    bundle: Path | None = typer.Argument(
        None, help="Ensemble bundle: the problem is built from its calibration cache and devices."
    ),
    problem: Path | None = typer.Option(
        None, "--problem", help="Problem JSON: expert costs, aggregation, gate, p_true."
    ),
    energy_budget: float = typer.Option(..., "--energy-budget", help="Joules per request."),
    latency_budget: float = typer.Option(..., "--latency-budget", help="Milliseconds per request."),
    placement: list[str] = typer.Option(
        [], "--placement", help="EXPERT=DEVICE (with BUNDLE): the device profile an expert runs on."
    ),
    profiled: list[str] = typer.Option(
        [],
        "--profiled",
        help="EXPERT=PROFILE.json (with BUNDLE): measured costs, from `ganglion profile "
        "EXPERT_BUNDLE --json` run on the expert's device.",
    ),
    requester: str = typer.Option(
        "auto", "--requester", help="Device the request arrives at and the gate runs on."
    ),
    link_mbps: float = typer.Option(
        LINK_DEFAULTS[0], "--link-mbps", help="Simulated link bandwidth."
    ),
    link_ms: float = typer.Option(
        LINK_DEFAULTS[1], "--link-ms", help="Simulated link latency per request."
    ),
    link_nj_per_bit: float = typer.Option(
        LINK_DEFAULTS[2], "--link-nj-per-bit", help="Link energy per bit."
    ),
    device_files: list[Path] = typer.Option([], "--devices", help="Extra device profile file."),
    dump_problem: Path | None = typer.Option(
        None, "--dump-problem", help="Also write the problem solved (JSON) here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed of the random-subset baseline."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --dump-problem file."),
    time_limit: float = typer.Option(
        TIME_LIMIT_S,
        "--time-limit",
        help="Seconds the search may take; at the limit it answers the best subset found, "
        "marked not exact, with a bound on how much better the optimum can be.",
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        max=64,
        help="Threads the search may use (default: the CPUs it may run on, at most 4); "
        "the answer does not depend on it.",
    ),
) -> None:
    """Choose the expert subset with the best predicted quality within both budgets."""
    sources = None
    try:
        if problem is not None:
            _refuse_bundle_flags(
                placement, profiled, requester, device_files, (link_mbps, link_ms, link_nj_per_bit)
            )
        if dump_problem is not None:
            profiles = (spec.partition("=")[2] for spec in profiled)
            check_target(dump_problem, force, reads=(bundle, problem, *device_files, *profiles))
        if (problem is None) == (bundle is None):
            raise SelectionProblemError("give an ensemble BUNDLE or --problem P.json (one of them)")
        energy = check_budget(energy_budget, "--energy-budget")
        latency = check_budget(latency_budget, "--latency-budget")
        if not check_budget(time_limit, "--time-limit") > 0:
            raise SelectionProblemError(f"--time-limit must be > 0 seconds, got {time_limit}")
        if problem is not None:
            loaded = read_problem(problem)
        else:
            from ganglion.runtime.selection.from_ensemble import Link

            mbps = check_budget(link_mbps, "--link-mbps")
            if mbps < MIN_LINK_MBPS:
                raise SelectionProblemError(
                    f"--link-mbps must be at least {MIN_LINK_MBPS} (1 kb/s), got {link_mbps}"
                )
            link = Link(
                mbps,
                check_budget(link_ms, "--link-ms"),
                check_budget(link_nj_per_bit, "--link-nj-per-bit"),
            )
            loaded, sources = _bundle_problem(
                bundle,
                option_pairs(placement, "--placement", "EXPERT=DEVICE", SelectionProblemError),
                requester,
                link,
                device_files,
                {
                    expert: Path(path)
                    for expert, path in option_pairs(
                        profiled, "--profiled", "EXPERT=PROFILE.json", SelectionProblemError
                    ).items()
                },
            )
        if dump_problem is not None:
            write_problem(loaded, dump_problem, force)
    except (GanglionError, ValueError) as exc:  # exit 1 means only "no subset fits"
        typer.echo(printable(f"error: {first_line(exc)}"), err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        line = f"error: {dump_problem}: cannot be written ({exc.strerror})"
        typer.echo(printable(line), err=True)
        raise typer.Exit(2) from None
    if sources is not None and not as_json:
        _print_sources(sources)
    report(loaded, energy, latency, as_json, seed, sources, time_limit, threads)


def _refuse_bundle_flags(
    placement: list[str],
    profiled: list[str],
    requester: str,
    device_files: list[Path],
    link: tuple[float, float, float],
) -> None:
    """SelectionProblemError naming a flag that only a BUNDLE uses, given with --problem (a
    problem file holds its costs already: the flag would be ignored)."""
    given = [
        flag
        for flag, used in (
            ("--placement", bool(placement)),
            ("--profiled", bool(profiled)),
            ("--requester", requester != "auto"),
            ("--devices", bool(device_files)),
            ("--link-mbps / --link-ms / --link-nj-per-bit", link != LINK_DEFAULTS),
        )
        if used
    ]
    if given:
        raise SelectionProblemError(
            f"{given[0]} applies to an ensemble BUNDLE; a --problem file holds its costs already"
        )


def _bundle_problem(
    bundle: Path,
    places: dict[str, str],
    requester: str,
    link: Any,
    files: list[Path],
    profiles: dict[str, Path],
) -> tuple[SelectionProblem, dict[str, Any]]:
    """The bundle's problem and where its figures come from (``placement`` in the JSON)."""
    from ganglion.device import detect
    from ganglion.runtime.bundle import load_bundle
    from ganglion.runtime.selection.from_ensemble import problem_from_ensemble

    host = detect().profile_name if requester == "auto" else requester
    loaded, sources = problem_from_ensemble(
        load_bundle(bundle), places, host, link, device_files=files, profiles=profiles
    )
    marks = {"gate": "simulated (roofline)", "quality": "measured on the calibration data"}
    return loaded, {**sources, **marks}


def _print_sources(sources: dict[str, Any]) -> None:
    console = Console(highlight=False)
    for name, source in sources["experts"].items():
        console.print(
            plain(
                f"{name}: on {source['device']} ({source['kind']}); compute "
                f"{source['compute']}, transmission {source['transmission']}"
            )
        )
    console.print(
        plain(f"gate on {sources['requester']} ({sources['gate']}); quality {sources['quality']}")
    )


def _monotonicity(problem: SelectionProblem) -> dict[str, Any]:
    """How far the problem's gate departs from monotone ``Q``, the worst pair named by expert:
    every pair when that evaluates at most ``MONOTONICITY_WORK`` subset-rows, else a seeded
    sample of about that size (at least 500 pairs)."""
    per_row = MONOTONICITY_WORK / problem.gate.shape[0]  # subsets evaluated, at most
    exact_up_to = int(math.log2(per_row)) if per_row >= 1 else 0
    samples = int(min(20_000, max(500, per_row / 2)))
    found = monotonicity_report(problem.gate, problem.p_true, exact_up_to, samples)
    summary = found.to_dict()
    if found.worst is not None:
        subset, added = found.worst
        summary["worst"] = {
            "subset": [problem.names[e] for e in subset],
            "added": problem.names[added],
        }
    return summary


def report(
    problem: SelectionProblem,
    energy_budget: float,
    latency_budget: float,
    as_json: bool,
    seed: int,
    sources: dict[str, Any] | None = None,
    time_limit_s: float = TIME_LIMIT_S,
    threads: int | None = None,
) -> None:
    """Solve within ``time_limit_s`` (on ``threads``), print the answer, the baselines and the
    gate's monotonicity (table or JSON; with ``sources``, a bundle's placement too); exit 1
    when nothing fits."""
    from ganglion.runtime.selection.bounds import warm_up

    warm_up()  # load the compiled loops first: solve_ms measures the search alone
    start = time.perf_counter()
    chosen = solve(problem, energy_budget, latency_budget, time_limit_s, threads)
    solve_ms = (time.perf_counter() - start) * 1e3
    budgets = {
        "energy_budget_j": energy_budget,
        "latency_budget_ms": latency_budget,
        "time_limit_s": time_limit_s,
    }
    context = {"monotonicity": _monotonicity(problem)}
    if sources is not None:
        context["placement"] = sources
    if chosen is None:
        reason = _infeasible_reason(problem, energy_budget, latency_budget)
        if as_json:
            out = {"feasible": False, "reason": reason, **budgets, "solve_ms": solve_ms}
            out.update(_cheapest(problem))
            out.update(context)
            typer.echo(json.dumps(out, allow_nan=False))
        typer.echo(printable(f"error: {reason}"), err=True)
        raise typer.Exit(1)
    baselines = run_baselines(problem, energy_budget, latency_budget, seed)
    if as_json:
        out = {"feasible": True, **_describe(problem, chosen), "solve_ms": solve_ms}
        out.update(exact=chosen.exact, optimality_gap=chosen.gap)
        out.update(budgets)
        out["expert_indices"] = list(chosen.experts)
        out["subsets_evaluated"] = chosen.evaluated
        out["baselines"] = {
            name: _baseline(problem, base, chosen) for name, base in baselines.items()
        }
        out.update(context)
        typer.echo(json.dumps(out, allow_nan=False))
        return
    _print_tables(problem, chosen, baselines, budgets, solve_ms)
    line = monotonicity_line(context["monotonicity"])
    Console(highlight=False).print(line, markup=False, soft_wrap=True)


def _describe(problem: SelectionProblem, chosen: Selection) -> dict[str, Any]:
    return {
        "experts": [problem.names[e] for e in chosen.experts],
        "quality": chosen.quality,
        "energy_j": chosen.energy_j,
        "latency_ms": chosen.latency_ms,
    }


def _baseline(problem: SelectionProblem, base: Selection | None, best: Selection) -> dict:
    if base is None:
        return {"feasible": False}
    ratio = base.quality / best.quality if best.quality > 0 else None
    return {"feasible": True, **_describe(problem, base), "quality_vs_optimum": ratio}


def _single(problem: SelectionProblem, e: int) -> dict[str, Any]:
    return {
        "experts": [problem.names[e]],
        "energy_j": problem.energy((e,)),
        "latency_ms": problem.latency((e,)),
    }


def _cheapest(problem: SelectionProblem) -> dict[str, Any]:
    """The least-energy and least-latency subsets (single experts: E and L only grow)."""
    experts = range(problem.n_experts)
    frugal = min(experts, key=lambda e: (problem.energy((e,)), problem.latency((e,)), e))
    fastest = min(experts, key=lambda e: (problem.latency((e,)), problem.energy((e,)), e))
    return {"least_energy": _single(problem, frugal), "least_latency": _single(problem, fastest)}


def _apart(cost: float, budget: float) -> tuple[str, str]:
    """``cost`` and ``budget`` printed with 6 significant digits, or as many more as it takes
    to tell them apart (a cost just over its budget read "needs 0.3 J (budget 0.3 J)")."""
    for digits in (6, 9, 12, 17):
        shown = f"{cost:.{digits}g}", f"{budget:.{digits}g}"
        if shown[0] != shown[1] or cost == budget:
            return shown
    return shown


def _infeasible_reason(problem: SelectionProblem, energy_budget: float, latency_budget: float):
    cheap = _cheapest(problem)
    frugal, fastest = cheap["least_energy"], cheap["least_latency"]
    cost_e, budget_e = _apart(frugal["energy_j"], energy_budget)
    cost_l, budget_l = _apart(fastest["latency_ms"], latency_budget)
    need_e = f"the least-energy expert {frugal['experts'][0]} needs {cost_e} J"
    need_l = f"the fastest expert {fastest['experts'][0]} needs {cost_l} ms"
    have_e = f"budget {budget_e} J"
    have_l = f"budget {budget_l} ms"
    over_e = frugal["energy_j"] > budget_limit(energy_budget)
    over_l = fastest["latency_ms"] > budget_limit(latency_budget)
    if over_e and over_l:
        return f"no expert subset fits: {need_e} ({have_e}) and {need_l} ({have_l})"
    if over_e:
        return f"no expert subset fits the energy budget: {need_e} ({have_e})"
    if over_l:
        return f"no expert subset fits the latency budget: {need_l} ({have_l})"
    return (
        f"no single expert fits both budgets ({have_e}, {have_l}): {need_e} but "
        f"{frugal['latency_ms']:.6g} ms, {need_l} but {fastest['energy_j']:.6g} J"
    )


def _print_tables(problem, chosen, baselines, budgets, solve_ms) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    title = (
        f"MoE² selection: energy budget {budgets['energy_budget_j']:.6g} J, "
        f"latency budget {budgets['latency_budget_ms']:.6g} ms"
    )
    columns = ("subset", "experts", "quality", "vs optimum", "energy J", "latency ms")
    table = Table(*columns, title=title)
    rows = [("exact optimum" if chosen.exact else "best found", chosen)] + list(baselines.items())
    for name, sel in rows:
        if sel is None:
            table.add_row(name, "(does not fit)", "-", "-", "-", "-")
            continue
        names = plain(", ".join(problem.names[e] for e in sel.experts))
        ratio = f"{sel.quality / chosen.quality:.1%}" if chosen.quality > 0 else "-"
        table.add_row(
            name,
            names,
            f"{sel.quality:.4f}",
            ratio,
            f"{sel.energy_j:.4g}",
            f"{sel.latency_ms:.4g}",
        )
    console.print(table)
    how = (
        f"solved exactly in {solve_ms:.1f} ms"
        if chosen.exact
        else f"NOT exact: the search stopped at its {budgets['time_limit_s']:.6g} s time limit "
        f"after {solve_ms:.1f} ms; the optimum's quality is at most "
        f"{chosen.quality + chosen.gap:.4f} (gap {chosen.gap:.4f})"
    )
    console.print(
        plain(
            f"chosen: {', '.join(problem.names[e] for e in chosen.experts)}; predicted "
            f"quality {chosen.quality:.4f}; {how} ({chosen.evaluated} subsets evaluated)"
        )
    )


def register(app: typer.Typer) -> None:
    """Add ``select`` to the CLI."""
    app.command("select")(select)
