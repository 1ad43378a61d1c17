"""``ganglion devices``: known device profiles and what this machine offers for profiling."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from ganglion.device import available_profiles, detect

PIPE_WIDTH = 160  # wide enough for every column of the built-in profiles, unwrapped


def devices(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    root: Path = typer.Option(Path("/"), "--root", help="Filesystem root holding sys/ proc/ etc/."),
    device_files: list[Path] = typer.Option(
        [], "--devices", help="Extra device profile file (JSON/TOML); also $GANGLION_DEVICES."
    ),
) -> None:
    """List device profiles and detect GPU, Jetson board, L4T, power mode, rails and RAPL."""
    profiles = available_profiles(device_files, root)
    found = detect(root)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "profiles": {n: p.to_dict() for n, p in profiles.items()},
                    "detected": found.to_dict(),
                }
            )
        )
        return
    console = Console()
    if not console.is_terminal:  # a pipe or file: rich would squeeze the table to 80 columns
        console = Console(width=PIPE_WIDTH)
    table = Table(
        Column("name", no_wrap=True),
        "kind",
        "fp32 TFLOP/s",
        "best TOP/s",
        "GB/s",
        "power modes (W)",
        "assumed",
        "origin",
        title="device profiles (published figures; see --json for each source)",
    )
    for name, p in sorted(profiles.items()):
        modes = ", ".join(f"{m.name} {m.watts:g}" for m in p.power_modes)
        table.add_row(
            name,
            p.kind,
            f"{p.peak_ops['fp32'] / 1e12:.2f}",
            f"{max(p.peak_ops.values()) / 1e12:.1f}",
            f"{p.memory_bandwidth / 1e9:.0f}",
            modes,
            str(len(p.assumed)),
            p.origin,
        )
    console.print(table)
    console.print(_detected_table(found.to_dict()))


def _detected_table(d: dict) -> Table:
    t = Table("what", "detected", title=f"detected under {d['root']}")
    cpu = d["cpu"]
    t.add_row(
        "CPU",
        cpu.get("error")
        or f"{cpu['model']}: {cpu['physical_cores']} cores / {cpu['logical_cores']} threads, "
        f"{cpu['max_mhz']:.0f} MHz, {cpu['simd']}",
    )
    gpus = ", ".join(f"{g['name']} ({g['power_limit_w']:.0f} W)" for g in d["gpus"])
    t.add_row("GPU (NVML)", gpus or f"none: {d['gpu_error']}")
    t.add_row("Jetson model", d["jetson_model"] or "none")
    if d["l4t_version"]:
        t.add_row("L4T / JetPack", f"{d['l4t_version']} / {d['jetpack_version'] or 'unknown'}")
    mode = d["power_mode"]
    if mode:
        t.add_row(
            "power mode",
            f"{mode['active_name']} (id {mode['active_id']}"
            f"{', from status file' if mode['from_status_file'] else ', configured default'})",
        )
    rails = ", ".join(f"{n} {w:.2f} W" for n, w in d["rails_w"].items())
    t.add_row(
        "power rails",
        f"{d['rails_layout']}: {rails} (measured)" if rails else f"none: {d['rails_error']}",
    )
    zones = ", ".join(d["rapl_zones"])
    t.add_row(
        "RAPL",
        f"{zones} (readable)"
        if d["rapl_readable"]
        else f"{zones or 'no zones'}: {d['rapl_error']}",
    )
    t.add_row("profile", d["profile_name"])
    return t


def register(app: typer.Typer) -> None:
    """Add ``devices`` to the CLI."""
    app.command("devices")(devices)
