"""Fixture trees laid out like real devices' ``/sys``, ``/proc`` and ``/etc``, and a background
writer that changes their power values over time, so tests run the real detection and meters.

Boards (``JETSON_BOARDS``): ``xavier-agx-jp46`` and ``nano-jp46`` (old ``ina3221x`` IIO layout,
L4T R32.7), ``agx-orin-64gb-jp512`` (hwmon layout, two INA3221 with ``NC`` channels, L4T
R35.4.1, no ``VDD_IN``: the total is the sum), ``orin-nano-8gb-jp62`` (hwmon, ``VDD_IN``, L4T
R36.4.3); each board's device tree names its module's part number (``compatible``). Plus RAPL
powercap zones (`write_rapl`) and an x86 host (`write_host_cpu`).
Values are written atomically (temp file + rename) so readers never see half a number.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def write_file(root: str | os.PathLike[str], path: str, text: str) -> Path:
    """Write ``text`` to ``path`` (absolute, as on the device) under ``root``, atomically."""
    target = Path(root) / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, target)
    return target


@dataclass(frozen=True)
class Board:
    """One Jetson board's identity files and rails (name, volts, share of the board's power)."""

    model: str
    release: str
    layout: str  # "ina3221x" | "hwmon"
    chips: tuple[tuple[str, tuple[tuple[str, float, float], ...]], ...]  # (i2c addr, rails)
    nvpmodel_file: str
    modes: tuple[tuple[int, str], ...]
    default_mode: int
    status_mode: int | None
    mem_kb: int
    cpu_cores: int
    cpu_max_khz: int
    compatible: tuple[str, ...] = ()  # /proc/device-tree/compatible: carrier+module part numbers


_R32 = (
    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64, "
    "DATE: Sat Feb 19 17:05:08 UTC 2022"
)
_R35 = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023"
)
_R36 = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025"
)
JETSON_BOARDS: dict[str, Board] = {
    "xavier-agx-jp46": Board(
        "Jetson-AGX",
        _R32,
        "ina3221x",
        (
            ("1-0040", (("GPU", 1.0, 0.2), ("CPU", 1.0, 0.2), ("SOC", 1.0, 0.25))),
            ("1-0041", (("CV", 1.0, 0.05), ("VDDRQ", 1.0, 0.1), ("SYS5V", 5.0, 0.2))),
        ),
        "/etc/nvpmodel/nvpmodel_t194.conf",
        ((0, "MAXN"), (1, "MODE_10W"), (2, "MODE_15W"), (3, "MODE_30W_ALL")),
        2,
        3,
        32_630_000,
        8,
        2_265_600,
        ("nvidia,p2822-0000+p2888-0004", "nvidia,jetson-xavier", "nvidia,tegra194"),
    ),
    "nano-jp46": Board(
        "NVIDIA Jetson Nano Developer Kit",
        _R32,
        "ina3221x",
        (
            (
                "6-0040",
                (("POM_5V_IN", 5.0, 1.0), ("POM_5V_GPU", 5.0, 0.3), ("POM_5V_CPU", 5.0, 0.4)),
            ),
        ),
        "/etc/nvpmodel/nvpmodel_t210_jetson-nano.conf",
        ((0, "MAXN"), (1, "5W")),
        0,
        1,
        4_057_000,
        4,
        1_479_000,
        ("nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"),
    ),
    "agx-orin-64gb-jp512": Board(
        "NVIDIA Jetson AGX Orin Developer Kit",
        _R35,
        "hwmon",
        (
            (
                "1-0040",
                (("VDD_GPU_SOC", 1.0, 0.4), ("VDD_CPU_CV", 1.0, 0.25), ("VIN_SYS_5V0", 5.0, 0.3)),
            ),
            ("1-0041", (("NC", 0.0, 0.0), ("VDDQ_VDD2_1V8AO", 1.8, 0.05), ("NC", 0.0, 0.0))),
        ),
        "/etc/nvpmodel/nvpmodel_p3701_0005.conf",
        ((0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")),
        2,
        2,
        64_335_836,
        12,
        2_201_600,
        ("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"),
    ),
    "orin-nano-8gb-jp62": Board(
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
        _R36,
        "hwmon",
        (("1-0040", (("VDD_IN", 5.0, 1.0), ("VDD_CPU_GPU_CV", 1.0, 0.35), ("VDD_SOC", 1.0, 0.3))),),
        "/etc/nvpmodel/nvpmodel_p3767_0003_super.conf",
        ((0, "15W"), (1, "25W"), (2, "MAXN_SUPER"), (3, "7W")),
        1,
        None,
        7_802_000,
        6,
        1_728_000,
        ("nvidia,p3768-0000+p3767-0003", "nvidia,p3767-0003", "nvidia,tegra234"),
    ),
}


@dataclass
class JetsonFixture:
    """A written Jetson tree; `apply` sets the board's power (W) by writing every rail."""

    root: Path
    board: Board
    power_files: bool = False
    total_is_sum: bool = field(init=False)

    def __post_init__(self) -> None:
        names = {r[0] for _, rails in self.board.chips for r in rails}
        self.total_is_sum = not names & {"VDD_IN", "POM_5V_IN"}

    def rail_watts(self, board_w: float) -> dict[str, float]:
        """What each connected rail reads when the board draws ``board_w``."""
        rails = [r for _, chip in self.board.chips for r in chip if r[0] != "NC"]
        return {name: board_w * share for name, _, share in rails}

    def total_watts(self, board_w: float) -> float:
        """What a correct meter reports as the board total for ``board_w``."""
        watts = self.rail_watts(board_w)
        return sum(watts.values()) if self.total_is_sum else board_w

    def apply(self, board_w: float, now: float) -> float:
        """Write the rails for ``board_w``; returns the total a meter should see."""
        for addr, rails in self.board.chips:
            for n, (_, volts, share) in enumerate(rails):
                watts = board_w * share
                if self.board.layout == "ina3221x":
                    _write_iio_channel(self.root, addr, n, volts, watts)
                else:
                    _write_hwmon_channel(self.root, addr, n + 1, volts, watts, self.power_files)
        return self.total_watts(board_w)


def _iio_dir(addr: str) -> str:
    return f"/sys/bus/i2c/drivers/ina3221x/{addr}/iio:device{0 if addr.endswith('40') else 1}"


def _hwmon_dir(addr: str) -> str:
    return f"/sys/bus/i2c/drivers/ina3221/{addr}/hwmon/hwmon{3 if addr.endswith('40') else 4}"


def _write_iio_channel(root: Path, addr: str, n: int, volts: float, watts: float) -> None:
    d = _iio_dir(addr)
    write_file(root, f"{d}/in_power{n}_input", f"{round(watts * 1000)}\n")
    write_file(root, f"{d}/in_current{n}_input", f"{round(watts / volts * 1000)}\n")
    write_file(root, f"{d}/in_voltage{n}_input", f"{round(volts * 1000)}\n")


def _write_hwmon_channel(
    root: Path, addr: str, n: int, volts: float, watts: float, power_files: bool
) -> None:
    d = _hwmon_dir(addr)
    millivolts = round(volts * 1000)
    milliamps = round(watts / volts * 1000) if volts else 0
    write_file(root, f"{d}/in{n}_input", f"{millivolts}\n")
    write_file(root, f"{d}/curr{n}_input", f"{milliamps}\n")
    if power_files:
        write_file(root, f"{d}/power{n}_input", f"{millivolts * milliamps}\n")  # µW


def write_jetson(
    root: str | os.PathLike[str], board: str, board_w: float = 10.0, power_files: bool = False
) -> JetsonFixture:
    """Write a Jetson tree for ``board`` (a key of ``JETSON_BOARDS``) drawing ``board_w``."""
    b = JETSON_BOARDS[board]
    r = Path(root)
    write_file(r, "/sys/firmware/devicetree/base/model", b.model + "\x00")
    if b.compatible:
        compatible = "".join(c + "\x00" for c in b.compatible)
        write_file(r, "/sys/firmware/devicetree/base/compatible", compatible)
    (r / "proc").mkdir(parents=True, exist_ok=True)
    if not (r / "proc/device-tree").is_symlink():
        os.symlink("/sys/firmware/devicetree/base", r / "proc/device-tree")
    write_file(r, "/etc/nv_tegra_release", b.release + "\nINSTALL_TYPE=\n")
    write_file(r, b.nvpmodel_file, _nvpmodel_conf(b))
    if not (r / "etc/nvpmodel.conf").is_symlink():
        os.symlink(b.nvpmodel_file, r / "etc/nvpmodel.conf")
    if b.status_mode is not None:
        write_file(r, "/var/lib/nvpmodel/status", f"pmode:{b.status_mode:04d}\n")
    write_file(r, "/proc/meminfo", f"MemTotal:       {b.mem_kb} kB\nMemFree:        1000000 kB\n")
    write_file(r, "/proc/cpuinfo", _arm_cpuinfo(b.cpu_cores))
    write_file(r, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", f"{b.cpu_max_khz}\n")
    for addr, rails in b.chips:
        for n, (name, _, _) in enumerate(rails):
            if b.layout == "ina3221x":
                write_file(r, f"{_iio_dir(addr)}/rail_name_{n}", name + "\n")
            else:
                write_file(r, f"{_hwmon_dir(addr)}/in{n + 1}_label", name + "\n")
        if b.layout == "hwmon":
            d = _hwmon_dir(addr)
            write_file(r, f"{d}/name", "ina3221\n")
            write_file(r, f"{d}/in7_label", "sum of shunt voltages\n")
            write_file(r, f"{d}/in7_input", "0\n")
            write_file(r, f"{d}/curr4_input", "0\n")
            link = r / "sys/class/hwmon" / Path(d).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                os.symlink(os.path.relpath(r / d.lstrip("/"), link.parent), link)
    fixture = JetsonFixture(r, b, power_files)
    fixture.apply(board_w, time.perf_counter())
    return fixture


def _nvpmodel_conf(b: Board) -> str:
    lines = ["# NVPMODEL configuration (fixture)", "< PARAM TYPE=FILE NAME=CPU_ONLINE >"]
    lines += [f"CORE_{i} /sys/devices/system/cpu/cpu{i}/online" for i in range(b.cpu_cores)]
    for mode_id, name in b.modes:
        lines += ["", f"< POWER_MODEL ID={mode_id} NAME={name} >", "CPU_ONLINE CORE_0 1"]
    lines += ["", f"< PM_CONFIG DEFAULT={b.default_mode} >", ""]
    return "\n".join(lines)


def _arm_cpuinfo(cores: int) -> str:
    block = (
        "processor\t: {i}\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
        "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd42\nCPU revision\t: 1\n"
    )
    return "\n".join(block.format(i=i) for i in range(cores)) + "\n"


def write_host_cpu(
    root: str | os.PathLike[str],
    model: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    sockets: int = 2,
    cores_per_socket: int = 4,
    threads_per_core: int = 2,
    max_khz: int | None = 3_200_000,
    flags: str = "fpu sse sse2 avx avx2 fma avx512f",
    mem_kb: int = 16_318_412,
) -> None:
    """Write ``/proc/cpuinfo``, ``/proc/meminfo`` and cpufreq for an x86 host."""
    blocks, i = [], 0
    for socket in range(sockets):
        for core in range(cores_per_socket):
            for _ in range(threads_per_core):
                blocks.append(
                    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
                    f"cpu MHz\t\t: 2000.000\nphysical id\t: {socket}\n"
                    f"siblings\t: {cores_per_socket * threads_per_core}\ncore id\t\t: {core}\n"
                    f"cpu cores\t: {cores_per_socket}\nflags\t\t: {flags}\n"
                )
                i += 1
    write_file(root, "/proc/cpuinfo", "\n".join(blocks) + "\n")
    write_file(root, "/proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:        8000000 kB\n")
    if max_khz is not None:
        write_file(root, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", f"{max_khz}\n")


@dataclass
class RaplFixture:
    """Package zones ``intel-rapl:N`` whose counters `apply` advances by power × elapsed time."""

    root: Path
    max_range_uj: int
    counters: list[int]
    shares: list[float]
    energy_j: float = 0.0
    _last: float | None = None

    def apply(self, package_w: float, now: float) -> float:
        """Advance every counter (wrapping past ``max_energy_range_uj``); returns ``package_w``."""
        if self._last is not None:
            joules = package_w * (now - self._last)
            self.energy_j += joules
            for i, share in enumerate(self.shares):
                self.counters[i] = (self.counters[i] + round(joules * share * 1e6)) % (
                    self.max_range_uj + 1
                )
                write_file(self.root, f"{_rapl_dir(i)}/energy_uj", f"{self.counters[i]}\n")
        self._last = now
        return package_w


def _rapl_dir(i: int) -> str:
    return f"/sys/class/powercap/intel-rapl:{i}"


def write_rapl(
    root: str | os.PathLike[str],
    packages: int = 2,
    max_range_uj: int = 262_143_328_850,
    start_uj: int | None = None,
) -> RaplFixture:
    """Write powercap RAPL zones (package + core/dram sub-zones); counters start ``start_uj``
    (default: 0.5 J below the wrap point, so any test run wraps)."""
    start = max_range_uj - 500_000 if start_uj is None else start_uj
    write_file(root, "/sys/class/powercap/intel-rapl/enabled", "1\n")
    for i in range(packages):
        d = _rapl_dir(i)
        write_file(root, f"{d}/name", f"package-{i}\n")
        write_file(root, f"{d}/max_energy_range_uj", f"{max_range_uj}\n")
        write_file(root, f"{d}/energy_uj", f"{start}\n")
        write_file(root, f"{d}/enabled", "1\n")
        for j, sub in enumerate(("core", "dram")):
            write_file(root, f"{d}:{j}/name", f"{sub}\n")
            write_file(root, f"{d}:{j}/energy_uj", "12345\n")
            write_file(root, f"{d}:{j}/max_energy_range_uj", f"{max_range_uj}\n")
    return RaplFixture(Path(root), max_range_uj, [start] * packages, [1.0 / packages] * packages)


class PowerWriter:
    """Background thread that varies a fixture's power over time and records what it wrote.

    power(t) = base_w · (1 + swing · sin(2π t / period_s)), written every ``interval_s``.
    `energy_between` integrates the written (piecewise-constant) total power: the ground truth a
    meter is checked against.
    """

    def __init__(
        self,
        fixture: JetsonFixture | RaplFixture,
        base_w: float = 10.0,
        swing: float = 0.4,
        period_s: float = 0.2,
        interval_s: float = 0.002,
    ) -> None:
        self.fixture = fixture
        self.base_w, self.swing = base_w, swing
        self.period_s, self.interval_s = period_s, interval_s
        self.history: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="PowerWriter", daemon=True)
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()

    def power_at(self, t: float) -> float:
        """Board/package power (W) the waveform asks for at ``t`` (perf_counter seconds)."""
        phase = 2 * math.pi * (t - self._t0) / self.period_s
        return self.base_w * (1 + self.swing * math.sin(phase))

    def _tick(self) -> None:
        now = time.perf_counter()
        total = self.fixture.apply(self.power_at(now), now)
        with self._lock:
            self.history.append((now, total))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def __enter__(self) -> PowerWriter:
        self._tick()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def energy_between(self, t0: float, t1: float) -> float:
        """Joules of the written total power between ``t0`` and ``t1``."""
        with self._lock:
            points = list(self.history)
        joules = 0.0
        for (ta, wa), (tb, _) in zip(points, [*points[1:], (math.inf, 0.0)], strict=True):
            lo, hi = max(ta, t0), min(tb, t1)
            if hi > lo:
                joules += wa * (hi - lo)
        return joules
