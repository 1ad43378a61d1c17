"""Jetson identity from its real files: board model, L4T/JetPack release, nvpmodel power mode.

- ``/proc/device-tree/model``: the board name, NUL-terminated
  (``NVIDIA Jetson AGX Orin Developer Kit``).
- ``/proc/device-tree/compatible``: NUL-separated strings naming carrier and module part numbers
  (``nvidia,p3737-0000+p3701-0005``); the module's part number tells the memory size apart.
- ``/etc/nv_tegra_release``: ``# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ...`` → L4T 35.4.1.
- ``/etc/nvpmodel.conf`` (usually a symlink to ``/etc/nvpmodel/nvpmodel_<board>.conf``): the modes
  (``< POWER_MODEL ID=2 NAME=30W >``) and the boot default (``< PM_CONFIG DEFAULT=2 >``).
- ``/var/lib/nvpmodel/status``: ``pmode:0002`` (newer releases append `` fmode:...``), written by
  ``nvpmodel -m``; when absent, the board runs the configuration's default mode.
Files are read through `sysroot` (bounded, regular files only, with a timeout): an absent file
gives ``None``; one that is there but unreadable raises `OSError` naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ganglion.device.sysroot import VALUE_MAX_BYTES, read_optional

# L4T major.minor → JetPack, from NVIDIA's JetPack archive (first L4T release of each JetPack).
_JETPACK = {
    "32.6": "4.6",
    "32.7": "4.6.x",
    "35.1": "5.0.2",
    "35.2": "5.1",
    "35.3": "5.1.1",
    "35.4": "5.1.2",
    "35.5": "5.1.3",
    "35.6": "5.1.4",
    "36.2": "6.0 DP",
    "36.3": "6.0",
    "36.4": "6.1/6.2",
}

# Jetson Orin module part numbers → built-in profile. The modules and their memory are listed in
# NVIDIA's Jetson Linux Developer Guide (r35.x and r36.x), Quick Start, "Force Recovery Mode":
# P3701-0000 (AGX Orin 32GB, the first developer kit's module), P3701-0004 (AGX Orin 32GB),
# P3701-0005 (AGX Orin 64GB), P3701-0008 (AGX Orin Industrial 64GB), P3767-0000 (Orin NX 16GB),
# P3767-0001 (Orin NX 8GB), P3767-0003 and P3767-0005 (Orin Nano 8GB), P3767-0004 (Orin Nano
# 4GB). Modules with no built-in profile (Industrial, NX 8GB, Nano 4GB) map to None rather than
# to a neighbour's figures.
MODULE_PROFILES: dict[str, str | None] = {
    "p3701-0000": "jetson-agx-orin-32gb",
    "p3701-0004": "jetson-agx-orin-32gb",
    "p3701-0005": "jetson-agx-orin-64gb",
    "p3701-0008": None,
    "p3767-0000": "jetson-orin-nx-16gb",
    "p3767-0001": None,
    "p3767-0003": "jetson-orin-nano-8gb",
    "p3767-0004": None,
    "p3767-0005": "jetson-orin-nano-8gb",
}
_MODULE = re.compile(r"\bp(3701|3767)-(\d{4})")


@dataclass(frozen=True)
class PowerModeState:
    """The active nvpmodel mode and the modes the board offers (id → name)."""

    active_id: int
    active_name: str | None
    default_id: int | None
    modes: dict[int, str]
    from_status_file: bool


def jetson_model(root: str | os.PathLike[str] = "/") -> str | None:
    """The board name from ``/proc/device-tree/model``; ``None`` off Jetson."""
    text = read_optional(root, "/proc/device-tree/model", VALUE_MAX_BYTES)
    if text is None:
        return None
    name = text.strip("\x00").strip()
    return name if "jetson" in name.lower() or "nvidia" in name.lower() else None


def jetson_module(root: str | os.PathLike[str] = "/") -> str | None:
    """The Orin module's part number (``p3701-0005``) from ``/proc/device-tree/compatible``."""
    text = read_optional(root, "/proc/device-tree/compatible", VALUE_MAX_BYTES) or ""
    match = _MODULE.search(text.lower())
    return f"p{match.group(1)}-{match.group(2)}" if match else None


def l4t_version(root: str | os.PathLike[str] = "/") -> str | None:
    """The L4T release (``35.4.1``) from ``/etc/nv_tegra_release``; ``None`` when absent."""
    text = read_optional(root, "/etc/nv_tegra_release", VALUE_MAX_BYTES)
    match = re.search(r"#\s*R(\d{1,4})\s*\(release\),\s*REVISION:\s*([\d.]{1,16})", text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def jetpack_version(l4t: str | None) -> str | None:
    """The JetPack release that shipped an L4T version (``None`` if unknown)."""
    if l4t is None:
        return None
    return _JETPACK.get(".".join(l4t.split(".")[:2]))


def power_mode(root: str | os.PathLike[str] = "/") -> PowerModeState | None:
    """The active nvpmodel mode from the status file and configuration; ``None`` without either."""
    conf = read_optional(root, "/etc/nvpmodel.conf") or ""
    modes = {
        int(m.group(1)): m.group(2)[:64]
        for m in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d{1,9})\s+NAME=([^\s>]+)\s*>", conf)
    }
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d{1,9})\s*>", conf)
    default_id = int(default.group(1)) if default else None
    status = read_optional(root, "/var/lib/nvpmodel/status", VALUE_MAX_BYTES) or ""
    pmode = re.search(r"pmode:(\d{1,9})\b", status)
    if pmode is not None:
        active = int(pmode.group(1))
    elif default_id is not None:
        active = default_id
    else:
        return None
    return PowerModeState(active, modes.get(active), default_id, modes, pmode is not None)


def memory_total_bytes(root: str | os.PathLike[str] = "/") -> int | None:
    """``MemTotal`` from ``/proc/meminfo`` in bytes."""
    text = read_optional(root, "/proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d{1,15})\s+kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def jetson_profile_name(
    model: str | None, memory_bytes: int | None, module: str | None = None
) -> str | None:
    """The built-in profile for a board: by the module's part number where it is a known one
    (`MODULE_PROFILES`), else by the board name, with the memory telling 64 GB from 32 GB AGX
    Orin."""
    if model is None:
        return None
    if module in MODULE_PROFILES:
        return MODULE_PROFILES[module]
    m = model.lower()
    gib = (memory_bytes or 0) / 2**30
    if "agx orin" in m:
        return "jetson-agx-orin-64gb" if gib > 40 else "jetson-agx-orin-32gb"
    if "orin nx" in m:
        return "jetson-orin-nx-16gb"
    if "orin nano" in m:
        return "jetson-orin-nano-8gb"
    return None
