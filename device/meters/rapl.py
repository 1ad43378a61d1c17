"""Intel/AMD RAPL energy counters through the powercap sysfs interface.

Each top-level zone ``/sys/class/powercap/intel-rapl:N`` (one per CPU package) has
``energy_uj``, a µJ counter that wraps to 0 after ``max_energy_range_uj``. The meter sums the
packages and accounts for wrap-around: a reading lower than the previous one means the counter
passed ``max_energy_range_uj``. Reads are counter differences, so `read()` is exact between
two reads as long as each counter wraps at most once in between; a slow background check
(``wrap_check_s``) keeps that true on long runs. Since Linux 5.10 ``energy_uj`` is readable by
root only. Files are read through `sysroot` (regular files only, bounded, with a timeout); a
counter that is not a whole number within ``0..max_energy_range_uj`` is a `MeterError` naming
its file.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ganglion.device.meters.base import (
    EnergyMeter,
    MeterError,
    PeriodicThread,
    Reading,
    timed_read,
)
from ganglion.device.sysroot import FileReader, problem, read_text

POWERCAP = "sys/class/powercap"
_COUNTER = re.compile(r"\d{1,20}")  # a µJ counter fits in 64 bits: at most 20 digits


@dataclass(frozen=True)
class RaplZone:
    """One package-level RAPL zone."""

    name: str
    energy_file: Path
    max_range_uj: int


def find_rapl_zones(
    root: str | os.PathLike[str] = "/", reader: FileReader = read_text
) -> list[RaplZone]:
    """The package zones ``intel-rapl:N`` under ``root`` (sub-zones ``intel-rapl:N:M`` are parts of
    a package and are not summed)."""

    def discover() -> list[RaplZone]:
        zones = []
        for folder in sorted(glob.glob(str(Path(root) / POWERCAP / "intel-rapl:*"))):
            if not re.fullmatch(r"intel-rapl:\d+", os.path.basename(folder)):
                continue
            f = Path(folder)
            name = _read(reader, f / "name").strip() if (f / "name").exists() else f.name
            max_range = _counter(reader, f / "max_energy_range_uj")
            if max_range == 0:
                raise MeterError(f"{f / 'max_energy_range_uj'}: holds 0, not a counter range")
            zones.append(RaplZone(name or f.name, f / "energy_uj", max_range))
        return zones

    return timed_read(discover, f"RAPL zones under {Path(root) / POWERCAP}")


def _read(reader: FileReader, path: Path) -> str:
    try:
        return reader(path)
    except PermissionError as e:
        raise MeterError(
            f"{path}: permission denied: RAPL energy counters are root-only since "
            "Linux 5.10; run as root or grant read access (chmod o+r) to that file"
        ) from e
    except OSError as e:
        raise MeterError(f"{path}: {problem(e)}") from e


def _counter(reader: FileReader, path: Path, max_value: int | None = None) -> int:
    text = _read(reader, path).strip()
    if not _COUNTER.fullmatch(text):
        raise MeterError(f"{path}: holds {text[:40]!r}, not a whole number of µJ")
    value = int(text)
    if max_value is not None and value > max_value:
        raise MeterError(f"{path}: holds {value}, above max_energy_range_uj {max_value}")
    return value


class RaplMeter(EnergyMeter):
    """CPU package energy from RAPL counters (``measured``), with wrap-around handled."""

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        reader: FileReader = read_text,
        wrap_check_s: float = 10.0,
    ) -> None:
        self.reader = reader
        self.zones = find_rapl_zones(root, reader)
        if not self.zones:
            raise MeterError(f"no RAPL zones under {Path(root) / POWERCAP} (intel-rapl:N)")
        self.source = "rapl: " + "+".join(z.name for z in self.zones)
        self.wrap_check_s = wrap_check_s
        self._lock = threading.Lock()
        self._last: list[int] = []
        self._total_uj = 0
        self._wrap_check = PeriodicThread(self._advance, wrap_check_s, "RaplMeter")

    def raw_uj(self) -> list[int]:
        """Each zone's counter now (µJ); raises `MeterError` naming the file if unreadable."""
        return timed_read(
            lambda: [_counter(self.reader, z.energy_file, z.max_range_uj) for z in self.zones],
            self.source,
        )

    def _advance(self) -> float:
        with self._lock:
            now_raw, now = self.raw_uj(), time.perf_counter()
            for i, (zone, value) in enumerate(zip(self.zones, now_raw, strict=True)):
                delta = value - self._last[i]
                if delta < 0:
                    delta += zone.max_range_uj + 1
                self._total_uj += delta
            self._last = now_raw
            return now

    def start(self) -> None:
        """Take the counters' starting values and start the wrap-check thread."""
        self.stop()
        self._last, self._total_uj = self.raw_uj(), 0
        self._wrap_check.start()

    def stop(self) -> None:
        """Stop the wrap-check thread."""
        self._wrap_check.stop()

    def read(self) -> Reading:
        """Package energy since `start()`."""
        if not self._last:
            raise MeterError("RaplMeter.read() called before start()")
        self._wrap_check.check()
        now = self._advance()
        return Reading(self._total_uj * 1e-6, now, "measured", self.source)
