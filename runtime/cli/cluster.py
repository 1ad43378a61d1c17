"""``ganglion coordinate`` (serve ensembles over a cluster's nodes), ``ganglion cluster up``
and ``ganglion cluster down`` (a local development cluster); see ``runtime/serving``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

CONFIG_HELP = "Cluster file (TOML): coordinator, ensembles, nodes (example below)."
STATE_HELP = "Folder for the cluster's state and logs (default: .ganglion/NAME/ beside it)."
EXAMPLE = """A cluster file (paths relative to it; every key and its default:
runtime/serving/cluster_config.py):

\b
  [coordinator]
  port = 8000
  [[ensemble]]
  name = "digits-moe"              # the model clients call
  bundle = "runs/demo/digits-moe"  # an ensemble bundle
  energy_budget_j = 0.01           # default budgets (optional)
  [[node]]
  name = "orin-a"
  port = 8101
  device = "jetson-agx-orin-64gb"  # simulated profile (ganglion devices)
  models = ["digits-0-4", "digits-5-9"]  # members it hosts
  [[node]]
  name = "triton"
  port = 8001
  models = ["digits-5-9"]
  start = "external"               # a running KServe v2 server (Triton, KServe)

Clients: ganglion infer --to 127.0.0.1:8000 --model digits-moe --input x.npy
--param energy_budget_j=0.005 --param latency_budget_ms=20
"""

cluster_app = typer.Typer(
    rich_markup_mode=None,
    help="A development cluster on this machine: nodes and the coordinator as processes.",
    epilog=EXAMPLE,
    no_args_is_help=True,
)


def coordinate(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    port: int | None = typer.Option(None, "--port", help="Port (default: the file's)."),
) -> None:
    """Serve the file's ensembles (KServe v2 gRPC), calling their experts on its nodes."""
    import asyncio
    import dataclasses

    from ganglion.runtime.serving.cluster_config import ClusterConfigError, read_cluster_config
    from ganglion.runtime.serving.coordinator import Coordinator, run_coordinator
    from ganglion.runtime.serving.settings import is_loopback

    cluster = read_cluster_config(config)
    if port is not None and not 0 <= port <= 65535:
        raise ClusterConfigError(f"--port must be in [0, 65535], got {port}")
    if port is not None:
        settings = dataclasses.replace(cluster.coordinator, port=port)
        cluster = dataclasses.replace(cluster, coordinator=settings)

    def ready(coordinator: Coordinator) -> None:
        settings = coordinator.config.coordinator
        nodes = coordinator.pool.nodes.values()
        admitted = [n.name for n in nodes if n.admitted]
        print(
            f"ganglion coordinator on {settings.host}:{coordinator.port}: "
            f"{', '.join(coordinator.ensembles)}; nodes admitted: "
            f"{', '.join(admitted) or 'none yet'} of {len(coordinator.pool.nodes)}",
            flush=True,
        )

    if not is_loopback(cluster.coordinator.host):
        print(
            f"warning: the coordinator has no TLS: it serves in plaintext on "
            f"{cluster.coordinator.host} (any token travels in the clear); keep it on loopback "
            "or a private network",
            file=sys.stderr,
            flush=True,
        )
    asyncio.run(run_coordinator(cluster, ready))


@cluster_app.command("up", epilog=EXAMPLE)
def up(
    config: Path = typer.Option(..., "--config", help=CONFIG_HELP),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    timeout_s: float = typer.Option(
        180.0, "--timeout", min=0.1, max=86_400.0, help="Seconds to wait for SERVING."
    ),
) -> None:
    """Start the file's serve nodes and its coordinator (what is not running yet)."""
    from ganglion.runtime.serving.cluster import cluster_up, default_state_dir
    from ganglion.runtime.serving.cluster_config import read_cluster_config, unhosted_experts

    cluster = read_cluster_config(config)
    folder = state_dir if state_dir is not None else default_state_dir(config)
    for record in cluster_up(cluster, folder, timeout_s):
        typer.echo(
            f"{record.role:<11} {record.name:<16} {record.address:<21} pid {record.pid:<8} "
            f"log {record.log}"
        )
    typer.echo(f"state: {folder}")
    for name, experts in unhosted_experts(cluster).items():  # once it runs: not a failure
        typer.echo(
            f"warning: {config}: ensemble {name!r}: no node hosts expert "
            f"{', '.join(map(repr, experts))}; the coordinator answers without it",
            err=True,
        )


@cluster_app.command("down")
def down(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    grace_s: float = typer.Option(
        10.0, "--grace", min=0.0, max=3_600.0, help="Seconds between SIGTERM and SIGKILL."
    ),
) -> None:
    """Stop the processes ``cluster up`` started (nothing else)."""
    from ganglion.runtime.serving.cluster import ClusterError, cluster_down, default_state_dir

    if state_dir is None and config is None:
        raise ClusterError("give --config CLUSTER.toml or --state-dir DIR")
    folder = state_dir if state_dir is not None else default_state_dir(config)
    stopped = cluster_down(folder, grace_s)
    for record in stopped:
        typer.echo(f"stopped {record.role} {record.name} (pid {record.pid})")
    if not stopped:
        typer.echo(f"nothing running from {folder}")


def register(app: typer.Typer) -> None:
    """Add ``coordinate`` and ``cluster up|down`` to the CLI."""
    app.command("coordinate", epilog=EXAMPLE)(coordinate)
    app.add_typer(cluster_app, name="cluster")
