"""``ganglion devices``: known device profiles and what this machine offers for profiling.

Whatever the files under ``--root`` hold, the command prints its tables (an unreadable part is a
row saying ``unreadable (FILE: what is wrong)``) or one error line: a ``--root`` that is not a
folder, a malformed ``--devices`` file. ``--json`` is strict JSON (`dumps_strict`). Text read
from files reaches the terminal as plain text: no Rich markup, no control characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from ganglion.device import DeviceProfile, available_profiles, detect
from ganglion.device.detect import unreadable
from ganglion.device.strict_json import dumps_strict
from ganglion.runtime.cli.terminal import plain

PIPE_WIDTH = 160  # wide enough for every column of the built-in profiles, unwrapped
NOT_APPLICABLE = "—"


def devices(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    root: Path = typer.Option(Path("/"), "--root", help="Filesystem root holding sys/ proc/ etc/."),
    device_files: list[Path] = typer.Option(
        [], "--devices", help="Extra device profile file (JSON/TOML); also $GANGLION_DEVICES."
    ),
) -> None:
    """List device profiles and detect GPU, Jetson board, L4T, power mode, rails and RAPL."""
    found = detect(root)  # first: a --root that is not a folder is the error to report
    profiles = available_profiles(device_files, root)
    if as_json:
        payload = {
            "profiles": {n: p.to_dict() for n, p in profiles.items()},
            "detected": found.to_dict(),
        }
        typer.echo(dumps_strict(payload))
        return
    console = Console()
    if not console.is_terminal:  # a pipe or file: rich would squeeze the table to 80 columns
        console = Console(width=PIPE_WIDTH)
    console.print(_profiles_table(profiles))
    console.print(_detected_table(found.to_dict()))


def _dense(p: DeviceProfile, value: float, scale: float, fmt: str) -> Text:
    """A dense-compute figure, or "—" where it does not apply (a neuromorphic chip)."""
    return plain(NOT_APPLICABLE if p.kind == "neuromorphic" else format(value / scale, fmt))


def _profiles_table(profiles: dict[str, DeviceProfile]) -> Table:
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
            plain(name),
            plain(p.kind),
            _dense(p, p.peak_ops["fp32"], 1e12, ".2f"),
            _dense(p, max(p.peak_ops.values()), 1e12, ".1f"),
            _dense(p, p.memory_bandwidth, 1e9, ".0f"),
            plain(modes),
            plain(len(p.assumed)),
            plain(p.origin),
        )
    return table


def _detected_table(d: dict[str, Any]) -> Table:
    t = Table("what", "detected", title=plain(f"detected under {d['root']}"))
    bad = d["unreadable"]

    def row(what: str, value: object) -> None:
        t.add_row(plain(what), plain(value))

    cpu = d["cpu"]
    row(
        "CPU",
        cpu.get("error")
        or f"{cpu['model']}: {cpu['physical_cores']} cores / {cpu['logical_cores']} threads, "
        f"{cpu['max_mhz']:.0f} MHz, {cpu['simd']}",
    )
    gpus = ", ".join(f"{g['name']} ({_watts(g['power_limit_w'])})" for g in d["gpus"])
    row("GPU (NVML)", gpus or f"none: {d['gpu_error']}")
    model = d["jetson_model"] or "none"
    if d["jetson_module"]:
        model += f" (module {d['jetson_module']})"
    row("Jetson model", unreadable(bad["jetson_model"]) if "jetson_model" in bad else model)
    for key, what in (("jetson_module", "Jetson module"), ("memory", "memory")):
        if key in bad:
            row(what, unreadable(bad[key]))
    if "l4t_version" in bad:
        row("L4T / JetPack", unreadable(bad["l4t_version"]))
    elif d["l4t_version"]:
        row("L4T / JetPack", f"{d['l4t_version']} / {d['jetpack_version'] or 'unknown'}")
    mode = d["power_mode"]
    if "power_mode" in bad:
        row("power mode", unreadable(bad["power_mode"]))
    elif mode:
        how = ", from status file" if mode["from_status_file"] else ", configured default"
        row("power mode", f"{mode['active_name']} (id {mode['active_id']}{how})")
    _rail_rows(d, row)
    zones = ", ".join(d["rapl_zones"])
    row(
        "RAPL",
        f"{zones} (readable)"
        if d["rapl_readable"]
        else f"{zones or 'no zones'}: {d['rapl_error']}",
    )
    row("profile", d["profile_name"])
    return t


def _watts(limit: float | None) -> str:
    """A GPU's power limit, or "power limit unknown" where NVML does not report it."""
    return "power limit unknown" if limit is None else f"{limit:.0f} W"


def _rail_rows(d: dict[str, Any], row: Any) -> None:
    """The power rails row (each rail's watts, or why it is unreadable) and the board total."""
    if d["rails_layout"] is None:
        row("power rails", f"none: {d['rails_error']}")
        return
    rails = [f"{n} {w:.2f} W" for n, w in d["rails_w"].items()]
    rails += [f"{n} {unreadable(why)}" for n, why in d["rails_unreadable"].items()]
    row("power rails", f"{d['rails_layout']}: {', '.join(rails)} (measured)")
    if d["total_w"] is None:
        row("board power", unreadable(d["total_source"]))
    else:
        row("board power", f"{d['total_w']:.2f} W ({d['total_source']}) (measured)")


def register(app: typer.Typer) -> None:
    """Add ``devices`` to the CLI."""
    app.command("devices")(devices)
