"""The manifest: what a deployable program is, its named tensors, time semantics and provenance.

Plain dataclasses with JSON (de)serialization and no torch, so a device that only runs ONNX
reads it. Every field is range-checked on construction, and a bad one is a ``BundleError``
naming the field (``manifest.time.timesteps must be ...``).

Kinds: ``spiking`` (spiking graphs: timesteps, dt, encoding, decoding), ``sequence`` (token
models: one token per step, state carried between tokens), ``dense`` (one call, no time), and
``ensemble`` (a composite: member programs plus a gate).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ganglion.models.errors import BundleError, GanglionError

T = TypeVar("T")  # ``_built``'s dataclass

FORMAT_VERSION = 2
KINDS = ("spiking", "sequence", "dense", "ensemble")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
ENCODINGS = ("none", "direct", "rate", "events")
DECODINGS = ("none", "count", "membrane")
NUMERICS = ("float32", "loihi2-fixed")
MAX_RANK = 8
MAX_DIM = 1 << 24  # a declared dimension above this is refused before anything is allocated
MAX_TIMESTEPS = 1 << 20
MAX_TENSORS = 4096
DEFAULT_DT = 1e-4  # seconds per timestep: snnTorch's NIR export convention
# Simulation conventions of an imported NIR graph (``SpikingTime.semantics``; meanings in
# ``converters/nir_semantics.py``): each name's allowed values; "seconds" is a positive number.
SEMANTICS: dict[str, tuple[Any, ...]] = {
    "like": ("nir", "snntorch", "norse", "sinabs", "spikingjelly", "lava"),
    "dt": ("seconds",),
    "dt_leaky": ("seconds", None),
    "decay": ("euler", "exact"),
    "reset": ("zero", "subtract"),
    "reset_delay": (0, 1),
    "fire": ("gt", "ge"),
    "v_init": ("zero", "leak", "reset"),
    "spikes_per_step": ("one", "many"),
    "synaptic_delay": (0, 1),
    "lower_bound": ("none", "threshold"),
    "synaptic_input": ("euler", "jump"),
}
NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
# Binning of an event stream into frames (``SpikingTime.events``): each field's inclusive range.
# Exactly one slicing field: a window in microseconds, a number of events, or a number of bins.
EVENT_SENSOR_FIELDS = {"width": (1, 4096), "height": (1, 4096), "channels": (1, 2)}
EVENT_SLICINGS = {
    "time_window": (1, 1 << 40),
    "event_count": (1, 1 << 31),
    "n_time_bins": (1, 1 << 16),
}


def _require(ok: bool, where: str, what: str, got: object) -> None:
    if not ok:
        raise BundleError(f"{where} must be {what}, got {got!r}")


def _int(value: object, where: str, low: int, high: int) -> int:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        where,
        f"an integer in [{low}, {high}]",
        value,
    )
    return int(value)  # type: ignore[call-overload]


def _float(value: object, where: str, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not positive or value > 0)  # type: ignore[operator]
    _require(ok, where, "a finite positive number" if positive else "a finite number", value)
    return float(value)  # type: ignore[arg-type]


def _semantics(value: object) -> dict[str, Any]:
    """``manifest.time.semantics``: known names only, each with an allowed value."""
    where = "manifest.time.semantics"
    _require(isinstance(value, dict), where, "an object", type(value).__name__)
    checked: dict[str, Any] = {}
    for name, v in value.items():  # type: ignore[union-attr]
        _require(name in SEMANTICS, f"{where} key", f"one of {', '.join(SEMANTICS)}", name)
        allowed = SEMANTICS[name]
        if "seconds" in allowed and v is not None:
            checked[name] = _float(v, f"{where}.{name}", positive=True)
            continue
        ok = v in allowed and type(v) is type(next(a for a in allowed if a == v))
        _require(ok, f"{where}.{name}", f"one of {', '.join(map(str, allowed))}", v)
        checked[name] = v
    return checked


def check_event_binning(
    value: object, where: str = "manifest.time.events", error: type[GanglionError] = BundleError
) -> dict[str, int]:
    """An event binning (``SpikingTime.events``) with every field range-checked by name: the
    sensor's ``width`` and ``height``, ``channels`` (2: OFF and ON apart, 1: together) and
    exactly one of ``time_window`` (µs), ``event_count`` or ``n_time_bins``. Raises ``error``."""
    try:
        _require(isinstance(value, dict), where, "an object", type(value).__name__)
        fields = dict(value)  # type: ignore[call-overload]
        known = {**EVENT_SENSOR_FIELDS, **EVENT_SLICINGS}
        unknown = sorted(set(fields) - set(known))
        _require(not unknown, f"{where} keys", f"among {', '.join(known)}", unknown)
        slicing = [name for name in EVENT_SLICINGS if fields.get(name) is not None]
        _require(
            len(slicing) == 1, where, f"given exactly one of {', '.join(EVENT_SLICINGS)}", slicing
        )
        fields.setdefault("channels", 2)
        checked = {}
        for name in (*EVENT_SENSOR_FIELDS, slicing[0]):
            low, high = known[name]
            _require(name in fields, where, f"given {name!r}", sorted(fields))
            checked[name] = _int(fields[name], f"{where}.{name}", low, high)
        return checked
    except BundleError as exc:
        raise error(str(exc)) from None


def _choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    _require(value in choices, where, f"one of {', '.join(choices)}", value)
    return str(value)


@dataclass
class TensorSpec:
    """A named tensor. ``shape``: the first -1 is the batch axis; any other -1 is a dimension
    that varies between calls (a KV cache's length). Shapes are those of one ``step``; how
    ``run`` adds a time axis is the kind's time semantics."""

    name: str
    shape: list[int]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.check("tensor")

    def check(self, where: str) -> None:
        """Raise BundleError naming ``where`` if a field is out of range."""
        _require(
            isinstance(self.name, str) and bool(NAME.match(self.name)),
            f"{where}.name",
            "1-128 letters, digits or _.:-",
            self.name,
        )
        where = f"{where} {self.name!r}"
        _require(
            isinstance(self.shape, list | tuple) and len(self.shape) <= MAX_RANK,
            f"{where} shape",
            f"a list of at most {MAX_RANK} dimensions",
            self.shape,
        )
        self.shape = [_int(d, f"{where} shape", -1, MAX_DIM) for d in self.shape]
        self.dtype = _choice(self.dtype, f"{where} dtype", DTYPES)

    @property
    def batched(self) -> bool:
        """True when axis 0 is the batch axis."""
        return bool(self.shape) and self.shape[0] == -1


# the SpikingTime fields a graph.nir's ``ganglion_time`` metadata carries (export and import)
NIR_TIME_FIELDS = ("timesteps", "dt", "encoding", "decoding", "seed", "delay")


@dataclass
class SpikingTime:
    """Time semantics of spiking programs.

    encoding: "direct" (the same input current every timestep), "rate" (seeded Bernoulli
    spikes), "none" (inputs are time-major [T, batch, ...]) or "events" (time-major frames
    [T, batch, channels, height, width] of an event stream binned as ``events`` says, see
    ``check_event_binning``; T is ``timesteps`` when it slices into ``n_time_bins``, else the
    stream's own length). decoding: "count" (spike count of the output layer), "membrane"
    (mean output current over T) or "none" (outputs time-major). ``run`` executes T + delay
    steps: output step t + delay answers input step t (inputs continue: the same current,
    further rate draws, or zeros for time-major input) and the first ``delay`` outputs are
    dropped.
    """

    timesteps: int = 1
    dt: float = DEFAULT_DT  # seconds per timestep, used to discretize continuous-time NIR neurons
    encoding: str = "none"
    decoding: str = "none"
    seed: int = 0  # seed of the rate encoder
    delay: int = 0  # steps from an input to the output it drives (Loihi 2: synaptic layers)
    semantics: dict[str, Any] = field(default_factory=dict)  # NIR import conventions (SEMANTICS)
    events: dict[str, int] | None = None  # event binning, with encoding "events" only

    def __post_init__(self) -> None:
        self.timesteps = _int(self.timesteps, "manifest.time.timesteps", 1, MAX_TIMESTEPS)
        self.delay = _int(self.delay, "manifest.time.delay", 0, 1024)
        self.dt = _float(self.dt, "manifest.time.dt", positive=True)
        self.encoding = _choice(self.encoding, "manifest.time.encoding", ENCODINGS)
        self.decoding = _choice(self.decoding, "manifest.time.decoding", DECODINGS)
        self.seed = _int(self.seed, "manifest.time.seed", 0, 2**63 - 1)
        self.semantics = _semantics(self.semantics)
        if self.encoding != "events":
            _require(self.events is None, "manifest.time.events", "absent", self.events)
            return
        self.events = check_event_binning(self.events)
        bins = self.events.get("n_time_bins", self.timesteps)
        _require(
            bins == self.timesteps,
            "manifest.time.timesteps",
            f"{bins} (n_time_bins)",
            self.timesteps,
        )

    @property
    def time_major(self) -> bool:
        """True when ``run`` takes [T, batch, ...] inputs (frames of events, or no encoding)."""
        return self.encoding in ("none", "events")


@dataclass
class SequenceTime:
    """Time semantics of token programs: ``run`` takes [batch, T] ids, ``step`` one token.

    vocab_size: token ids are in [0, vocab_size). autoregressive: outputs are next-token
    logits, so the generation layer can sample. chunk: tokens per call of the parallel form
    when prefilling (0: the whole prompt at once). context: the longest sequence accepted
    (0: unbounded, constant-memory recurrent state).
    """

    vocab_size: int = 256
    autoregressive: bool = True
    chunk: int = 0
    context: int = 0

    def __post_init__(self) -> None:
        self.vocab_size = _int(self.vocab_size, "manifest.time.vocab_size", 1, MAX_DIM)
        _require(
            isinstance(self.autoregressive, bool),
            "manifest.time.autoregressive",
            "true or false",
            self.autoregressive,
        )
        self.chunk = _int(self.chunk, "manifest.time.chunk", 0, MAX_DIM)
        self.context = _int(self.context, "manifest.time.context", 0, MAX_DIM)


TIME_TYPES: dict[str, type] = {"spiking": SpikingTime, "sequence": SequenceTime}
Time = SpikingTime | SequenceTime | None


@dataclass
class MemberRef:
    """A member program of a composite bundle: stored inside it under ``members/<name>``
    (``path`` empty) or referenced by a path relative to the bundle and inside it (no absolute
    path, no ``..``); ``sha256`` is the digest of the member's manifest.json, which pins every
    file of the member."""

    name: str
    sha256: str
    path: str = ""

    def __post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and bool(NAME.match(self.name)),
            "manifest.members name",
            "1-128 letters, digits or _.:-",
            self.name,
        )
        _require(
            isinstance(self.sha256, str) and bool(re.fullmatch(r"[0-9a-f]{64}", self.sha256)),
            f"manifest.members {self.name!r} sha256",
            "64 hex digits",
            self.sha256,
        )
        _require(
            isinstance(self.path, str),
            f"manifest.members {self.name!r} path",
            "a string",
            self.path,
        )
        absolute = self.path.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", self.path))
        _require(
            not absolute and ".." not in re.split(r"[/\\]", self.path),
            f"manifest.members {self.name!r} path",
            "relative to the bundle and inside it (not absolute, no '..')",
            self.path,
        )


@dataclass
class Manifest:
    """Everything a backend needs to know about a program besides its weights."""

    kind: str
    architecture: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    time: Time = None
    state: list[TensorSpec] = field(default_factory=list)
    numerics: str = "float32"  # "float32" or "loihi2-fixed"
    provenance: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    members: list[MemberRef] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    format_version: int = FORMAT_VERSION
    # the largest batch the program takes, where its network was exported with a bounded batch
    # axis (torch refuses more); None: no bound of its own. Every backend's session checks it.
    max_batch: int | None = None
    # input name -> [low, high]: the integers an integer input may hold (an embedding's rows,
    # for a dense program from .pt2: torch refuses others, ONNX's Gather reads a negative index
    # from the table's end). Every backend's session checks them.
    value_ranges: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = _choice(self.kind, "manifest.kind", KINDS)
        _require(
            isinstance(self.architecture, str) and bool(NAME.match(self.architecture)),
            "manifest.architecture",
            "a name",
            self.architecture,
        )
        self.numerics = _choice(self.numerics, "manifest.numerics", NUMERICS)
        expected_time = TIME_TYPES.get(self.kind)
        if self.kind == "ensemble":  # an ensemble of token models has their time semantics
            _require(
                self.time is None or isinstance(self.time, SequenceTime),
                "manifest.time",
                "absent, or sequence time semantics for an ensemble",
                self.time,
            )
        elif expected_time is None:
            _require(
                self.time is None, "manifest.time", f"absent for {self.kind} programs", self.time
            )
        else:
            _require(
                isinstance(self.time, expected_time),
                "manifest.time",
                f"{self.kind} time semantics",
                self.time,
            )
        _require(len(self.inputs) >= 1, "manifest.inputs", "at least one tensor", self.inputs)
        _require(len(self.outputs) >= 1, "manifest.outputs", "at least one tensor", self.outputs)
        for group in ("inputs", "outputs", "state"):
            specs = getattr(self, group)
            _require(
                len(specs) <= MAX_TENSORS,
                f"manifest.{group}",
                f"at most {MAX_TENSORS} tensors",
                len(specs),
            )
            names = [s.name for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            _require(not dupes, f"manifest.{group}", "uniquely named", dupes)
        if self.max_batch is not None:
            self.max_batch = _int(self.max_batch, "manifest.max_batch", 1, 2**31)
        self.value_ranges = _value_ranges(self.value_ranges, self.inputs)
        members = [m.name for m in self.members]
        _require(len(set(members)) == len(members), "manifest.members", "uniquely named", members)
        _require(
            self.kind == "ensemble" or not self.members,
            "manifest.members",
            "empty except for ensemble programs",
            members,
        )

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name`` (KeyError if there is none)."""
        return {s.name: s for s in self.inputs}[name]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the manifest (time semantics tagged with their kind)."""
        data = dataclasses.asdict(self)
        for name in ("max_batch", "value_ranges"):  # manifests without them stay as they were
            if not data[name]:
                del data[name]
        if self.time is not None:
            tag = "spiking" if isinstance(self.time, SpikingTime) else "sequence"
            data["time"] = {"kind": tag, **dataclasses.asdict(self.time)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a manifest dict, with a one-line BundleError naming a bad or missing field.

        Reads format 1 (spiking-only time semantics, no members) as well as format 2.
        """
        if not isinstance(data, dict):
            raise BundleError("manifest: expected a JSON object")
        version = _int(data.get("format_version", 1), "manifest.format_version", 1, 2**31)
        if version > FORMAT_VERSION:
            raise BundleError(
                f"manifest format {version} is newer than this Ganglion reads ({FORMAT_VERSION})"
            )
        try:
            kind = data["kind"]
            return cls(
                kind=kind,
                architecture=data["architecture"],
                inputs=_specs(data["inputs"], "manifest.inputs"),
                outputs=_specs(data["outputs"], "manifest.outputs"),
                time=_time(kind, data.get("time")),
                state=_specs(data.get("state", []), "manifest.state"),
                numerics=data.get("numerics", "float32"),
                provenance=_object(data.get("provenance", {}), "manifest.provenance"),
                report=_object(data.get("report", {}), "manifest.report"),
                members=[
                    _built(MemberRef, m, "manifest.members[]")
                    for m in _list(data.get("members", []), "manifest.members")
                ],
                artifacts=_artifacts(data.get("artifacts", {})),
                format_version=FORMAT_VERSION,
                max_batch=data.get("max_batch"),
                value_ranges=_object(data.get("value_ranges", {}), "manifest.value_ranges"),
            )
        except KeyError as exc:
            raise BundleError(f"manifest is malformed: no field {exc.args[0]!r}") from exc
        except TypeError as exc:  # an unknown or missing field inside a nested object
            raise BundleError(f"manifest is malformed: {exc}") from exc


def _value_ranges(value: object, inputs: list[TensorSpec]) -> dict[str, list[int]]:
    """``value`` as checked ``value_ranges``: integer inputs' names to [low, high]."""
    ranges = _object(value, "manifest.value_ranges")
    integer = {s.name for s in inputs if s.dtype.startswith(("int", "uint"))}
    out = {}
    for name, bounds in ranges.items():
        where = f"manifest.value_ranges {name!r}"
        _require(name in integer, where, "an integer input of the program", name)
        pair = _list(bounds, where)
        _require(len(pair) == 2, where, "[low, high]", pair)
        low, high = (_int(b, where, -(2**63), 2**63 - 1) for b in pair)
        _require(low <= high, where, "[low, high] with low <= high", pair)
        out[name] = [low, high]
    return out


def _list(value: object, where: str) -> list[Any]:
    _require(isinstance(value, list), where, "a list", type(value).__name__)
    return value  # type: ignore[return-value]


def _object(value: object, where: str) -> dict[str, Any]:
    _require(isinstance(value, dict), where, "an object", type(value).__name__)
    return dict(value)  # type: ignore[call-overload]


def _built(cls: type[T], value: object, where: str) -> T:
    """``cls`` (a dataclass) from the JSON object ``value``; BundleError naming ``where`` and
    a field it does not have (shown with repr: a key may hold a newline) or one it lacks."""
    fields = _object(value, where)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise BundleError(f"manifest is malformed: {where} has no field {unknown[0]!r}")
    missing = [
        name
        for name, f in known.items()
        if name not in fields
        and f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise BundleError(f"manifest is malformed: {where} lacks field {missing[0]!r}")
    return cls(**fields)


def _specs(value: object, where: str) -> list[TensorSpec]:
    items = _list(value, where)
    _require(len(items) <= MAX_TENSORS, where, f"at most {MAX_TENSORS} tensors", len(items))
    return [_built(TensorSpec, item, f"{where}[{i}]") for i, item in enumerate(items)]


def _time(kind: object, value: object) -> Time:
    if kind == "ensemble":  # absent, or its members' sequence time semantics
        kind = "sequence" if value is not None else None
    time_type = TIME_TYPES.get(str(kind))
    if time_type is None:
        return None
    fields = _object(value if value is not None else {}, "manifest.time")
    tagged = fields.pop("kind", kind)
    _require(tagged == kind, "manifest.time.kind", f"{kind!r} like manifest.kind", tagged)
    return _built(time_type, fields, "manifest.time")


def _artifacts(value: object) -> dict[str, str]:
    artifacts = _object(value, "manifest.artifacts")
    for name, digest in artifacts.items():
        _require(
            isinstance(digest, str) and bool(re.fullmatch(r"[0-9a-f]{64}", digest)),
            f"manifest.artifacts[{name!r}]",
            "a SHA-256 (64 hex digits)",
            digest,
        )
    return artifacts
