"""Energy meters: one `EnergyMeter` interface over NVML, Jetson rails, RAPL and a model."""

from __future__ import annotations

import os

from ganglion.device.meters.base import EnergyMeter, MeterError, PollingMeter, Reading
from ganglion.device.meters.jetson_rails import JetsonRailsMeter, Rail, find_rails
from ganglion.device.meters.nvml_meter import NvmlMeter, load_nvml, nvml_gpus
from ganglion.device.meters.rapl import RaplMeter, RaplZone, find_rapl_zones
from ganglion.device.meters.simulated import SimulatedMeter

__all__ = [
    "EnergyMeter",
    "JetsonRailsMeter",
    "MeterError",
    "NvmlMeter",
    "PollingMeter",
    "Rail",
    "RaplMeter",
    "RaplZone",
    "Reading",
    "SimulatedMeter",
    "find_rails",
    "find_rapl_zones",
    "load_nvml",
    "nvml_gpus",
    "open_hardware_meter",
]


def open_hardware_meter(
    root: str | os.PathLike[str] = "/", use_nvml: bool | None = None
) -> tuple[EnergyMeter | None, dict[str, str]]:
    """The first meter that works here: NVML, then Jetson rails, then RAPL.

    Returns the meter (``None`` if none works) and, for each one skipped, why. NVML talks to the
    driver, not to files, so it is tried only when ``root`` is ``/`` (unless ``use_nvml``).
    """
    skipped: dict[str, str] = {}
    if use_nvml is None:
        use_nvml = os.path.abspath(root) == "/"
    if use_nvml:
        try:
            return NvmlMeter(), skipped
        except MeterError as e:
            skipped["nvml"] = str(e)
    else:
        skipped["nvml"] = f"not tried under root {root}"
    for name, make in (("jetson", JetsonRailsMeter), ("rapl", RaplMeter)):
        try:
            meter = make(root)
            meter.start()  # proves the counters are readable (RAPL needs root)
            meter.stop()
            return meter, skipped
        except MeterError as e:
            skipped[name] = str(e)
    return None, skipped
