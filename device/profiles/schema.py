"""`DeviceProfile`: a device's published figures, each with its source or marked as assumed.

A profile is plain data. It is read from JSON/TOML by `registry.py`; this module only holds the
types and checks them. Every figure is named by a dotted key (``peak_ops.fp16``,
``memory_bandwidth``, ``power_modes.MAXN``, ``neuromorphic.energy_per_synop_j``) and that key must
appear either in ``sources`` (where the number comes from) or in ``assumed`` (our estimate).

Every figure must be a finite number: > 0 where the simulator divides by it or a power limit is
meant (peak ops, bandwidth, memory, mode watts, event rates), >= 0 where nothing can be one
(idle power, overheads, per-event energies); a non-zero figure lies in [1e-30, 1e30], so no
latency or energy derived from figures overflows; a count (a neuromorphic chip's cores, neurons
and synapses per core, bytes per synapse) is a whole number in [1, 1e30]. A neuromorphic chip
has no dense figures: there ``peak_ops``, ``memory_bandwidth`` and ``memory_bytes`` may be 0,
meaning "does not apply".
`profile_from_dict` checks each field's type first; each error is one line naming the origin
(the file), the profile and the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = ("gpu", "jetson", "cpu", "neuromorphic")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# whole numbers in [1, FIGURE_MAX]: the chip's capacity (the chip-fit report divides by them)
NEURO_COUNTS = ("cores", "neurons_per_core", "synapses_per_core", "bytes_per_synapse")
NEURO_RATES = ("synops_per_s", "neuron_updates_per_s")  # > 0: the simulator divides by them


DETECTED_MAX_DEPTH = 8  # ``detected``: nested lists/tables at most this deep
DETECTED_MAX_ITEMS = 1000  # ... holding at most this many values and keys in all
DETECTED_MAX_TEXT = 4096  # ... each string at most this long
FIGURE_MAX = 1e30  # no figure is larger: products and quotients of figures stay finite
FIGURE_MIN_POSITIVE = 1e-30  # no non-zero figure is smaller: nothing divides by a near-zero


class ProfileError(ValueError):
    """A device profile is malformed or a figure has no source."""


@dataclass(frozen=True)
class PowerMode:
    """One power mode: its name, its ``nvpmodel`` id on Jetson (else ``None``), its power limit."""

    name: str
    watts: float
    nvpmodel_id: int | None = None


@dataclass(frozen=True)
class NeuromorphicFigures:
    """Per-event energies and throughputs of a neuromorphic chip, and its capacity.

    energy = synops·energy_per_synop_j + neuron_updates·energy_per_neuron_update_j
             + spikes·energy_per_spike_j + static_w·latency
    latency = max(timesteps·min_timestep_s, synops/synops_per_s + neuron_updates/updates_per_s)
    Capacity (the chip-fit report): ``cores`` per chip, each holding at most
    ``neurons_per_core`` neurons and ``synapses_per_core`` synapses; synaptic memory is counted
    as ``bytes_per_synapse`` per synapse.
    """

    energy_per_synop_j: float
    energy_per_neuron_update_j: float
    energy_per_spike_j: float
    synops_per_s: float
    neuron_updates_per_s: float
    min_timestep_s: float
    static_w: float
    cores: int
    neurons_per_core: int
    synapses_per_core: int
    bytes_per_synapse: int


@dataclass(frozen=True)
class DeviceProfile:
    """A device's figures for the roofline simulator and the profiler.

    peak_ops: dense operations per second by precision (a MAC counts as 2 ops)
    memory_bandwidth: bytes/s; memory_bytes: capacity in bytes
    power_modes: the modes and their limits; default_mode names one of them
    idle_w: power drawn while idle; launch_overhead_s: cost of one dispatched op (kernel launch,
    framework dispatch), paid once per op a call issues (at least once per call)
    neuromorphic: per-event figures, for kind == "neuromorphic"
    sources: figure key → where it comes from; assumed: figure keys we estimated
    """

    name: str
    display_name: str
    kind: str
    peak_ops: dict[str, float]
    memory_bandwidth: float
    memory_bytes: float
    power_modes: tuple[PowerMode, ...]
    default_mode: str
    idle_w: float
    launch_overhead_s: float
    sources: dict[str, str]
    assumed: tuple[str, ...] = ()
    neuromorphic: NeuromorphicFigures | None = None
    notes: str = ""
    origin: str = "builtin"
    detected: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProfileError(
                f"profile {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        unknown = set(self.peak_ops) - set(PRECISIONS)
        if unknown:
            raise ProfileError(
                f"profile {self.name!r}: unknown precisions {_show(sorted(unknown), 300)}"
            )
        if "fp32" not in self.peak_ops:
            raise ProfileError(f"profile {self.name!r}: peak_ops needs an fp32 entry")
        if not self.power_modes:
            raise ProfileError(f"profile {self.name!r}: needs at least one power mode")
        if self.default_mode not in {m.name for m in self.power_modes}:
            raise ProfileError(
                f"profile {self.name!r}: default_mode {self.default_mode!r} is not a power mode"
            )
        if self.kind == "neuromorphic" and self.neuromorphic is None:
            raise ProfileError(f"profile {self.name!r}: a neuromorphic profile needs figures")
        self._check_figures()
        marked = set(self.sources) | set(self.assumed)
        unsourced = [k for k in self.figure_keys() if k not in marked]
        if unsourced:
            raise ProfileError(
                f"profile {self.name!r}: figures without a source or 'assumed' mark: "
                f"{_show(unsourced, 300)}"
            )

    def _check_figures(self) -> None:
        dense = self.kind != "neuromorphic"
        figures = [(f"peak_ops.{p}", v) for p, v in self.peak_ops.items()]
        figures += [
            ("memory_bandwidth", self.memory_bandwidth),
            ("memory_bytes", self.memory_bytes),
        ]
        for key, value in figures:
            _check_number(self.name, key, value, positive=dense)
        names = [m.name for m in self.power_modes]
        if len(set(names)) != len(names) or not all(names):
            raise ProfileError(
                f"profile {self.name!r}: power mode names must be unique and non-empty, "
                f"got {_show(names, 300)}"
            )
        for m in self.power_modes:
            _check_number(self.name, f"power_modes.{m.name}.watts", m.watts, positive=True)
            if m.nvpmodel_id is not None and not _is_count(m.nvpmodel_id, minimum=0):
                raise ProfileError(
                    f"profile {self.name!r}: power_modes.{m.name}.nvpmodel_id must be a whole "
                    f"number >= 0, got {m.nvpmodel_id!r}"
                )
        _check_number(self.name, "idle_w", self.idle_w, positive=False)
        _check_number(self.name, "launch_overhead_s", self.launch_overhead_s, positive=False)
        if self.neuromorphic is not None:
            for key, value in asdict(self.neuromorphic).items():
                if key in NEURO_COUNTS:
                    if not _is_capacity(value):
                        raise ProfileError(
                            f"profile {self.name!r}: neuromorphic.{key} must be a whole number "
                            f"in [1, {FIGURE_MAX:g}], got {_show(value)}"
                        )
                else:
                    positive = key in NEURO_RATES
                    _check_number(self.name, f"neuromorphic.{key}", value, positive=positive)

    def figure_keys(self) -> list[str]:
        """Every figure's dotted key; each must be sourced or assumed."""
        keys = [f"peak_ops.{p}" for p in self.peak_ops]
        keys += ["memory_bandwidth", "memory_bytes", "idle_w", "launch_overhead_s"]
        keys += [f"power_modes.{m.name}" for m in self.power_modes]
        if self.neuromorphic is not None:
            keys += [f"neuromorphic.{k}" for k in asdict(self.neuromorphic)]
        return keys

    def is_assumed(self, key: str) -> bool:
        """Whether the figure ``key`` is our estimate rather than a published number."""
        return key in self.assumed

    def refuses(self, program_kind: str) -> str | None:
        """Why a program of ``program_kind`` (a manifest's kind) cannot run on this device, or
        None. A neuromorphic chip runs spiking programs only: a dense network, a language model
        or an ensemble's gate has no mapping onto its neurons (quantize refuses them too)."""
        if self.kind == "neuromorphic" and program_kind != "spiking":
            return (
                f"{self.name} is a neuromorphic chip and runs spiking programs only, "
                f"not a {program_kind!r} program"
            )
        return None

    def mode(self, name: str | None = None) -> PowerMode:
        """Return the power mode ``name`` (the default mode when ``None``)."""
        wanted = name or self.default_mode
        for m in self.power_modes:
            if m.name == wanted:
                return m
        names = [m.name for m in self.power_modes]
        raise ProfileError(f"profile {self.name!r} has no power mode {wanted!r}; modes: {names}")

    def ops_per_s(self, precision: str) -> float:
        """Peak dense ops/s at ``precision``, falling back to fp32 where not listed."""
        return self.peak_ops.get(precision, self.peak_ops["fp32"])

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data (the same shape `profile_from_dict` reads)."""
        data = asdict(self)
        data["power_modes"] = [asdict(m) for m in self.power_modes]
        data["assumed"] = list(self.assumed)
        if self.neuromorphic is None:
            data.pop("neuromorphic")
        return data


def _check_number(profile: str, key: str, value: object, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float
        ok = False
    if ok and value != 0:
        ok = FIGURE_MIN_POSITIVE <= value <= FIGURE_MAX  # type: ignore[operator]
    elif ok:
        ok = not positive
    if not ok:
        rule = "> 0" if positive else ">= 0"
        raise ProfileError(
            f"profile {profile!r}: {key} must be a finite number {rule}, got {_show(value)} "
            f"(a non-zero figure lies in [{FIGURE_MIN_POSITIVE:g}, {FIGURE_MAX:g}])"
        )


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_capacity(value: object) -> bool:
    """A whole number in [1, FIGURE_MAX]: quotients of counts and figures stay finite."""
    return _is_count(value, minimum=1) and value <= FIGURE_MAX  # type: ignore[operator]


def _show(value: object, limit: int = 60) -> str:
    """A repr of at most ``limit`` characters for an error line (huge ints and deep nesting
    cannot break it)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Fields:
    """Typed access to one parsed profile's fields; each error names the origin and the field."""

    def __init__(self, data: dict[str, Any], origin: str) -> None:
        self.data, self.origin = data, origin
        name = data.get("name")
        self.where = f"{origin}: profile {_show(name if isinstance(name, str) else '<unnamed>')}"

    def fail(self, key: str, must: str, value: object) -> ProfileError:
        key = key if len(key) <= 80 else key[:77] + "..."
        return ProfileError(f"{self.where}: {key} must be {must}, got {_show(value)}")

    def number(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number", value)
        try:
            return float(value)
        except OverflowError as e:
            raise self.fail(key, "a number a float can hold", value) from e

    def text(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a table (an object)", value)
        return value

    def texts(self, value: object, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(key, "a list of strings", value)
        return [self.text(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def detected(self, value: object) -> dict[str, Any]:
        """The ``detected`` table, if it holds only JSON-safe values: strings, finite numbers,
        booleans, null, lists and tables, nested at most `DETECTED_MAX_DEPTH` deep with at most
        `DETECTED_MAX_ITEMS` entries in all."""
        table = self.table(value, "detected")
        count = 0

        def check(v: object, key: str, depth: int) -> None:
            nonlocal count
            count += 1
            if count > DETECTED_MAX_ITEMS:
                raise self.fail("detected", f"at most {DETECTED_MAX_ITEMS} values", "more")
            if isinstance(v, dict | list):
                if depth >= DETECTED_MAX_DEPTH:
                    raise self.fail(key, f"nested at most {DETECTED_MAX_DEPTH} deep", v)
                items = v.items() if isinstance(v, dict) else enumerate(v)
                for k, item in items:
                    check(item, f"{key}.{k}" if isinstance(v, dict) else f"{key}[{k}]", depth + 1)
            elif isinstance(v, str):
                if len(v) > DETECTED_MAX_TEXT:
                    raise self.fail(key, f"a string of at most {DETECTED_MAX_TEXT} characters", v)
            elif isinstance(v, float) and not math.isfinite(v):
                raise self.fail(key, "a finite number", v)
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**63:
                raise self.fail(key, "a number within 64 bits", v)
            elif not isinstance(v, bool | int | float) and v is not None:
                raise self.fail(key, "a string, number, boolean, list or table", v)

        check(table, "detected", 0)
        return dict(table)

    def get(self, key: str, default: object) -> object:
        return self.data.get(key, default)

    def power_mode(self, value: object, i: int) -> PowerMode:
        m = self.table(value, f"power_modes[{i}]")
        unknown = sorted(set(m) - {"name", "watts", "nvpmodel_id"})
        if unknown or "name" not in m or "watts" not in m:
            raise self.fail(f"power_modes[{i}]", "a table of name, watts, nvpmodel_id", m)
        name = self.text(m["name"], f"power_modes[{i}].name")
        nvp = m.get("nvpmodel_id")
        if nvp is not None and not _is_count(nvp, minimum=0):
            raise self.fail(f"power_modes.{name}.nvpmodel_id", "a whole number >= 0", nvp)
        return PowerMode(name, self.number(m["watts"], f"power_modes.{name}.watts"), nvp)

    def neuromorphic(self, value: object) -> NeuromorphicFigures:
        figures = self.table(value, "neuromorphic")
        expected = {f.name for f in fields(NeuromorphicFigures)}
        if set(figures) != expected:
            missing, unknown = sorted(expected - set(figures)), sorted(set(figures) - expected)
            raise ProfileError(
                f"{self.where}: neuromorphic needs exactly {sorted(expected)} "
                f"(missing {missing}, unknown {_show(unknown, 300)})"
            )
        typed: dict[str, Any] = {}
        for key, v in figures.items():
            if key in NEURO_COUNTS:
                if not _is_capacity(v):
                    raise self.fail(
                        f"neuromorphic.{key}", f"a whole number in [1, {FIGURE_MAX:g}]", v
                    )
                typed[key] = v
            else:
                typed[key] = self.number(v, f"neuromorphic.{key}")
        return NeuromorphicFigures(**typed)


def profile_from_dict(data: object, origin: str = "builtin") -> DeviceProfile:
    """Build and check a `DeviceProfile` from parsed JSON/TOML.

    Every field's type and value is checked; an error is a one-line `ProfileError` naming
    ``origin`` (the file), the profile and the field.
    """
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: a profile must be a table (an object), got {_show(data)}")
    f = _Fields(data, origin)
    required = ["name", "kind", "peak_ops", "memory_bandwidth", "memory_bytes", "power_modes"]
    missing = [k for k in required if k not in data]
    if missing:
        raise ProfileError(f"{f.where}: missing fields {missing}")
    unknown = sorted(set(data) - {fl.name for fl in fields(DeviceProfile)})
    if unknown:
        raise ProfileError(f"{f.where}: unknown fields {_show(unknown, 300)}")
    name = f.text(data["name"], "name")
    if not name or name == "auto":
        raise f.fail("name", "a non-empty string other than 'auto' (this machine)", name)
    raw_modes = data["power_modes"]
    if not isinstance(raw_modes, list) or not raw_modes:
        raise f.fail("power_modes", "a non-empty list of tables", raw_modes)
    modes = tuple(f.power_mode(m, i) for i, m in enumerate(raw_modes))
    neuro = data.get("neuromorphic")
    defaulted = tuple(k for k in ("idle_w", "launch_overhead_s") if k not in data)
    peak_ops = f.table(data["peak_ops"], "peak_ops")
    sources = f.table(f.get("sources", {}), "sources")
    try:
        return DeviceProfile(
            name=name,
            display_name=f.text(f.get("display_name", name), "display_name"),
            kind=f.text(data["kind"], "kind"),
            peak_ops={k: f.number(v, f"peak_ops.{k}") for k, v in peak_ops.items()},
            memory_bandwidth=f.number(data["memory_bandwidth"], "memory_bandwidth"),
            memory_bytes=f.number(data["memory_bytes"], "memory_bytes"),
            power_modes=modes,
            default_mode=f.text(f.get("default_mode", modes[0].name), "default_mode"),
            idle_w=f.number(f.get("idle_w", 0.0), "idle_w"),
            launch_overhead_s=f.number(f.get("launch_overhead_s", 0.0), "launch_overhead_s"),
            sources={k: f.text(v, f"sources.{k}") for k, v in sources.items()},
            assumed=tuple(f.texts(f.get("assumed", []), "assumed")) + defaulted,
            neuromorphic=None if neuro is None else f.neuromorphic(neuro),
            notes=f.text(f.get("notes", ""), "notes"),
            origin=origin,
            detected=f.detected(f.get("detected", {})),
        )
    except ProfileError as e:
        if str(e).startswith(origin):
            raise
        raise ProfileError(f"{origin}: {e}") from e
