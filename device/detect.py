"""`detect(root)`: what this machine (or the fixture tree at ``root``) offers for profiling."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ganglion.device import jetson_system
from ganglion.device.meters.base import MeterError
from ganglion.device.meters.jetson_rails import TOTAL_RAILS, find_rails
from ganglion.device.meters.nvml_meter import nvml_gpus
from ganglion.device.meters.rapl import RaplMeter, find_rapl_zones
from ganglion.device.profiles.cpu_host import read_cpu_info


@dataclass(frozen=True)
class Detection:
    """Detected hardware; each ``*_error`` field says why a part was not found or not readable."""

    root: str
    cpu: dict[str, Any]
    gpus: list[dict[str, Any]] = field(default_factory=list)
    gpu_error: str | None = None
    jetson_model: str | None = None
    jetson_profile: str | None = None
    l4t_version: str | None = None
    jetpack_version: str | None = None
    power_mode: dict[str, Any] | None = None
    rails_layout: str | None = None
    rails_w: dict[str, float] = field(default_factory=dict)
    total_rail: str | None = None
    rails_error: str | None = None
    rapl_zones: list[str] = field(default_factory=list)
    rapl_readable: bool = False
    rapl_error: str | None = None

    @property
    def profile_name(self) -> str:
        """The built-in profile matching this machine: the Jetson board, else ``cpu``."""
        return self.jetson_profile or "cpu"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["profile_name"] = self.profile_name
        return data


def detect(root: str | os.PathLike[str] = "/", use_nvml: bool | None = None) -> Detection:
    """Detect GPUs (NVML, only when ``root`` is ``/`` unless ``use_nvml``), the Jetson board,
    L4T release, nvpmodel mode, power rails and RAPL under ``root``."""
    root_s = str(root)
    try:
        info = read_cpu_info(root)
        cpu: dict[str, Any] = asdict(info)
    except FileNotFoundError as e:
        cpu = {"error": str(e)}
    gpus, gpu_error = _gpus(root_s, use_nvml)
    model = jetson_system.jetson_model(root)
    l4t = jetson_system.l4t_version(root)
    mode = jetson_system.power_mode(root)
    rails_w, layout, total, rails_error = _rails(root)
    zones, readable, rapl_error = _rapl(root)
    return Detection(
        root=root_s,
        cpu=cpu,
        gpus=gpus,
        gpu_error=gpu_error,
        jetson_model=model,
        jetson_profile=jetson_system.jetson_profile_name(
            model, jetson_system.memory_total_bytes(root)
        ),
        l4t_version=l4t,
        jetpack_version=jetson_system.jetpack_version(l4t),
        power_mode=None if mode is None else asdict(mode),
        rails_layout=layout,
        rails_w=rails_w,
        total_rail=total,
        rails_error=rails_error,
        rapl_zones=zones,
        rapl_readable=readable,
        rapl_error=rapl_error,
    )


def _gpus(root: str, use_nvml: bool | None) -> tuple[list[dict[str, Any]], str | None]:
    if use_nvml is None:
        use_nvml = os.path.abspath(root) == "/"
    if not use_nvml:
        return [], f"NVML not queried under root {root}"
    try:
        return nvml_gpus(), None
    except MeterError as e:
        return [], str(e)


def _rails(
    root: str | os.PathLike[str],
) -> tuple[dict[str, float], str | None, str | None, str | None]:
    try:
        rails = find_rails(root)
        watts = {r.name: r.watts() for r in rails}
    except MeterError as e:
        return {}, None, None, str(e)
    if not rails:
        return {}, None, None, "no INA3221 rails found"
    total = next((n for n in TOTAL_RAILS if n in watts), None)
    return watts, rails[0].layout, total, None


def _rapl(root: str | os.PathLike[str]) -> tuple[list[str], bool, str | None]:
    try:
        zones = find_rapl_zones(root)
    except MeterError as e:
        return [], False, str(e)
    if not zones:
        return [], False, "no intel-rapl zones in /sys/class/powercap"
    names = [z.name for z in zones]
    try:
        RaplMeter(root).raw_uj()
    except MeterError as e:
        return names, False, str(e)
    return names, True, None
