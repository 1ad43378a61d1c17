"""The host CPU's profile: model, cores and frequency detected from ``/proc`` and ``/sys``.

Figures that the files cannot give (SIMD throughput per cycle, memory bandwidth, power) come
from the ``cpu.json`` template and stay marked as assumed; `calibrate_cpu` in the simulator fits
the effective throughput to a measured run.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ganglion.device.profiles.schema import DeviceProfile, profile_from_dict
from ganglion.device.sysroot import read_optional

_SIMD_ORDER = ("avx512f", "avx2", "avx", "asimd", "sse2")


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
    """Parse the host CPU's model, core counts, max frequency and widest SIMD under ``root``."""
    text = read_optional(root, "/proc/cpuinfo")
    if text is None:
        raise FileNotFoundError(f"cannot read {os.path.join(str(root), 'proc/cpuinfo')}")
    blocks = [b for b in text.split("\n\n") if b.strip()]
    entries = [dict(_fields(b)) for b in blocks]
    processors = [e for e in entries if "processor" in e]
    first = processors[0] if processors else {}
    model = (
        first.get("model name")
        or first.get("Model")
        or _first_value(entries, "Hardware")
        or _arm_part(first)
        or "unknown CPU"
    )
    logical = max(len(processors), 1)
    sockets = {e.get("physical id") for e in processors if "physical id" in e}
    per_socket = int(first.get("cpu cores", "0") or 0)
    physical = per_socket * max(len(sockets), 1) if per_socket else logical
    flags = set((first.get("flags") or first.get("Features") or "").split())
    simd = next((f for f in _SIMD_ORDER if f in flags), "none")
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
    except FileNotFoundError as e:
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


def _fields(block: str) -> list[tuple[str, str]]:
    pairs = []
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _first_value(entries: list[dict[str, str]], key: str) -> str | None:
    return next((e[key] for e in entries if e.get(key)), None)


def _arm_part(first: dict[str, str]) -> str | None:
    part = first.get("CPU part")
    return f"ARM CPU part {part}" if part else None


def _max_frequency_mhz(root: str | os.PathLike[str], first: dict[str, str]) -> tuple[float, str]:
    path = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    khz = read_optional(root, path)
    if khz and khz.strip().isdigit():
        return int(khz) / 1000.0, path
    if "cpu MHz" in first:
        return float(first["cpu MHz"]), "/proc/cpuinfo cpu MHz"
    bogo = re.match(r"[\d.]+", first.get("BogoMIPS", ""))
    if bogo:
        return float(bogo.group()), "/proc/cpuinfo BogoMIPS (no cpufreq)"
    return 1000.0, "none found (1000 MHz assumed)"


def _mem_total(root: str | os.PathLike[str]) -> float | None:
    text = read_optional(root, "/proc/meminfo")
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text or "", re.MULTILINE)
    return int(match.group(1)) * 1024.0 if match else None
