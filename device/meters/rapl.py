"""Intel/AMD RAPL energy counters through the powercap sysfs interface.

Each top-level zone ``/sys/class/powercap/intel-rapl:N`` has ``energy_uj``, a µJ counter that
wraps to 0 after ``max_energy_range_uj``. The meter sums the ``package-N`` zones (one per CPU
package). A ``psys`` zone (the whole platform, on recent Intel laptops) already includes the
packages, so it is never added to them; it is used alone where there is no package zone.
Sub-zones ``intel-rapl:N:M`` (core, uncore, dram) are parts of a package and are not summed.

A reading lower than the previous one means the counter passed ``max_energy_range_uj``, but only
where the energy that implies is plausible for the time elapsed (at most `MAX_PLAUSIBLE_W`): a
counter that went backwards otherwise (reset, another counter behind the file), or jumped ahead by
more, is a `MeterError` naming the file, never a measurement. Reads are counter differences, so
`read()` is exact between two reads as long as each counter wraps at most once in between; a slow
background check (``wrap_check_s``) keeps that true on long runs. Since Linux 5.10 ``energy_uj`` is
readable by root only. Paths are resolved inside the root (`sysroot.under`) and files read through
`sysroot` (regular files only, bounded, with a timeout); a counter that is not a whole number within
``0..max_energy_range_uj`` is a `MeterError` naming its file, and more than `MAX_ZONES` zones are
refused.
"""

from __future__ import annotations

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
from ganglion.device.sysroot import FileReader, glob_under, problem, read_text, under

POWERCAP = "sys/class/powercap"
MAX_ZONES = 64  # top-level zones and sub-zones together; a real machine has a few per socket
MAX_PLAUSIBLE_W = 5000.0  # no CPU package draws more: a bigger step is not energy
COUNTER_STEP_S = 0.1  # slack for the counter's own update period in that bound
_COUNTER = re.compile(r"[0-9]{1,20}")  # a µJ counter fits in 64 bits: at most 20 ASCII digits
_PACKAGE = re.compile(r"package-[0-9]+")


@dataclass(frozen=True)
class RaplZone:
    """One package-level RAPL zone."""

    name: str
    energy_file: Path
    max_range_uj: int


def find_rapl_zones(
    root: str | os.PathLike[str] = "/", reader: FileReader = read_text
) -> list[RaplZone]:
    """The zones to sum under ``root``: every ``package-N`` zone, else a ``psys`` zone alone
    (it includes the packages), else none. More than `MAX_ZONES` zones is a `MeterError`."""

    def discover() -> list[RaplZone]:
        zones = []
        for path in glob_under(root, f"{POWERCAP}/intel-rapl:*", MAX_ZONES):
            if not re.fullmatch(r"intel-rapl:[0-9]+", os.path.basename(path)):
                continue
            folder = os.path.basename(path)
            name_file, range_file = (
                under(root, f"{path}/{n}") for n in ("name", "max_energy_range_uj")
            )
            name = _read(reader, name_file).strip() if name_file.exists() else folder
            max_range = _counter(reader, range_file)
            if max_range == 0:
                raise MeterError(f"{range_file}: holds 0, not a counter range")
            zones.append(RaplZone(name or folder, under(root, f"{path}/energy_uj"), max_range))
        packages = [z for z in zones if _PACKAGE.fullmatch(z.name)]
        return packages or [z for z in zones if z.name == "psys"][:1]

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
            raise MeterError(
                f"no RAPL package or psys zones under {Path(root) / POWERCAP} (intel-rapl:N)"
            )
        self.source = "rapl: " + "+".join(z.name for z in self.zones)
        self.wrap_check_s = wrap_check_s
        self._lock = threading.Lock()
        self._last: list[int] = []
        self._last_time = 0.0
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
            bound_uj = MAX_PLAUSIBLE_W * (now - self._last_time + COUNTER_STEP_S) * 1e6
            deltas = []
            for zone, before, value in zip(self.zones, self._last, now_raw, strict=True):
                wrapped = value < before
                delta = value - before + (zone.max_range_uj + 1 if wrapped else 0)
                if delta > bound_uj:
                    raise MeterError(
                        f"{zone.energy_file}: went from {before} to {value} µJ in "
                        f"{now - self._last_time:.3g} s: more than {MAX_PLAUSIBLE_W:g} W"
                        f"{' even as a wrap-around (counter reset?)' if wrapped else ''}"
                    )
                deltas.append(delta)
            self._total_uj += sum(deltas)
            self._last, self._last_time = now_raw, now
            return now

    def start(self) -> None:
        """Take the counters' starting values and start the wrap-check thread."""
        self.stop()
        self._last, self._last_time, self._total_uj = self.raw_uj(), time.perf_counter(), 0
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
