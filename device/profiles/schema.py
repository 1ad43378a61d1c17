"""`DeviceProfile`: a device's published figures, each with its source or marked as assumed.

A profile is plain data. It is read from JSON/TOML by `registry.py`; this module only holds the
types and checks them. Every figure is named by a dotted key (``peak_ops.fp16``,
``memory_bandwidth``, ``power_modes.MAXN``, ``neuromorphic.energy_per_synop_j``) and that key must
appear either in ``sources`` (where the number comes from) or in ``assumed`` (our estimate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = ("gpu", "jetson", "cpu", "neuromorphic")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


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
    """Per-event energies and throughputs of a neuromorphic chip.

    energy = synops·energy_per_synop_j + neuron_updates·energy_per_neuron_update_j
             + spikes·energy_per_spike_j + static_w·latency
    latency = max(timesteps·min_timestep_s, synops/synops_per_s + neuron_updates/updates_per_s)
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
            raise ProfileError(f"profile {self.name!r}: unknown precisions {sorted(unknown)}")
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
        marked = set(self.sources) | set(self.assumed)
        unsourced = [k for k in self.figure_keys() if k not in marked]
        if unsourced:
            raise ProfileError(
                f"profile {self.name!r}: figures without a source or 'assumed' mark: {unsourced}"
            )

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


def profile_from_dict(data: dict[str, Any], origin: str = "builtin") -> DeviceProfile:
    """Build and check a `DeviceProfile` from parsed JSON/TOML; errors name the profile."""
    name = data.get("name", "<unnamed>")
    required = ["name", "kind", "peak_ops", "memory_bandwidth", "memory_bytes", "power_modes"]
    missing = [k for k in required if k not in data]
    if missing:
        raise ProfileError(f"profile {name!r} ({origin}): missing fields {missing}")
    unknown = sorted(set(data) - {f.name for f in fields(DeviceProfile)})
    if unknown:
        raise ProfileError(f"profile {name!r} ({origin}): unknown fields {unknown}")
    try:
        modes = tuple(
            PowerMode(
                name=str(m["name"]),
                watts=float(m["watts"]),
                nvpmodel_id=None if m.get("nvpmodel_id") is None else int(m["nvpmodel_id"]),
            )
            for m in data["power_modes"]
        )
        neuro = data.get("neuromorphic")
        defaulted = tuple(k for k in ("idle_w", "launch_overhead_s") if k not in data)
        return DeviceProfile(
            name=str(data["name"]),
            display_name=str(data.get("display_name", data["name"])),
            kind=str(data["kind"]),
            peak_ops={str(k): float(v) for k, v in data["peak_ops"].items()},
            memory_bandwidth=float(data["memory_bandwidth"]),
            memory_bytes=float(data["memory_bytes"]),
            power_modes=modes,
            default_mode=str(data.get("default_mode", modes[0].name if modes else "")),
            idle_w=float(data.get("idle_w", 0.0)),
            launch_overhead_s=float(data.get("launch_overhead_s", 0.0)),
            sources={str(k): str(v) for k, v in data.get("sources", {}).items()},
            assumed=tuple(str(k) for k in data.get("assumed", ())) + defaulted,
            neuromorphic=None if neuro is None else NeuromorphicFigures(**neuro),
            notes=str(data.get("notes", "")),
            origin=origin,
            detected=dict(data.get("detected", {})),
        )
    except (KeyError, TypeError) as e:
        raise ProfileError(f"profile {name!r} ({origin}): malformed field: {e}") from e
