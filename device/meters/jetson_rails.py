"""Jetson power rails from the INA3221 monitors, in both sysfs layouts.

- Old layout (JetPack ≤ 4.6: Nano, TX2, Xavier), ``ina3221x`` IIO driver:
  ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N`` names channel N and
  ``in_powerN_input`` is its power in mW.
- New layout (JetPack 5/6: Orin), upstream ``ina3221`` hwmon driver:
  ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/inN_label`` names channel N; power is
  ``inN_input`` (bus voltage, mV) × ``currN_input`` (mA), or ``powerN_input`` (µW, the hwmon ABI
  unit) where the driver provides it. Channels labelled ``NC`` (not connected) and the driver's
  "sum of shunt voltages" channel are skipped.

The board's total is the ``VDD_IN`` rail (``POM_5V_IN`` on Nano); boards without one (AGX Orin)
report the sum of their rails, and the reading's ``source`` says so. Every value is read through
`sysroot` (regular files only, bounded, with a timeout); one that is not a finite non-negative
number is a `MeterError` naming its file, never a measurement.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ganglion.device.meters.base import MeterError, PollingMeter, check_watts, timed_read
from ganglion.device.sysroot import FileReader, problem, read_text

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
OLD_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*"
NEW_GLOBS = (
    "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label",
    "sys/class/hwmon/hwmon*/in*_label",
)


@dataclass(frozen=True)
class Rail:
    """One monitored rail: its files and the scale that turns their product into watts."""

    name: str
    layout: str  # "ina3221x" (old) or "hwmon" (new)
    power_file: Path | None = None
    power_scale: float = 1e-3
    voltage_file: Path | None = None
    current_file: Path | None = None

    def watts(self, reader: FileReader = read_text) -> float:
        """Read the rail's power now, in watts; `MeterError` naming the file if unreadable."""
        if self.power_file is not None:
            watts = _number(reader, self.power_file) * self.power_scale
        else:
            assert self.voltage_file is not None and self.current_file is not None
            watts = _number(reader, self.voltage_file) * _number(reader, self.current_file) * 1e-6
        return check_watts(watts, f"rail {self.name}")


def board_total(rails: list[Rail]) -> tuple[Rail | None, list[Rail], str]:
    """How to get the board's power: its total rail (``None`` if it has none), the rails to
    sum (that rail alone, else all of them) and a description saying which."""
    by_name = {r.name: r for r in rails}
    total = next((by_name[n] for n in TOTAL_RAILS if n in by_name), None)
    if total is not None:
        return total, [total], f"{total.name} rail"
    names = "+".join(r.name for r in rails)
    return None, rails, f"sum of {len(rails)} rails (no {' or '.join(TOTAL_RAILS)} rail): {names}"


def find_rails(root: str | os.PathLike[str] = "/", reader: FileReader = read_text) -> list[Rail]:
    """Discover the INA3221 rails under ``root`` (old layout first, then hwmon)."""

    def discover() -> list[Rail]:
        rails = _old_layout(Path(root), reader)
        return rails if rails else _new_layout(Path(root), reader)

    return timed_read(discover, f"INA3221 rails under {root}")


def _old_layout(root: Path, reader: FileReader) -> list[Rail]:
    rails = []
    for name_file in sorted(glob.glob(str(root / OLD_GLOB))):
        n = name_file.rsplit("_", 1)[1]
        power = Path(name_file).parent / f"in_power{n}_input"
        if power.exists():
            rails.append(Rail(_label(reader, Path(name_file)), "ina3221x", power, 1e-3))
    return rails


def _new_layout(root: Path, reader: FileReader) -> list[Rail]:
    rails: list[Rail] = []
    seen: set[str] = set()
    for pattern in NEW_GLOBS:
        found = sorted(glob.glob(str(root / pattern)))
        for label_file in found:
            folder = Path(label_file).parent
            if os.path.realpath(folder) in seen or not _is_ina3221(folder, pattern, reader):
                continue
            rail = _hwmon_rail(Path(label_file), reader)
            if rail is not None:
                rails.append(rail)
        seen |= {os.path.realpath(Path(f).parent) for f in found}
    return rails


def _is_ina3221(folder: Path, pattern: str, reader: FileReader) -> bool:
    if "drivers/ina3221" in pattern:
        return True
    name = folder / "name"
    return name.exists() and _label(reader, name) == "ina3221"


def _hwmon_rail(label_file: Path, reader: FileReader) -> Rail | None:
    label = _label(reader, label_file)
    n = re.match(r"in(\d+)_label", label_file.name)
    if n is None or label.upper() == "NC" or label.lower().startswith("sum of"):
        return None
    folder, idx = label_file.parent, n.group(1)
    power = folder / f"power{idx}_input"
    if power.exists():
        return Rail(label, "hwmon", power, 1e-6)
    voltage, current = folder / f"in{idx}_input", folder / f"curr{idx}_input"
    if voltage.exists() and current.exists():
        return Rail(label, "hwmon", voltage_file=voltage, current_file=current)
    return None


def _label(reader: FileReader, path: Path) -> str:
    try:
        return reader(path).strip().strip("\x00")
    except OSError as e:
        raise MeterError(f"{path}: {problem(e)}") from e


def _number(reader: FileReader, path: Path) -> float:
    text = _label(reader, path)
    try:
        value = float(text)
    except ValueError as e:
        raise MeterError(f"{path}: holds {text[:40]!r}, not a number") from e
    if not (math.isfinite(value) and value >= 0):
        raise MeterError(f"{path}: holds {text[:40]!r}, not a finite non-negative number")
    return value


class JetsonRailsMeter(PollingMeter):
    """Board energy from the INA3221 rails, integrated in a polling thread (``measured``).

    ``source`` names the rails summed: the ``VDD_IN`` rail, or on boards without one every rail
    (``sum of 4 rails (no VDD_IN or POM_5V_IN rail): ...``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        interval_s: float = 0.02,
        reader: FileReader = read_text,
    ) -> None:
        super().__init__(interval_s)
        self.reader = reader
        self.rails = find_rails(root, reader)
        if not self.rails:
            raise MeterError(
                f"no Jetson INA3221 power rails under {root} (looked for {OLD_GLOB} and "
                f"{NEW_GLOBS[0]})"
            )
        self.layout = self.rails[0].layout
        self.total_rail, self._measured, what = board_total(self.rails)
        self.source = f"jetson INA3221 ({self.layout}): {what}"

    def read_rails(self) -> dict[str, float]:
        """Every rail's power now, in watts."""
        return timed_read(lambda: {r.name: r.watts(self.reader) for r in self.rails}, self.source)

    def sample_watts(self) -> float:
        """Board power now: the total rail, else the sum of the rails."""
        return timed_read(lambda: sum(r.watts(self.reader) for r in self._measured), self.source)
