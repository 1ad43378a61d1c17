"""The MoE² expert-subset problem: experts' costs, the aggregation cost, gate and correctness.

Experts ``e = 0..N-1``; calibration samples ``i = 0..M-1``. For a non-empty subset ``S``
(sorted index tuple), with ``c_e = energy_j[e] + tx_energy_j[e]`` and
``d_e = latency_ms[e] + tx_latency_ms[e]`` (each one float64 addition):

- ``E(S) = ((0.0 + c_s1) + c_s2) + ...``: accumulated in increasing index order, float64;
- ``L(S) = (max_{e∈S} d_e + base_ms) + per_expert_ms * |S|``, float64, left to right;
- ``Q(S) = mean_i( Σ_{e∈S} gate[i,e]·p_true[i,e] / Σ_{e∈S} gate[i,e] )``: the gate renormalized
  over ``S``; numerator and denominator accumulated in index order, then numpy's mean.

``S`` fits budgets ``(B_E, B_L)`` when ``E(S) <= limit(B_E) and L(S) <= limit(B_L)``, where
``limit(B) = B + FIT_TOLERANCE·max(1, B)`` (``budget_limit``): sums the formulation leaves
unordered round differently in another order (``0.1 + 0.2`` is not ``0.3``), so a cost within
a relative 1e-12 of its budget fits it, as qualities within ``TIE_TOLERANCE`` tie.

Each gate row is scaled by a power of two so that its largest weight lies in [0.5, 1)
(``scaled_rows``): ``Q`` is a ratio per sample, so its bits do not change, and weights too small
or too large for float64 sums (1e-300 or 1e308) are read as written. A zero weight reads as
``ZERO_GATE_WEIGHT`` of its row's largest, below every positive weight, which must be at least
``MIN_GATE_RATIO`` of the row's largest (a zero never outweighs a real weight).
The dataclasses hold no file I/O; reading, validating and writing the JSON form live in the
functions below them (``read_problem``, ``problem_from_dict``, ``problem_to_dict``,
``write_problem``). The JSON form::

    {"experts": [{"name", "energy_j", "latency_ms", "tx_energy_j", "tx_latency_ms"}, ...],
     "aggregation": {"base_ms", "per_expert_ms"},
     "gate": [[float] * N] * M, "p_true": [[float] * N] * M}
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ganglion.models.errors import GanglionError, file_problem
from ganglion.runtime.atomic import atomic_file

MAX_EXPERTS = 64  # the exact solver's limit; a larger problem is refused with a one-line error
MAX_SAMPLES = 20_000  # calibration rows (the solver keeps ~15 float64 arrays [N, M])
MAX_FILE_BYTES = 128 * 2**20  # a problem file larger than this is refused before parsing
EXPERT_FIELDS = ("name", "energy_j", "latency_ms", "tx_energy_j", "tx_latency_ms")
MAX_NAME_CHARS = 256  # an expert's name (tables wrap names; a megabyte-long one took minutes)
AGGREGATION_FIELDS = ("base_ms", "per_expert_ms")
PROBLEM_FIELDS = ("experts", "aggregation", "gate", "p_true")
# A zero gate weight in a problem file is read as this fraction of its row's largest weight
# (below its smallest positive weight: ``MIN_GATE_RATIO``), so a subset whose
# weights on a sample are all zero scores that sample by its experts' mean p_true (the limit of
# equal small weights), not 0/0.
ZERO_GATE_WEIGHT = 1e-200
# A positive gate weight below this fraction of its row's largest is refused (write 0 for a
# weight that should not count): the solver's sums and bounds multiply weights by p_true and by
# each other, and a weight near float64's smallest loses its digits there (a subnormal 1e-307
# read as 5e-324 scored a sample 1.0 where it was 0.6, and cut the branch of the optimum).
MIN_GATE_RATIO = 1e-150
FIT_TOLERANCE = 1e-12  # relative: a cost this close above its budget fits (``budget_limit``)
# Commas and brackets a problem file may hold before it is parsed: a problem at the limits has
# about 2·MAX_SAMPLES·MAX_EXPERTS; names may hold a few thousand more. Bounds what ``json``
# builds (a 16 MB file of empty rows took 460 MB, a 120 MB one 3 GB).
MAX_SEPARATORS = 2 * MAX_SAMPLES * (MAX_EXPERTS + 1) + 8192


class SelectionProblemError(GanglionError):
    """A selection problem or budget is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Expert:
    """One expert's costs: compute (``energy_j``, ``latency_ms``) plus transmission (``tx_*``)."""

    name: str
    energy_j: float  # J per request, compute
    latency_ms: float  # ms per request, compute
    tx_energy_j: float  # J per request, moving input and output
    tx_latency_ms: float  # ms per request, moving input and output


@dataclass(frozen=True, eq=False)
class SelectionProblem:
    """Experts, aggregation ``base_ms + per_expert_ms·|S|``, gate ``[M, N]``, p_true ``[M, N]``.

    ``gate[i, e] > 0`` is the gate's weight for expert ``e`` on sample ``i`` (trained on the full
    set); ``p_true[i, e]`` in ``[0, 1]`` the probability ``e`` gives sample ``i``'s true label.
    """

    experts: tuple[Expert, ...]
    base_ms: float
    per_expert_ms: float
    gate: np.ndarray  # [M, N] float64
    p_true: np.ndarray  # [M, N] float64
    cost_j: np.ndarray = field(init=False, repr=False)  # [N] c_e = energy_j + tx_energy_j
    delay_ms: np.ndarray = field(init=False, repr=False)  # [N] d_e = latency_ms + tx_latency_ms

    def __post_init__(self) -> None:
        n = len(self.experts)
        if not 1 <= n <= MAX_EXPERTS:
            raise ValueError(f"expected 1..{MAX_EXPERTS} experts, got {n}")
        names = [x.name for x in self.experts]
        if len(set(names)) != n or not all(isinstance(x, str) and x for x in names):
            raise ValueError(f"expert names: expected distinct non-empty strings, got {names}")
        for name in names:
            if (problem := name_problem(name)) is not None:
                raise ValueError(f"expert name {_shown(name)}: {problem}")
        for label in ("gate", "p_true"):
            a = np.array(getattr(self, label), dtype=np.float64)
            if a.ndim != 2 or a.shape[1] != n or a.shape[0] < 1:
                raise ValueError(f"{label}: expected shape [M >= 1, {n}], got {list(a.shape)}")
            object.__setattr__(self, label, a)
        if self.gate.shape != self.p_true.shape:
            raise ValueError(f"gate {self.gate.shape} and p_true {self.p_true.shape} differ")
        if not (np.isfinite(self.gate).all() and (self.gate >= 0).all()):
            raise ValueError("gate: expected finite entries >= 0")
        if not (self.gate.max(axis=1) > 0).all():
            raise ValueError("gate: expected a positive entry in every row")
        if tiny_gate_weights(self.gate).any():
            raise ValueError(
                f"gate: expected each entry 0 or at least {MIN_GATE_RATIO:g} of its row's largest"
            )
        object.__setattr__(self, "gate", scaled_rows(self.gate))
        self.gate.setflags(write=False)
        self.p_true.setflags(write=False)
        if not ((self.p_true >= 0).all() and (self.p_true <= 1).all()):
            raise ValueError("p_true: expected entries in [0, 1]")
        costs = [self.base_ms, self.per_expert_ms]
        costs += [getattr(x, f) for x in self.experts for f in EXPERT_FIELDS[1:]]
        if not all(math.isfinite(c) and c >= 0 for c in costs):
            raise ValueError("costs: expected finite values >= 0")
        cost = np.array([x.energy_j + x.tx_energy_j for x in self.experts])
        delay = np.array([x.latency_ms + x.tx_latency_ms for x in self.experts])
        if not math.isfinite(sum(float(c) for c in cost)):  # E of every subset is at most it
            raise ValueError("costs: the experts' energy_j + tx_energy_j sum beyond float64")
        if not math.isfinite((delay.max() + self.base_ms) + self.per_expert_ms * n):
            raise ValueError(
                "costs: the slowest expert's latency_ms + tx_latency_ms with the aggregation "
                "is beyond float64"
            )
        cost.setflags(write=False)
        delay.setflags(write=False)
        object.__setattr__(self, "cost_j", cost)
        object.__setattr__(self, "delay_ms", delay)

    @property
    def n_experts(self) -> int:
        """N, the number of experts."""
        return len(self.experts)

    @property
    def n_samples(self) -> int:
        """M, the number of calibration samples."""
        return int(self.gate.shape[0])

    @property
    def names(self) -> tuple[str, ...]:
        """Expert names in index order."""
        return tuple(x.name for x in self.experts)

    def energy(self, subset: Sequence[int]) -> float:
        """E(S): ``c_e`` summed in increasing index order, float64."""
        total = 0.0
        for e in sorted(subset):
            total += float(self.cost_j[e])
        return total

    def latency(self, subset: Sequence[int]) -> float:
        """L(S) = (max d_e + base_ms) + per_expert_ms·|S|, float64, left to right."""
        slowest = max(float(self.delay_ms[e]) for e in subset)
        return (slowest + self.base_ms) + self.per_expert_ms * len(subset)

    def quality(self, subset: Sequence[int]) -> float:
        """Q(S): mean over samples of the gate-renormalized probability of the true label."""
        members = sorted(subset)
        num = np.zeros(self.n_samples)
        den = np.zeros(self.n_samples)
        for e in members:
            num += self.gate[:, e] * self.p_true[:, e]
            den += self.gate[:, e]
        return float(np.mean(num / den))

    def fits(self, subset: Sequence[int], energy_budget: float, latency_budget: float) -> bool:
        """Whether a non-empty ``subset`` meets both budgets (within ``budget_limit``)."""
        return self.energy(subset) <= budget_limit(energy_budget) and self.latency(
            subset
        ) <= budget_limit(latency_budget)


def budget_limit(budget: float) -> float:
    """The largest E or L that fits ``budget``: ``budget + FIT_TOLERANCE·max(1, budget)``
    (infinity: no budget); ValueError for NaN or a negative budget."""
    if not budget >= 0:
        raise ValueError(f"a budget must be a number >= 0 (inf: none), got {budget}")
    return budget + FIT_TOLERANCE * max(1.0, budget)


def tiny_gate_weights(gate: np.ndarray) -> np.ndarray:
    """Where ``gate`` [M, N] holds a positive weight below ``MIN_GATE_RATIO`` of its row's
    largest (refused: see ``MIN_GATE_RATIO``)."""
    return (gate > 0) & (gate < gate.max(axis=1, keepdims=True) * MIN_GATE_RATIO)


def scaled_rows(gate: np.ndarray) -> np.ndarray:
    """``gate`` [M, N] (finite, >= 0, a positive entry per row, none tiny:
    ``tiny_gate_weights``) with each row multiplied by the power of two that puts its largest
    entry in [0.5, 1): exact, so every ratio ``Q`` takes is unchanged, and no row's sums
    overflow or underflow. A zero reads as ``ZERO_GATE_WEIGHT``, below every positive weight
    of its row (each at least ``MIN_GATE_RATIO`` / 2 after scaling)."""
    _, exponent = np.frexp(gate.max(axis=1, keepdims=True))
    scaled = np.ldexp(gate, -exponent)
    return np.where(scaled > 0, scaled, ZERO_GATE_WEIGHT)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an expert (over ``MAX_NAME_CHARS`` characters, a lone
    surrogate, a control character), or None."""
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    if not is_text(name):
        return "is not Unicode text (a lone surrogate)"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "holds a control character or a line break"
    return None


def check_budget(value: Any, label: str) -> float:
    """A budget as float; ``SelectionProblemError`` unless a finite number >= 0."""
    if type(value) not in (int, float):
        raise SelectionProblemError(f"{label} must be a number, got {_shown(value)}")
    number = float(value) + 0.0  # -0.0 is 0 (and prints so)
    if not math.isfinite(number) or number < 0:
        raise SelectionProblemError(f"{label} must be a finite number >= 0, got {_shown(value)}")
    return number


def read_problem(path: str | Path) -> SelectionProblem:
    """Read and validate a problem JSON file; errors name the file and the field."""
    data = read_json_file(path, MAX_FILE_BYTES, "a problem", MAX_SEPARATORS)
    return problem_from_dict(data, str(path))


def read_json_file(
    path: str | Path, max_bytes: int, what: str, max_separators: int | None = None
) -> Any:
    """The JSON value in file ``path`` (at most ``max_bytes``, UTF-8, no repeated keys, and at
    most ``max_separators`` commas and brackets, counted before parsing);
    ``SelectionProblemError`` naming the file otherwise. ``what`` names the file's role."""
    source = str(path)
    p = Path(path)
    if (problem := file_problem(p)) is not None:
        raise SelectionProblemError(f"{source}: {problem}")
    size = p.stat().st_size
    if size > max_bytes:
        raise SelectionProblemError(
            f"{source}: {size} bytes, larger than the {max_bytes} bytes {what} may have"
        )
    try:
        data = p.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SelectionProblemError(f"{source}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise SelectionProblemError(f"{source}: cannot be read ({exc.strerror})") from exc
    if max_separators is not None:
        count = data.count(b",") + data.count(b"[") + data.count(b"{")
        if count > max_separators:
            raise SelectionProblemError(
                f"{source}: {count} commas and brackets, more than the {max_separators} "
                f"{what} may have"
            )
    try:
        return json.loads(
            text, object_pairs_hook=FieldReader(source).unique_keys, parse_int=_parse_int
        )
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise SelectionProblemError(f"{source}: not valid JSON ({where}: {exc.msg})") from exc
    except RecursionError as exc:
        raise SelectionProblemError(f"{source}: JSON nested too deeply") from exc


def problem_from_dict(data: Any, source: str = "problem") -> SelectionProblem:
    """Validate the JSON form (parsed) and build the problem; ``source`` prefixes errors."""
    r = FieldReader(source)
    top = r.fields(data, "problem", PROBLEM_FIELDS)
    raw_experts = top["experts"]
    if not isinstance(raw_experts, list) or not raw_experts:
        r.fail("experts", "must be a non-empty list of expert objects")
    if len(raw_experts) > MAX_EXPERTS:
        r.fail(
            "experts",
            f"has {len(raw_experts)} entries; the exact solver takes at most {MAX_EXPERTS}",
        )
    experts = []
    seen: dict[str, int] = {}
    for j, raw in enumerate(raw_experts):
        fields = r.fields(raw, f"experts[{j}]", EXPERT_FIELDS)
        name = fields["name"]
        if not isinstance(name, str) or not name:
            r.fail(f"experts[{j}].name", f"must be a non-empty string, got {_shown(name)}")
        if (problem := name_problem(name)) is not None:
            r.fail(f"experts[{j}].name", f"{problem}: {_shown(name)}")
        if name in seen:
            r.fail(f"experts[{j}].name", f"duplicates experts[{seen[name]}].name {_shown(name)}")
        seen[name] = j
        costs = {f: r.cost(fields[f], f"experts[{j}].{f}") for f in EXPERT_FIELDS[1:]}
        experts.append(Expert(name=name, **costs))
    agg = r.fields(top["aggregation"], "aggregation", AGGREGATION_FIELDS)
    base_ms = r.cost(agg["base_ms"], "aggregation.base_ms")
    per_expert_ms = r.cost(agg["per_expert_ms"], "aggregation.per_expert_ms")
    n = len(experts)
    gate = r.matrix(top["gate"], "gate", n)
    p_true = r.matrix(top["p_true"], "p_true", n)
    if gate.shape[0] != p_true.shape[0]:
        r.fail("p_true", f"has {p_true.shape[0]} rows, gate has {gate.shape[0]} (one per sample)")
    r.entries(gate, "gate", "must be >= 0", gate >= 0)
    largest = gate.max(axis=1)
    r.rows(largest, "gate", "must hold a positive weight (all are 0)", largest > 0)
    r.entries(
        gate,
        "gate",
        f"must be 0 or at least {MIN_GATE_RATIO:g} of its row's largest weight (write 0 for a "
        "weight that should not count)",
        ~tiny_gate_weights(gate),
    )
    r.entries(p_true, "p_true", "must be in [0, 1]", (p_true >= 0) & (p_true <= 1))
    try:
        return SelectionProblem(tuple(experts), base_ms, per_expert_ms, gate, p_true)
    except ValueError as exc:  # what only the whole problem shows: sums beyond float64
        raise SelectionProblemError(f"{source}: {exc}") from None


def problem_to_dict(problem: SelectionProblem) -> dict[str, Any]:
    """The JSON form of ``problem`` (floats round-trip exactly through ``json``)."""
    return {
        "experts": [{f: getattr(x, f) for f in EXPERT_FIELDS} for x in problem.experts],
        "aggregation": {"base_ms": problem.base_ms, "per_expert_ms": problem.per_expert_ms},
        "gate": problem.gate.tolist(),
        "p_true": problem.p_true.tolist(),
    }


def write_problem(problem: SelectionProblem, path: str | Path, force: bool = True) -> Path:
    """Write ``problem`` as JSON atomically (``runtime.atomic``), never inside a bundle; an
    existing ``path`` is replaced unless ``force`` is False (then it is refused)."""
    target = Path(path)
    text = json.dumps(problem_to_dict(problem), allow_nan=False)
    with atomic_file(target, force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


class LongInteger:
    """An integer literal with more digits than Python converts (``sys.int_max_str_digits``,
    4300 by default): ``read_json_file`` keeps it as this marker, not a number, so the field
    holding it is refused by name like any other non-number."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {len(self.digits.lstrip('-'))} digits"


def _parse_int(digits: str) -> int | LongInteger:
    try:
        return int(digits)
    except ValueError:  # over the interpreter's digit limit
        return LongInteger(digits)


def is_text(value: str) -> bool:
    """Whether ``value`` can be written out as UTF-8 (JSON's ``\\ud800`` escapes give lone
    surrogates, which no output can print)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value as a short one-line string for error messages."""
    if isinstance(value, float | LongInteger):
        return repr(value)
    text = json.dumps(value, allow_nan=True, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


class FieldReader:
    """Validation helpers; every failure is one line naming the source and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        raise SelectionProblemError(f"{self.source}: {where} {message}")

    def unique_keys(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """``json`` object hook: refuse an object that repeats a key."""
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                self.fail(f"key {_shown(key)}", "appears twice in one JSON object")
            out[key] = value
        return out

    def fields(self, value: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
        """An object with exactly the keys ``names``."""
        if not isinstance(value, dict):
            self.fail(where, f"must be an object with keys {', '.join(names)}")
        for key in value:
            if key not in names:
                self.fail(where, f"has unknown field {_shown(key)}")
        for key in names:
            if key not in value:
                self.fail(where, f"is missing field {_shown(key)}")
        return value

    def cost(self, value: Any, where: str) -> float:
        """A finite number >= 0 (booleans and strings are refused)."""
        if isinstance(value, LongInteger):
            self.fail(where, f"must be a finite number >= 0, got {_shown(value)}")
        if type(value) not in (int, float):
            self.fail(where, f"must be a number, got {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number < 0:
            self.fail(where, f"must be a finite number >= 0, got {_shown(value)}")
        return number

    def matrix(self, value: Any, where: str, n: int) -> np.ndarray:
        """A list of M rows of n finite numbers, as float64 ``[M, n]``."""
        if not isinstance(value, list) or not value:
            self.fail(where, f"must be a non-empty list of rows of {n} numbers")
        if len(value) > MAX_SAMPLES:
            self.fail(where, f"has {len(value)} rows, more than {MAX_SAMPLES}")
        for i, row in enumerate(value):
            if not isinstance(row, list):
                self.fail(f"{where}[{i}]", f"must be a list of {n} numbers (one per expert)")
            if len(row) != n:
                self.fail(f"{where}[{i}]", f"has {len(row)} entries, expected {n} (one per expert)")
            if not {type(v) for v in row} <= {int, float}:
                j = next(j for j, v in enumerate(row) if type(v) not in (int, float))
                rule = "be finite" if isinstance(row[j], LongInteger) else "be a number"
                self.fail(f"{where}[{i}][{j}]", f"must {rule}, got {_shown(row[j])}")
        try:
            array = np.array(value, dtype=np.float64)
        except OverflowError:  # an integer beyond float64's range
            for i, row in enumerate(value):
                for j, v in enumerate(row):
                    try:
                        float(v)
                    except OverflowError:
                        self.fail(f"{where}[{i}][{j}]", f"must be finite, got {_shown(v)}")
            raise
        self.entries(array, where, "must be finite", np.isfinite(array))
        return array

    def entries(self, array: np.ndarray, where: str, rule: str, ok: np.ndarray) -> None:
        """Fail on the first entry where ``ok`` is false."""
        if not ok.all():
            i, j = (int(k) for k in np.argwhere(~ok)[0])
            self.fail(f"{where}[{i}][{j}]", f"{rule}, got {_shown(float(array[i, j]))}")

    def rows(self, values: np.ndarray, where: str, rule: str, ok: np.ndarray) -> None:
        """Fail on the first row where ``ok`` is false."""
        if not ok.all():
            i = int(np.argwhere(~ok)[0, 0])
            self.fail(f"{where}[{i}]", f"{rule}, got {_shown(float(values[i]))}")
