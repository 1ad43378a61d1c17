"""``ganglion inspect BUNDLE --target loihi2``: the chip-fit report, as a table or JSON."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable

TARGETS = ("loihi2",)


def show_chip_fit(
    deployable: Deployable, target: str, chips: int, as_json: bool, bundle: str = ""
) -> None:
    """Print neurons, synapses, memory and neurocores per layer; LoihiFitError if too large.
    ``bundle``: its path, named when the program is not one a chip takes."""
    if target not in TARGETS:
        raise BackendUnavailable(f"--target must be one of {TARGETS}, got {target!r}")
    if chips < 1:
        raise BackendUnavailable(f"--chips must be at least 1, got {chips}")
    if deployable.manifest.kind != "spiking":
        where = f"{bundle}: " if bundle else ""
        raise BackendUnavailable(
            f"{where}a chip-fit report needs a spiking program, got {deployable.manifest.kind!r}"
        )
    from ganglion.runtime.loihi_fit import chip_fit, require_fit

    report = chip_fit(deployable.module.graph, chips)
    if as_json:
        typer.echo(json.dumps(report, indent=1, allow_nan=False))
    else:
        console = Console(highlight=False, soft_wrap=True)
        table = Table("layer", "neurons", "synapses", "synaptic memory", "neurocores")
        for row in report["layers"]:
            table.add_row(
                row["layer"],
                f"{row['neurons']:,}",
                f"{row['synapses']:,}",
                f"{row['synaptic_memory_bytes'] / 1024:.1f} KiB",
                str(row["neurocores"]),
            )
        console.print(table)
        verdict = f"{'fits' if report['fits'] else 'does not fit'} on {chips} declared"
        if report.get("unsupported"):
            verdict = "cannot be mapped onto Loihi 2, whatever its size"
        console.print(
            f"total: {report['neurons']:,} neurons, {report['synapses']:,} synapses, "
            f"{report['neurocores']} neurocores = {report['chips_needed']} chip(s); {verdict}",
            markup=False,
        )
        console.print(f"limits: {report['source']}", markup=False)
    require_fit(report)
