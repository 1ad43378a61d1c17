"""The host CPU's profile: model, cores and frequency detected from ``/proc`` and ``/sys``.

Figures that the files cannot give (SIMD throughput per cycle, memory bandwidth, power) come
from the ``cpu.json`` template and stay marked as assumed; `calibrate_cpu` in the simulator fits
the effective throughput to a measured run. Files are read through `sysroot` (bounded, regular
files only); a value that is not a plausible number (a core count below 1 or above the logical
count, a frequency outside 1 MHz-100 GHz, NaN) is ignored and the next source is used.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ganglion.device.profiles.schema import DeviceProfile, profile_from_dict
from ganglion.device.sysroot import CPUINFO_MAX_BYTES, VALUE_MAX_BYTES, read_optional

_SIMD_ORDER = ("avx512f", "avx2", "avx", "asimd", "sse2")
_MHZ_RANGE = (1.0, 100_000.0)
_MODEL_MAX_CHARS = 200
_MAX_SOCKETS = 1024
_FIELDS = {
    "processor",
    "model name",
    "Model",
    "Hardware",
    "CPU part",
    "physical id",
    "cpu cores",
    "flags",
    "Features",
    "cpu MHz",
    "BogoMIPS",
}


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo``, ``/proc/meminfo`` and cpufreq say about the host."""

    model: str
    logical_cores: int
    physical_cores: int
    max_mhz: float
    frequency_source: str
    simd: str
    memory_bytes: float | None


def read_cpu_info(root: str | os.PathLike[str] = "/") -> CpuInfo:
    """Parse the host CPU's model, core counts, max frequency and widest SIMD under ``root``.

    Raises `FileNotFoundError` without ``/proc/cpuinfo``, and `OSError` naming the file when it
    is there but unreadable (not a regular file, too big, permission denied).
    """
    text = read_optional(root, "/proc/cpuinfo", CPUINFO_MAX_BYTES)
    if text is None:
        raise FileNotFoundError(f"cannot read {os.path.join(str(root), 'proc/cpuinfo')}")
    processors = 0
    first: dict[str, str] = {}
    hardware: str | None = None
    sockets: set[str] = set()
    for block in _blocks(text):
        hardware = hardware or block.get("Hardware")
        if "processor" not in block:
            continue
        processors += 1
        first = first or block
        if "physical id" in block and len(sockets) < _MAX_SOCKETS:
            sockets.add(block["physical id"])
    model = (
        first.get("model name")
        or first.get("Model")
        or hardware
        or _arm_part(first)
        or "unknown CPU"
    )
    model = model[:_MODEL_MAX_CHARS]
    logical = max(processors, 1)
    cores = first.get("cpu cores", "")
    per_socket = int(cores) if re.fullmatch(r"\d{1,6}", cores) else 0
    physical = per_socket * max(len(sockets), 1)
    if not 1 <= physical <= logical:
        physical = logical
    flags = first.get("flags") or first.get("Features") or ""
    simd = next((f for f in _SIMD_ORDER if re.search(rf"(?<!\S){f}(?!\S)", flags)), "none")
    max_mhz, freq_source = _max_frequency_mhz(root, first)
    return CpuInfo(model, logical, physical, max_mhz, freq_source, simd, _mem_total(root))


def _template() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("cpu.json").read_text())


def detect_cpu_profile(root: str | os.PathLike[str] = "/") -> DeviceProfile:
    """The ``cpu`` profile for the host under ``root`` (template figures stay marked assumed).

    Without a readable ``/proc/cpuinfo`` it is the template, with the reason in ``detected``.
    """
    template = _template()
    flops_per_cycle: dict[str, int] = template.pop("flops_per_cycle_per_core")
    watts_per_core: float = template.pop("watts_per_core")
    try:
        info = read_cpu_info(root)
    except OSError as e:
        template["detected"] = {"error": str(e)}
        return profile_from_dict(template, origin="cpu.json template (host not detected)")
    data: dict[str, Any] = dict(template)
    cycle_ops = flops_per_cycle[info.simd]
    data["display_name"] = f"{info.model} ({info.physical_cores} cores, {info.max_mhz:.0f} MHz)"
    data["peak_ops"] = {"fp32": info.physical_cores * info.max_mhz * 1e6 * cycle_ops}
    data["power_modes"] = [{"name": "default", "watts": watts_per_core * info.physical_cores}]
    sources = dict(template["sources"])
    sources["detected"] = f"/proc/cpuinfo; frequency from {info.frequency_source}"
    if info.memory_bytes is not None:
        data["memory_bytes"] = info.memory_bytes
        sources["memory_bytes"] = "/proc/meminfo MemTotal"
        data["assumed"] = [k for k in template["assumed"] if k != "memory_bytes"]
    data["sources"] = sources
    data["detected"] = {
        "model": info.model,
        "logical_cores": info.logical_cores,
        "physical_cores": info.physical_cores,
        "max_mhz": info.max_mhz,
        "simd": info.simd,
        "fp32_ops_per_cycle_per_core": cycle_ops,
    }
    return profile_from_dict(data, origin=f"detected under {root}")


def _blocks(text: str) -> Iterator[dict[str, str]]:
    """The blank-line-separated blocks of cpuinfo, keeping only the fields we use (one line at a
    time, so a hostile file of millions of lines costs no more memory than its text)."""
    block: dict[str, str] = {}
    for line in io.StringIO(text):
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in _FIELDS:
            block[key] = value.strip()
        elif not line.strip() and block:
            yield block
            block = {}
    if block:
        yield block


def _arm_part(first: dict[str, str]) -> str | None:
    part = first.get("CPU part")
    return f"ARM CPU part {part}" if part else None


def _mhz(text: str | None, scale: float = 1.0) -> float | None:
    """``text`` as a frequency in MHz (× ``scale``) when it is a plausible one, else ``None``."""
    match = re.fullmatch(r"\s*(\d{1,12}(?:\.\d{0,12})?)\s*", text or "")
    if match is None:
        return None
    mhz = float(match.group(1)) * scale
    return mhz if math.isfinite(mhz) and _MHZ_RANGE[0] <= mhz <= _MHZ_RANGE[1] else None


def _max_frequency_mhz(root: str | os.PathLike[str], first: dict[str, str]) -> tuple[float, str]:
    path = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    try:
        khz = read_optional(root, path, VALUE_MAX_BYTES)
    except OSError:
        khz = None  # unreadable: fall back to /proc/cpuinfo like a missing cpufreq
    for mhz, source in (
        (_mhz(khz, 1e-3), path),
        (_mhz(first.get("cpu MHz")), "/proc/cpuinfo cpu MHz"),
        (_mhz(first.get("BogoMIPS")), "/proc/cpuinfo BogoMIPS (no cpufreq)"),
    ):
        if mhz is not None:
            return mhz, source
    return 1000.0, "none found (1000 MHz assumed)"


def _mem_total(root: str | os.PathLike[str]) -> float | None:
    try:
        text = read_optional(root, "/proc/meminfo")
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d{1,15})\s+kB", text or "", re.MULTILINE)
    kib = int(match.group(1)) if match else 0
    return kib * 1024.0 if kib > 0 else None
