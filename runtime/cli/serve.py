"""``ganglion serve``: run a node (KServe v2 gRPC inference, health, reflection, bundle upload
and telemetry) over bundles; see ``runtime/serving``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

MiB = 1 << 20


def serve(
    bundles: list[str] = typer.Argument(
        None, help="Bundle folders or .tar files to serve, as PATH or NAME=PATH."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback)."),
    port: int = typer.Option(8001, "--port", help="Port (0: any free port)."),
    device: str = typer.Option("auto", "--device", help="Device profile for telemetry, or auto."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | torch | ..."),
    backend_device: str = typer.Option("cpu", "--backend-device", help="cpu | cuda"),
    repository: Path | None = typer.Option(
        None, "--repository", help="Folder where uploaded bundles are installed (and loaded)."
    ),
    max_concurrency: int = typer.Option(64, "--max-concurrency", help="Requests at once."),
    max_sequences: int = typer.Option(256, "--max-sequences", help="Live sequences per model."),
    max_sequence_state_mb: int = typer.Option(
        1024, "--max-sequence-state-mb", help="Their states together, per model."
    ),
    sequence_idle_s: float = typer.Option(60.0, "--sequence-idle-s", help="Idle expiry."),
    max_message_mb: int = typer.Option(64, "--max-message-mb", help="Largest gRPC message."),
    max_upload_mb: int = typer.Option(1024, "--max-upload-mb", help="Largest bundle upload."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Server certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Server private key (PEM)."),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="CA whose client certificates are required (mutual TLS)."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File holding the bearer token clients must send."
    ),
    trusted_keys: Path | None = typer.Option(
        None, "--trusted-keys", help="Folder of EC public keys (.pem): accept signed uploads only."
    ),
    simulate_energy: bool = typer.Option(
        False, "--simulate-energy", help="Model energy from the profile even where a meter reads."
    ),
) -> None:
    """Serve bundles over gRPC (KServe v2 / Triton clients work unchanged)."""
    import asyncio

    from ganglion.runtime.serving.node import Node, run_node
    from ganglion.runtime.serving.settings import NodeSettings

    settings = NodeSettings(
        bundles=[Path(b) for b in bundles or []],
        host=host,
        port=port,
        device=device,
        backend=backend,
        backend_device=backend_device,
        repository=repository,
        max_concurrency=max_concurrency,
        max_sequences=max_sequences,
        max_sequence_state_bytes=max_sequence_state_mb * MiB,
        sequence_idle_s=sequence_idle_s,
        max_message_bytes=max_message_mb * MiB,
        max_upload_bytes=max_upload_mb * MiB,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        token_file=token_file,
        trusted_keys=trusted_keys,
        simulate_energy=simulate_energy,
    )
    if repository is not None:
        repository.mkdir(parents=True, exist_ok=True)

    def ready(node: Node) -> None:
        s = node.settings
        if not s.loopback and not s.tls:
            print(f"warning: serving without TLS on {s.host}", file=sys.stderr)
        guards = [
            w
            for w, on in (("tls", s.tls), ("token", s.token_file), ("signed", s.trusted_keys))
            if on
        ]
        models = ", ".join(node.repository.models) or "no models"
        print(
            f"ganglion node on {s.host}:{node.port} ({', '.join(guards) or 'open'}): {models}",
            flush=True,
        )
        for name, why in node.failed.items():
            print(f"warning: {name} not loaded: {why}", file=sys.stderr, flush=True)

    asyncio.run(run_node(settings, ready))


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)
