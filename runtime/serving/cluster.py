"""``ganglion cluster up`` / ``down``: a development cluster on one machine. Every ``serve``
node of the cluster file runs as its own ``ganglion serve`` process (its members' bundles,
its device profile, energy simulated from that profile, its backend: ``lava`` for a Loihi 2
node), then the coordinator runs as another; ``down`` stops exactly those processes.

State: ``<state dir>/cluster.json`` records every process started — role, name, pid, the
start time the kernel gives it (``/proc/<pid>/stat``; ``ps`` where there is no /proc), its
command line and log file. ``down`` signals a process group only while its leader's start
time still matches the record, so a pid reused by something else is never touched (SIGTERM,
then SIGKILL after the grace period). ``up`` on a cluster that is partly running starts only
what is not running (a node that died comes back on its port).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganglion.models.errors import BundleError, GanglionError
from ganglion.runtime.bundle import MANIFEST, member_folder, read_manifest
from ganglion.runtime.serving.cluster_config import ClusterConfig, NodeConfig, coordinator_problem

STATE_FILE = "cluster.json"
POLL_S = 0.2


class ClusterError(GanglionError):
    """A cluster that cannot be started or stopped as asked."""


@dataclass(frozen=True)
class ProcessRecord:
    """A process ``up`` started."""

    role: str  # node | coordinator
    name: str
    address: str
    pid: int
    started: str  # the kernel's start time of the pid (tells a reused pid apart)
    log: str
    command: list[str]


def default_state_dir(config_path: Path) -> Path:
    """``.ganglion/<config name>/`` beside the cluster file."""
    config_path = Path(config_path).resolve()
    return config_path.parent / ".ganglion" / config_path.stem


# ---- processes ---------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live (not zombie) ``pid``; None when there is none."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] in ("Z", "X") else fields[19]
    done = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True)
    text = done.stdout.decode().strip()
    return None if not text or text.startswith("Z") else text.split(None, 1)[-1]


def running(record: ProcessRecord) -> bool:
    """Whether the recorded process is still the one that runs under its pid."""
    return _start_time(record.pid) == record.started


def _launch(role: str, name: str, address: str, command: list[str], folder: Path) -> ProcessRecord:
    log = folder / f"{role}-{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: down signals it and its children
        )
    started = _start_time(process.pid)
    if started is None:
        raise ClusterError(f"{role} {name} exited at once; see {log}")
    return ProcessRecord(role, name, address, process.pid, started, str(log), command)


def _cli() -> list[str]:
    return [sys.executable, "-m", "ganglion.runtime.cli"]


def member_bundles(config: ClusterConfig) -> dict[str, Path]:
    """Model name -> the member bundle folder a ``serve`` node serves it from (the member of
    that name in the ensembles' bundles; one bundle, even when several ensembles share it)."""
    found: dict[str, tuple[Path, str]] = {}
    for ensemble in config.ensembles:
        if not ensemble.bundle.is_dir():
            continue
        manifest = read_manifest(ensemble.bundle)
        problem = coordinator_problem(ensemble.bundle, manifest)
        if problem is not None:  # refused before any process starts
            raise ClusterError(problem)
        for ref in manifest.members:
            try:
                folder = member_folder(ensemble.bundle, ref)
            except BundleError as exc:  # a member outside members/: refused before any start
                raise ClusterError(str(exc)) from None
            known = found.setdefault(ref.name, (folder, ref.sha256))
            if known[1] != ref.sha256:
                raise ClusterError(
                    f"member {ref.name!r} of {ensemble.name!r} differs from another ensemble's "
                    "member of that name; a node serves one bundle per name"
                )
    return {name: folder for name, (folder, _) in found.items()}


def node_command(node: NodeConfig, members: dict[str, Path]) -> list[str]:
    """The ``ganglion serve`` command line of a ``serve`` node."""
    bundles = []
    for model in node.models:
        folder = members.get(model)
        if folder is None or not (folder / MANIFEST).is_file():
            raise ClusterError(
                f"node {node.name!r}: no ensemble bundle folder has a member {model!r} to serve"
            )
        bundles.append(f"{model}={folder}")
    command = [*_cli(), "serve", *bundles, "--host", node.host, "--port", str(node.port)]
    command += ["--device", node.device, "--backend", node.backend, "--simulate-energy"]
    if node.token_file is not None:
        command += ["--token-file", str(node.token_file)]
    return command + list(node.serve_args)


def _serving(address: str, service: str = "") -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _exited(records: list[ProcessRecord]) -> ClusterError | None:
    """The error naming the first of ``records`` that is no longer running, with its log's
    last line; None while all run."""
    for record in records:
        if not running(record):
            tail = Path(record.log).read_text(errors="replace").strip().splitlines()[-1:]
            return ClusterError(
                f"{record.role} {record.name} exited: {tail[0] if tail else 'no output'} "
                f"(log: {record.log})"
            )
    return None


def _wait(records: list[ProcessRecord], coordinator_address: str, nodes: list[str], timeout_s):
    """Until every process answers SERVING and the coordinator has admitted ``nodes``; a
    process that exits meanwhile is an error at once."""
    deadline = time.monotonic() + timeout_s
    waiting = [(r, r.address, "") for r in records]
    waiting += [(None, coordinator_address, f"node/{name}") for name in nodes]
    while waiting:
        record, address, service = waiting[0]
        exited = _exited(records)
        if exited is not None:
            raise exited
        if _serving(address, service):
            waiting.pop(0)
            continue
        if time.monotonic() > deadline:
            what = f"{record.role} {record.name}" if record else f"the coordinator's {service}"
            raise ClusterError(f"{what} not SERVING after {timeout_s:.0f} s")
        time.sleep(POLL_S)


# ---- state -------------------------------------------------------------------------------------


def read_state(state_dir: Path) -> list[ProcessRecord]:
    """The processes recorded in ``state_dir`` (none when there is no state file)."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [ProcessRecord(**row) for row in data["processes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{path}: not a cluster state file ({exc})") from None


def _write_state(state_dir: Path, config: Path, records: list[ProcessRecord]) -> None:
    text = json.dumps({"config": str(config), "processes": [asdict(r) for r in records]}, indent=1)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".cluster.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, state_dir / STATE_FILE)


# ---- up and down -------------------------------------------------------------------------------


def cluster_up(
    config: ClusterConfig, state_dir: Path, timeout_s: float = 180.0
) -> list[ProcessRecord]:
    """Start every ``serve`` node and the coordinator that are not running yet, wait until
    all serve and the coordinator has admitted those nodes; the records of everything up.
    When that fails, the processes this call started are stopped again."""
    settings = config.coordinator
    if settings.port == 0:
        raise ClusterError(f"{config.path}: cluster up needs a fixed coordinator.port, not 0")
    state_dir.mkdir(parents=True, exist_ok=True)
    kept = {(r.role, r.name): r for r in read_state(state_dir) if running(r)}
    members = member_bundles(config)
    planned = [
        ("node", n.name, n.address, node_command(n, members))
        for n in config.nodes
        if n.start == "serve"
    ]
    coordinate = [*_cli(), "coordinate", "--config", str(config.path)]
    planned.append(("coordinator", "coordinator", settings.address, coordinate))
    records: list[ProcessRecord] = []
    launched: list[ProcessRecord] = []
    try:
        for role, name, address, command in planned:
            record = kept.get((role, name))
            if record is None:
                record = _launch(role, name, address, command, state_dir)
                launched.append(record)
            records.append(record)
        _write_state(state_dir, config.path, records)
        serve_nodes = [n.name for n in config.nodes if n.start == "serve"]
        _wait(records, settings.address, serve_nodes, timeout_s)
    except BaseException as exc:
        _stop(launched, grace_s=5.0)
        _write_state(state_dir, config.path, [r for r in records if r not in launched])
        if isinstance(exc, ClusterError) and launched:
            started = f"{len(launched)} process{'es' if len(launched) > 1 else ''}"
            raise ClusterError(f"{exc}; stopped the {started} this cluster up started") from None
        raise
    return records


def cluster_down(state_dir: Path, grace_s: float = 10.0) -> list[ProcessRecord]:
    """Stop the processes ``up`` recorded in ``state_dir`` (SIGTERM to each one's group,
    SIGKILL after ``grace_s``) and remove the state file; the records that were running."""
    records = [r for r in read_state(state_dir) if running(r)]
    _stop(records, grace_s)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return records


def _stop(records: list[ProcessRecord], grace_s: float) -> None:
    """SIGTERM to each record's group, SIGKILL to those still running after ``grace_s``."""
    for record in records:
        _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(running(r) for r in records) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for record in records:
        if running(record):
            _signal(record, signal.SIGKILL)


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    """``sig`` to the record's process group (its leader checked first)."""
    if not running(record):
        return
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return
