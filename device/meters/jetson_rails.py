"""Jetson power rails from the INA3221 monitors, in both sysfs layouts.

- Old layout (JetPack ≤ 4.6: Nano, TX2, Xavier), ``ina3221x`` IIO driver:
  ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N`` names channel N and
  ``in_powerN_input`` is its power in mW.
- New layout (JetPack 5/6: Orin), upstream ``ina3221`` hwmon driver:
  ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/inN_label`` names channel N; power is
  ``inN_input`` (bus voltage, mV) × ``currN_input`` (mA), or ``powerN_input`` (µW, the hwmon ABI
  unit) where the driver provides it. Channels labelled ``NC`` (not connected) and the driver's
  "sum of shunt voltages" channel are skipped.

The board's total is the ``VDD_IN`` rail (``POM_5V_IN`` on Nano; labels compared without regard
to case); boards without one (AGX Orin) report the sum of their rails, and the reading's
``source`` says so. Rails are told apart by channel, not label: two rails with the same label (or
none) are both kept, named ``LABEL (hwmon3 in2)``. Paths are resolved inside the root
(`sysroot.under`) and every value is read through `sysroot` (regular files only, bounded, with a
timeout); one that is not a finite non-negative number, or is beyond what an INA3221 channel
reads (`MAX_RAIL_VOLTS`, `MAX_RAIL_AMPS`), is a `MeterError` naming its file, never a
measurement. More than `MAX_RAILS` rails are refused.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ganglion.device.meters.base import MeterError, PollingMeter, check_watts, timed_read
from ganglion.device.sysroot import FileReader, glob_under, problem, read_text, under

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
MAX_RAILS = 64  # a Jetson has two or three INA3221 chips of three channels
MAX_HWMON = 256  # hwmon folders looked at for an ina3221 one
MAX_RAIL_VOLTS = 40.0  # the INA3221 bus input reads at most 26 V
MAX_RAIL_AMPS = 50.0  # beyond any Jetson rail's shunt range
OLD_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*"
DRIVER_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
CLASS_GLOB = "sys/class/hwmon/hwmon*"


@dataclass(frozen=True)
class Rail:
    """One monitored channel: its label, a unique name, its files and the scale that turns
    their product into watts."""

    name: str  # the label, with the channel added where it is not unique
    layout: str  # "ina3221x" (old) or "hwmon" (new)
    power_file: Path | None = None
    power_scale: float = 1e-3
    voltage_file: Path | None = None
    current_file: Path | None = None
    label: str = ""
    channel: str = ""  # "hwmon3 in1", "iio:device0 ch0"

    def watts(self, reader: FileReader = read_text) -> float:
        """Read the rail's power now, in watts; `MeterError` naming the file if unreadable or
        beyond what the channel can read."""
        if self.power_file is not None:
            limit = MAX_RAIL_VOLTS * MAX_RAIL_AMPS / self.power_scale
            watts = _number(reader, self.power_file, limit) * self.power_scale
        else:
            assert self.voltage_file is not None and self.current_file is not None
            volts = _number(reader, self.voltage_file, MAX_RAIL_VOLTS * 1e3) * 1e-3
            watts = volts * _number(reader, self.current_file, MAX_RAIL_AMPS * 1e3) * 1e-3
        return check_watts(watts, f"rail {self.name}")

    @property
    def is_total(self) -> bool:
        """Whether the label names the board's input rail (any case)."""
        return self.label.upper() in TOTAL_RAILS


def board_total(rails: list[Rail]) -> tuple[Rail | None, list[Rail], str]:
    """How to get the board's power: its total rail (``None`` if it has none), the rails to
    sum (that rail alone, else all of them) and a description saying which."""
    totals = sorted(
        (r for r in rails if r.is_total), key=lambda r: TOTAL_RAILS.index(r.label.upper())
    )
    if totals:
        return totals[0], totals[:1], f"{totals[0].name} rail"
    names = "+".join(r.name for r in rails)
    return None, rails, f"sum of {len(rails)} rails (no {' or '.join(TOTAL_RAILS)} rail): {names}"


def find_rails(root: str | os.PathLike[str] = "/", reader: FileReader = read_text) -> list[Rail]:
    """Discover the INA3221 rails under ``root`` (old layout first, then hwmon), each with a
    unique name; more than `MAX_RAILS` is a `MeterError` naming the folder."""

    def discover() -> list[Rail]:
        rails = _old_layout(root, reader) or _new_layout(root, reader)
        counts = Counter(r.label for r in rails)
        return [
            r
            if r.label and counts[r.label] == 1
            else replace(r, name=f"{r.label or 'unlabelled'} ({r.channel})")
            for r in rails
        ]

    return timed_read(discover, f"INA3221 rails under {root}")


def _old_layout(root: str | os.PathLike[str], reader: FileReader) -> list[Rail]:
    rails = []
    for name_file in glob_under(root, OLD_GLOB, MAX_RAILS):
        folder, n = posixpath.dirname(name_file), name_file.rsplit("_", 1)[1]
        power = _entry(root, f"{folder}/in_power{n}_input")
        if n.isascii() and n.isdigit() and power is not None:
            label = _label(reader, under(root, name_file))
            channel = f"{posixpath.basename(folder)} ch{n}"
            rails.append(Rail(label, "ina3221x", power, 1e-3, label=label, channel=channel))
    return rails


def _new_layout(root: str | os.PathLike[str], reader: FileReader) -> list[Rail]:
    folders = glob_under(root, DRIVER_GLOB, MAX_RAILS)
    folders += [f for f in glob_under(root, CLASS_GLOB, MAX_HWMON) if _is_ina3221(root, f, reader)]
    rails: list[Rail] = []
    seen: set[Path] = set()
    for folder in folders:
        if under(root, folder) in seen:
            continue
        seen.add(under(root, folder))
        for label_file in glob_under(root, f"{folder}/in*_label", MAX_RAILS):
            rail = _hwmon_rail(root, label_file, reader)
            if rail is not None:
                rails.append(rail)
        if len(rails) > MAX_RAILS:
            raise MeterError(f"{under(root, folder)}: more than {MAX_RAILS} INA3221 rails")
    return rails


def _is_ina3221(root: str | os.PathLike[str], folder: str, reader: FileReader) -> bool:
    name = under(root, f"{folder}/name")
    return name.exists() and _label(reader, name) == "ina3221"


def _hwmon_rail(root: str | os.PathLike[str], label_file: str, reader: FileReader) -> Rail | None:
    n = re.fullmatch(r"in([0-9]+)_label", posixpath.basename(label_file))
    if n is None:
        return None
    label = _label(reader, under(root, label_file))
    if label.upper() == "NC" or label.lower().startswith("sum of"):
        return None
    folder, idx = posixpath.dirname(label_file), n.group(1)
    where = {"label": label, "channel": f"{posixpath.basename(folder)} in{idx}"}
    power = _entry(root, f"{folder}/power{idx}_input")
    if power is not None:
        return Rail(label, "hwmon", power, 1e-6, **where)
    voltage, current = (_entry(root, f"{folder}/{k}{idx}_input") for k in ("in", "curr"))
    if voltage is not None and current is not None:
        return Rail(label, "hwmon", voltage_file=voltage, current_file=current, **where)
    return None


def _entry(root: str | os.PathLike[str], path: str) -> Path | None:
    """``path`` resolved inside ``root`` when its folder has an entry of that name (a link that
    leads nowhere included: reading it then says so), else ``None``."""
    folder = under(root, posixpath.dirname(path))
    return under(root, path) if os.path.lexists(folder / posixpath.basename(path)) else None


def _label(reader: FileReader, path: Path) -> str:
    try:
        return reader(path).strip().strip("\x00")
    except OSError as e:
        raise MeterError(f"{path}: {problem(e)}") from e


def _number(reader: FileReader, path: Path, maximum: float) -> float:
    text = _label(reader, path)
    try:
        value = float(text)
    except ValueError as e:
        raise MeterError(f"{path}: holds {text[:40]!r}, not a number") from e
    if not (math.isfinite(value) and value >= 0):
        raise MeterError(f"{path}: holds {text[:40]!r}, not a finite non-negative number")
    if value > maximum:
        raise MeterError(f"{path}: holds {text[:40]!r}, above {maximum:g}: not an INA3221 reading")
    return value


class JetsonRailsMeter(PollingMeter):
    """Board energy from the INA3221 rails, integrated in a polling thread (``measured``).

    ``source`` names the rails summed: the ``VDD_IN`` rail, or on boards without one every rail
    (``sum of 4 rails (no VDD_IN or POM_5V_IN rail): ...``). Rails are keyed by their unique
    ``name``, so `read_rails` and ``devices`` agree with the sum.
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
                f"{DRIVER_GLOB})"
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
