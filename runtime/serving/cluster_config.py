"""The cluster file (TOML) that ``ganglion coordinate`` and ``ganglion cluster up`` read.

Schema (every key optional unless marked required; paths are relative to the file's folder;
an unknown key, a wrong type or a value out of range is a one-line ``ClusterConfigError``
naming the file and the key)::

    [coordinator]
    host = "127.0.0.1"            # where the coordinator listens (KServe v2 gRPC)
    port = 8000
    device = "auto"               # device profile of the coordinator's host (it runs the gate)
    max_concurrency = 256         # requests admitted at once (RESOURCE_EXHAUSTED beyond)
    call_timeout_ms = 5000        # deadline of one call to a node
    request_timeout_ms = 30000    # a request's whole deadline when its client sets none
    health_interval_ms = 500      # ServerReady + ModelReady probes of every node
    telemetry_interval_ms = 2000  # ganglion.v1 GetTelemetry polls, where a node offers it
    token_file = "token"          # clients of the coordinator must send this bearer token
    [coordinator.link]            # simulated network between the coordinator and the nodes
    mbps = 100.0
    latency_ms = 2.0
    nj_per_bit = 50.0

    [[ensemble]]                  # at least one
    name = "digits-moe"           # required: the model name clients call
    bundle = "digits-moe"         # required: the ensemble bundle (gate, calibration, members)
    energy_budget_j = 5.0         # default budget of a request (omitted: unbounded)
    latency_budget_ms = 100.0

    [[node]]                      # at least one
    name = "orin-a"               # required
    host = "127.0.0.1"
    port = 8101                   # required
    device = "jetson-agx-orin-64gb"  # its device profile: costs until telemetry tells more
    models = ["low", "high"]      # required: ensemble members it hosts, under these names
    start = "serve"               # serve: `cluster up` starts `ganglion serve` on it with the
                                  # members' bundles (simulated energy from its profile)
    backend = "auto"              # serve: --backend (lava for a Loihi 2 node)
    serve_args = []               # serve: more `ganglion serve` options
    token_file = "node-token"     # bearer token of the node (serve: it is started with it)

    [[node]]
    name = "triton-1"
    host = "10.0.0.7"
    port = 8001
    device = "rtx-4090"
    models = ["high"]
    start = "external"            # an existing KServe v2 server (Triton, KServe, another
                                  # ganglion serve) the coordinator only connects to
    tls_ca = "ca.pem"             # call it over TLS, trusting this CA (external nodes only)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ganglion.models.errors import GanglionError, file_problem
from ganglion.models.manifest import Manifest
from ganglion.runtime.bundle import MANIFEST
from ganglion.runtime.serving.settings import check_model_name, grpc_address, is_loopback

if sys.version_info >= (3, 11):  # noqa: UP036 - the coordinator runs on Python 3.10 too
    import tomllib
else:
    import tomli as tomllib

STARTS = ("serve", "external")
MAX_CONFIG_BYTES = 1 << 20


class ClusterConfigError(GanglionError):
    """A cluster file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Link:
    """The simulated network between the coordinator and the nodes (``selection.Link``)."""

    mbps: float = 100.0  # bandwidth, megabits per second
    latency_ms: float = 2.0  # one-way latency per request
    nj_per_bit: float = 50.0  # energy per bit moved


@dataclass(frozen=True)
class CoordinatorConfig:
    """Where the coordinator listens and how it watches the nodes."""

    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # profile of the coordinator's host, which runs the gate
    max_concurrency: int = 256
    call_timeout_ms: float = 5000.0  # one call to a node
    request_timeout_ms: float = 30000.0  # a request whose client sets no deadline
    health_interval_ms: float = 500.0
    telemetry_interval_ms: float = 2000.0
    token_file: Path | None = None
    link: Link = field(default_factory=Link)

    @property
    def address(self) -> str:
        """HOST:PORT as gRPC takes it."""
        return grpc_address(self.host, self.port)


@dataclass(frozen=True)
class EnsembleConfig:
    """An ensemble the coordinator serves, with its default budgets (inf: unbounded)."""

    name: str
    bundle: Path
    energy_budget_j: float = math.inf
    latency_budget_ms: float = math.inf


@dataclass(frozen=True)
class NodeConfig:
    """A node: where it is, what it hosts, its device profile and how ``cluster up`` starts
    it (``serve``) or that it is someone else's server (``external``)."""

    name: str
    port: int
    models: tuple[str, ...]
    host: str = "127.0.0.1"
    device: str = "cpu"
    start: str = "serve"
    backend: str = "auto"
    serve_args: tuple[str, ...] = ()
    token_file: Path | None = None
    tls_ca: Path | None = None

    @property
    def address(self) -> str:
        """HOST:PORT as gRPC takes it."""
        return grpc_address(self.host, self.port)


@dataclass(frozen=True)
class ClusterConfig:
    """The whole file: the coordinator, the ensembles and the nodes."""

    path: Path
    coordinator: CoordinatorConfig
    ensembles: tuple[EnsembleConfig, ...]
    nodes: tuple[NodeConfig, ...]

    def hosts_of(self, model: str) -> list[NodeConfig]:
        """The nodes that host ``model``, in file order."""
        return [n for n in self.nodes if model in n.models]


class _Table:
    """One TOML table being read: typed getters that name the key on failure."""

    def __init__(self, source: str, where: str, data: Any) -> None:
        self.source = source
        self.where = where
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {type(data).__name__}")
        self.data = data

    def fail(self, key: str, message: str) -> NoReturn:
        name = ".".join(p for p in (self.where, key) if p) or "the file"
        raise ClusterConfigError(f"{self.source}: {name} {message}")

    def only(self, *keys: str) -> None:
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            self.fail(unknown[0], f"is not a known key (known: {', '.join(keys)})")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def number(self, key: str, default: float, positive: bool = False) -> float:
        value = self.data.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and not math.isnan(value) and (value > 0 if positive else value >= 0)
        if not ok or (positive and math.isinf(value)):
            what = "a positive number" if positive else "a number >= 0"
            self.fail(key, f"must be {what}, got {value!r}")
        return float(value)

    def budget(self, key: str) -> float:
        """A finite budget >= 0; inf (no budget) when the key is left out."""
        if key not in self.data:
            return math.inf
        value = self.number(key, math.inf)
        if math.isinf(value):
            self.fail(key, "must be a finite number >= 0 (leave it out for no budget), got inf")
        return value

    def integer(self, key: str, default: int | None, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(key, f"must be an integer in [{low}, {high}], got {value!r}")
        return int(value)

    def path(self, key: str, base: Path) -> Path | None:
        if key not in self.data:
            return None
        return base / self.text(key)

    def strings(self, key: str, required: bool) -> tuple[str, ...]:
        value = self.data.get(key, None if required else [])
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"must be a list of non-empty strings, got {value!r}")
        if required and not value:
            self.fail(key, "must name at least one")
        return tuple(value)

    def tables(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            self.fail(key, f"needs at least one [[{key}]] table")
        return value


def _coordinator(top: _Table) -> CoordinatorConfig:
    t = _Table(top.source, "coordinator", top.data.get("coordinator", {}))
    t.only(*CoordinatorConfig.__dataclass_fields__)
    d = CoordinatorConfig()
    link_table = _Table(top.source, "coordinator.link", t.data.get("link", {}))
    link_table.only("mbps", "latency_ms", "nj_per_bit")
    link = Link(
        link_table.number("mbps", Link.mbps, positive=True),
        link_table.number("latency_ms", Link.latency_ms),
        link_table.number("nj_per_bit", Link.nj_per_bit),
    )
    return CoordinatorConfig(
        host=t.text("host", d.host),
        port=t.integer("port", d.port, 0, 65535),
        device=t.text("device", d.device),
        max_concurrency=t.integer("max_concurrency", d.max_concurrency, 1, 1 << 20),
        call_timeout_ms=t.number("call_timeout_ms", d.call_timeout_ms, positive=True),
        request_timeout_ms=t.number("request_timeout_ms", d.request_timeout_ms, positive=True),
        health_interval_ms=t.number("health_interval_ms", d.health_interval_ms, positive=True),
        telemetry_interval_ms=t.number(
            "telemetry_interval_ms", d.telemetry_interval_ms, positive=True
        ),
        token_file=t.path("token_file", _base(top)),
        link=link,
    )


def _base(top: _Table) -> Path:
    """The folder relative paths start from (the file's own)."""
    return Path(top.source).parent


def _ensemble(top: _Table, index: int, data: Any) -> EnsembleConfig:
    t = _Table(top.source, f"ensemble[{index}]", data)
    t.only("name", "bundle", "energy_budget_j", "latency_budget_ms")
    name = _model_name(t, "name")
    bundle = t.path("bundle", _base(top))
    if bundle is None:
        t.fail("bundle", "is required")
    return EnsembleConfig(
        name=name,
        bundle=bundle,
        energy_budget_j=t.budget("energy_budget_j"),
        latency_budget_ms=t.budget("latency_budget_ms"),
    )


def _node(top: _Table, index: int, data: Any) -> NodeConfig:
    t = _Table(top.source, f"node[{index}]", data)
    t.only(*NodeConfig.__dataclass_fields__)
    start = t.text("start", "serve")
    if start not in STARTS:
        t.fail("start", f"must be one of {', '.join(STARTS)}, got {start!r}")
    models = t.strings("models", required=True)
    for j, model in enumerate(models):
        try:
            check_model_name(model)
        except GanglionError as exc:
            t.fail(f"models[{j}]", str(exc))
    tls_ca = t.path("tls_ca", _base(top))
    if tls_ca is not None and start == "serve":
        t.fail("tls_ca", "is for external nodes (cluster up starts its nodes without TLS)")
    return NodeConfig(
        name=_model_name(t, "name"),
        port=t.integer("port", None, 1, 65535),
        models=models,
        host=t.text("host", "127.0.0.1"),
        device=t.text("device", "cpu"),
        start=start,
        backend=t.text("backend", "auto"),
        serve_args=t.strings("serve_args", required=False),
        token_file=t.path("token_file", _base(top)),
        tls_ca=tls_ca,
    )


def _model_name(t: _Table, key: str) -> str:
    name = t.text(key)
    try:
        return check_model_name(name)
    except GanglionError as exc:
        t.fail(key, str(exc))


def _unique(source: str, what: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ClusterConfigError(f"{source}: two {what} tables are named {name!r}")
        seen.add(name)


def parse_cluster_config(text: str, path: Path) -> ClusterConfig:
    """The cluster described by TOML ``text`` (read from ``path``: relative paths and
    messages refer to it)."""
    source = str(path)
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write UTF-8
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClusterConfigError(f"{source}: not valid TOML ({exc})") from None
    top = _Table(source, "", data)
    top.only("coordinator", "ensemble", "node")
    ensembles = [_ensemble(top, i, e) for i, e in enumerate(top.tables("ensemble"))]
    nodes = [_node(top, i, n) for i, n in enumerate(top.tables("node"))]
    _unique(source, "[[ensemble]]", [e.name for e in ensembles])
    _unique(source, "[[node]]", [n.name for n in nodes])
    addresses: dict[tuple[str, int], str] = {}
    for node in nodes:
        other = addresses.setdefault(_listening(node.host, node.port), node.name)
        if other != node.name:
            raise ClusterConfigError(
                f"{source}: nodes {other!r} and {node.name!r} share the address {node.address}"
            )
    coordinator = _coordinator(top)
    own = _listening(coordinator.host, coordinator.port)
    if own in addresses:
        raise ClusterConfigError(
            f"{source}: the coordinator and node {addresses[own]!r} share the address "
            f"{coordinator.address}"
        )
    return ClusterConfig(path, coordinator, tuple(ensembles), tuple(nodes))


def _listening(host: str, port: int) -> tuple[str, int]:
    """Where a server on ``host:port`` listens, as a key two servers must not share: loopback
    names (localhost, 127.0.0.1, ::1) and the wildcards (0.0.0.0, ::) are all this machine."""
    bare = host.strip("[]").lower()
    here = is_loopback(bare) or bare in ("0.0.0.0", "::", "")
    return ("this machine" if here else bare, port)


def read_cluster_config(path: str | Path) -> ClusterConfig:
    """Read and check a cluster file (see the module docstring for its schema)."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise ClusterConfigError(f"{path}: {problem} (a cluster file is TOML)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ClusterConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ClusterConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    config = parse_cluster_config(text, path.resolve())
    for index, ensemble in enumerate(config.ensembles):
        if not (ensemble.bundle / MANIFEST).is_file():
            raise ClusterConfigError(
                f"{config.path}: ensemble[{index}].bundle: no bundle at {ensemble.bundle} "
                f"(a folder with a {MANIFEST})"
            )
    return config


def unhosted_experts(config: ClusterConfig) -> dict[str, list[str]]:
    """Per ensemble, the experts of its bundle that no node hosts (the coordinator answers
    without them: a cluster up should say so). An unreadable bundle is left to the
    coordinator, which names it when it starts."""
    from ganglion.runtime.bundle import open_bundle

    missing: dict[str, list[str]] = {}
    for ensemble in config.ensembles:
        try:
            with open_bundle(ensemble.bundle) as program:
                experts = list(program.config().get("gate", {}).get("experts", []))
        except GanglionError:
            continue
        lacking = [str(e) for e in experts if not config.hosts_of(str(e))]
        if lacking:
            missing[ensemble.name] = lacking
    return missing


def coordinator_problem(bundle: Path, manifest: Manifest) -> str | None:
    """Why the coordinator cannot serve the program at ``bundle``, or None: it serves
    classifier ensembles (token experts keep per-sequence state on one node)."""
    from ganglion.runtime.kinds.ensemble import is_sequence

    if manifest.kind != "ensemble":
        return f"{bundle}: a {manifest.kind} program; the coordinator serves ensembles"
    if is_sequence(manifest):
        return (
            f"{bundle}: an ensemble of token models; the coordinator serves classifier "
            "ensembles (token experts keep per-sequence state on one node)"
        )
    return None
