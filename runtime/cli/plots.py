"""``--plot`` files: the formats matplotlib writes by suffix, checked before any work, and
written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganglion.models.errors import GanglionError
from ganglion.runtime.atomic import atomic_file, check_target

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_target(plot: Path, force: bool, reads: tuple[Any, ...]) -> None:
    """GanglionError unless ``plot`` ends in a format we write and may be written (the
    command's inputs in ``reads`` are never its target)."""
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise GanglionError(f"--plot {plot}: must end in {', '.join(PLOT_SUFFIXES)}")
    check_target(plot, force, reads=reads)


def save_figure(fig: Any, out: Path, force: bool) -> None:
    """Write a matplotlib figure to ``out`` in the format its suffix names, atomically."""
    with atomic_file(out, force) as tmp:
        fig.savefig(tmp, dpi=120, format=out.suffix[1:].lower())
