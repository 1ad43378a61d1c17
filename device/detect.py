"""`detect(root)`: what this machine (or the fixture tree at ``root``) offers for profiling.

Detection never fails because of what the files hold: each part is read on its own, and a part
whose file is there but unreadable (a FIFO, a device, too big, garbage where a number belongs)
is reported as ``unreadable (FILE: what is wrong)`` while the rest is still detected. Only a
``root`` that does not exist or is not a folder is an error (`RootError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from ganglion.device import jetson_system
from ganglion.device.meters.base import MeterError, timed_read
from ganglion.device.meters.jetson_rails import board_total, find_rails
from ganglion.device.meters.nvml_meter import nvml_gpus
from ganglion.device.meters.rapl import RaplMeter, find_rapl_zones
from ganglion.device.profiles.cpu_host import read_cpu_info
from ganglion.device.profiles.schema import DeviceProfile, PowerMode
from ganglion.device.sysroot import check_root

T = TypeVar("T")


def unreadable(reason: object) -> str:
    """How a part that could not be read is reported: ``unreadable (FILE: what is wrong)``."""
    return f"unreadable ({reason})"


@dataclass(frozen=True)
class Detection:
    """Detected hardware; each ``*_error`` field says why a part was not found or not readable.

    ``unreadable`` maps an identity part (``jetson_model``, ``jetson_module``, ``l4t_version``,
    ``power_mode``, ``memory``) to why its file could not be read. ``rails_w`` holds the rails
    that read; ``rails_unreadable`` the others, with why. ``total_w`` is the board's power from
    ``total_source`` (its ``VDD_IN`` rail, or the sum of all rails on boards without one).
    """

    root: str
    cpu: dict[str, Any]
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_error: str | None = None
    jetson_model: str | None = None
    jetson_module: str | None = None
    jetson_profile: str | None = None
    l4t_version: str | None = None
    jetpack_version: str | None = None
    power_mode: dict[str, Any] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)
    rails_layout: str | None = None
    rails_w: dict[str, float] = field(default_factory=dict)
    rails_unreadable: dict[str, str] = field(default_factory=dict)
    total_rail: str | None = None
    total_w: float | None = None
    total_source: str | None = None
    rails_error: str | None = None
    rapl_zones: list[str] = field(default_factory=list)
    rapl_readable: bool = False
    rapl_error: str | None = None

    @property
    def profile_name(self) -> str:
        """The built-in profile matching this machine: the Jetson board, else ``cpu``."""
        return self.jetson_profile or "cpu"

    def active_mode(self, profile: DeviceProfile) -> PowerMode:
        """``profile``'s power mode that nvpmodel reports active here (by nvpmodel id, else by
        name) when ``profile`` is this board's; else, or when none matches, its default."""
        active = self.power_mode if profile.name == self.profile_name else None
        if active is not None:
            for key, value in (("nvpmodel_id", "active_id"), ("name", "active_name")):
                match = [m for m in profile.power_modes if getattr(m, key) == active[value]]
                if match:
                    return match[0]
        return profile.mode()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["profile_name"] = self.profile_name
        return data


def detect(root: str | os.PathLike[str] = "/", use_nvml: bool | None = None) -> Detection:
    """Detect GPUs (NVML, only when ``root`` is ``/`` unless ``use_nvml``), the Jetson board,
    L4T release, nvpmodel mode, power rails and RAPL under ``root``.

    Raises `RootError` when ``root`` does not exist or is not a folder; nothing else.
    """
    check_root(root)
    root_s = str(root)
    try:
        cpu: dict[str, Any] = asdict(read_cpu_info(root))
    except FileNotFoundError as e:
        cpu = {"error": str(e)}
    except OSError as e:
        cpu = {"error": unreadable(e)}
    gpus, gpu_error = _gpus(root_s, use_nvml)
    bad: dict[str, str] = {}
    model = _part(bad, "jetson_model", lambda: jetson_system.jetson_model(root))
    module = _part(bad, "jetson_module", lambda: jetson_system.jetson_module(root))
    memory = _part(bad, "memory", lambda: jetson_system.memory_total_bytes(root))
    l4t = _part(bad, "l4t_version", lambda: jetson_system.l4t_version(root))
    mode = _part(bad, "power_mode", lambda: jetson_system.power_mode(root))
    rails = _rails(root)
    zones, readable, rapl_error = _rapl(root)
    return Detection(
        root=root_s,
        cpu=cpu,
        gpus=gpus,
        gpu_error=gpu_error,
        jetson_model=model,
        jetson_module=module,
        jetson_profile=jetson_system.jetson_profile_name(model, memory, module),
        l4t_version=l4t,
        jetpack_version=jetson_system.jetpack_version(l4t),
        power_mode=None if mode is None else asdict(mode),
        unreadable=bad,
        **rails,
        rapl_zones=zones,
        rapl_readable=readable,
        rapl_error=rapl_error,
    )


def _part(bad: dict[str, str], key: str, read: Callable[[], T | None]) -> T | None:
    """``read()``; an unreadable file is recorded in ``bad[key]`` and gives ``None``."""
    try:
        return read()
    except OSError as e:
        bad[key] = str(e)
        return None


def _gpus(root: str, use_nvml: bool | None) -> tuple[list[dict[str, Any]], str | None]:
    if use_nvml is None:
        use_nvml = os.path.abspath(root) == "/"
    if not use_nvml:
        return [], f"NVML not queried under root {root}"
    try:
        return nvml_gpus(), None
    except MeterError as e:
        return [], str(e)


def _rails(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The Detection fields about INA3221 rails: each rail's watts or why it is unreadable."""
    try:
        rails = find_rails(root)
    except MeterError as e:
        return {"rails_error": unreadable(e)}
    if not rails:
        return {"rails_error": "no INA3221 rails found"}
    watts: dict[str, float] = {}
    bad: dict[str, str] = {}
    for rail in rails:
        try:
            watts[rail.name] = timed_read(rail.watts, f"rail {rail.name}")
        except MeterError as e:
            bad[rail.name] = str(e)
    total, summed, how = board_total(rails)
    missing = [r.name for r in summed if r.name not in watts]
    return {
        "rails_layout": rails[0].layout,
        "rails_w": watts,
        "rails_unreadable": bad,
        "total_rail": None if total is None else total.name,
        "total_w": None if missing else sum(watts[r.name] for r in summed),
        "total_source": how if not missing else f"{how}: {', '.join(missing)} unreadable",
    }


def _rapl(root: str | os.PathLike[str]) -> tuple[list[str], bool, str | None]:
    try:
        zones = find_rapl_zones(root)
    except MeterError as e:
        return [], False, unreadable(e)
    if not zones:
        return [], False, "no intel-rapl zones in /sys/class/powercap"
    names = [z.name for z in zones]
    try:
        RaplMeter(root).raw_uj()
    except MeterError as e:
        return names, False, unreadable(e)
    return names, True, None
