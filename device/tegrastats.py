"""Parse one ``tegrastats`` line (Jetson's built-in monitor) into numbers.

Formats differ by release; all of these parse:
- Orin (JetPack 5/6): ``... CPU [0%@729,...,off] GR3D_FREQ 0%@[305,305] ... tj@44.1C
  VDD_GPU_SOC 2390mW/2390mW VDD_CPU_CV 796mW/796mW VIN_SYS_5V0 3522mW/3522mW``
- Xavier/Nano (JetPack 4): ``... GR3D_FREQ 0%@1377 ... GPU 0/0 CPU 311/311 SOC 1243/1243``
  and ``POM_5V_IN 2211/2211 POM_5V_GPU 0/0`` (mW without a unit).
Each rail is ``current/average`` in mW. The board total is ``VDD_IN``/``POM_5V_IN`` when
present, else the sum of the connected rails (``NC`` rails are dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ganglion.device.meters.jetson_rails import TOTAL_RAILS

# Numbers are at most 12 digits (a line from a broken pipe cannot make an int of 5000 digits).
_RAM = re.compile(r"\bRAM (\d{1,12})/(\d{1,12})MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GPU = re.compile(r"\bGR3D_FREQ (\d{1,3})%(?:@\[?((?:\d{1,12},)*\d{1,12})\]?)?")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][\w]*)@(-?\d{1,6}(?:\.\d{1,6})?)C\b")
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d{1,12})(?:mW)?/(\d{1,12})(?:mW)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "NC"}


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line: memory, per-core CPU load and frequency, GPU load, temperatures (°C)
    and power rails as ``(current_mW, average_mW)``."""

    ram_used_mb: int | None
    ram_total_mb: int | None
    cpu_load_pct: list[float | None] = field(default_factory=list)  # None = core offline
    cpu_freq_mhz: list[int | None] = field(default_factory=list)
    gpu_load_pct: float | None = None
    gpu_freq_mhz: list[int] = field(default_factory=list)
    temperatures_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def total_rail(self) -> str | None:
        """The rail that measures the whole board, if the line has one."""
        return next((n for n in TOTAL_RAILS if n in self.rails_mw), None)

    @property
    def power_w(self) -> float | None:
        """Board power now (W): the total rail, else the sum of rails; ``None`` without rails."""
        if not self.rails_mw:
            return None
        if self.total_rail is not None:
            return self.rails_mw[self.total_rail][0] / 1000.0
        return sum(cur for cur, _ in self.rails_mw.values()) / 1000.0


def parse_tegrastats(line: str) -> TegrastatsSample:
    """Parse one tegrastats output line; raises `ValueError` if it is not one."""
    ram = _RAM.search(line)
    rails = {
        m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in _RAIL.finditer(line)
        if m.group(1) not in _NOT_RAILS
    }
    if ram is None and not rails:
        raise ValueError(f"not a tegrastats line (no RAM field, no rails): {line[:80]!r}")
    loads: list[float | None] = []
    freqs: list[int | None] = []
    cpu = _CPU.search(line)
    for core in cpu.group(1).split(",") if cpu else []:
        load, _, freq = core.strip().partition("@")
        value = load.rstrip("%")
        loads.append(float(value) if re.fullmatch(r"\d{1,3}", value) else None)
        freqs.append(int(freq) if re.fullmatch(r"\d{1,12}", freq) else None)
    gpu = _GPU.search(line)
    return TegrastatsSample(
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=float(gpu.group(1)) if gpu else None,
        gpu_freq_mhz=[int(f) for f in gpu.group(2).split(",")] if gpu and gpu.group(2) else [],
        temperatures_c={m.group(1): float(m.group(2)) for m in _TEMP.finditer(line)},
        rails_mw=rails,
    )
