"""Energy meters: one `EnergyMeter` interface over NVML, Jetson rails, RAPL and a model."""

from __future__ import annotations

import os

from ganglion.device.meters.base import EnergyMeter, MeterError, PollingMeter, Reading
from ganglion.device.meters.jetson_rails import JetsonRailsMeter, Rail, find_rails
from ganglion.device.meters.nvml_meter import NvmlMeter, load_nvml, nvml_gpu_for, nvml_gpus
from ganglion.device.meters.rapl import RaplMeter, RaplZone, find_rapl_zones
from ganglion.device.meters.simulated import SimulatedMeter
from ganglion.device.profiles.schema import DeviceProfile, PowerMode

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
    "choose_meter",
    "find_rails",
    "find_rapl_zones",
    "load_nvml",
    "nvml_gpu_for",
    "nvml_gpus",
    "open_hardware_meter",
]


def open_hardware_meter(
    root: str | os.PathLike[str] = "/", backend_device: str = "cpu", use_nvml: bool | None = None
) -> tuple[EnergyMeter | None, dict[str, str]]:
    """The meter of the chip that runs work on ``backend_device`` here: a Jetson's rails where
    there are some (they measure the whole board, CPU and GPU), else NVML for ``cuda[:N]`` (the
    GPU behind it, `nvml_gpu_for`) and the RAPL package zones for ``cpu``.

    Returns the meter (``None`` if none works) and, for each one skipped, why. NVML talks to the
    driver, not to files, so it is tried only when ``root`` is ``/`` (unless ``use_nvml``).
    """
    skipped: dict[str, str] = {}
    try:
        return _probed(JetsonRailsMeter(root)), skipped
    except MeterError as e:
        skipped["jetson"] = str(e)
    if backend_device == "cpu":
        try:
            return _probed(RaplMeter(root)), skipped
        except MeterError as e:
            skipped["rapl"] = str(e)
    elif backend_device.startswith("cuda"):
        if use_nvml is None:
            use_nvml = os.path.abspath(root) == "/"
        if not use_nvml:
            skipped["nvml"] = f"not tried under root {root}"
        else:
            try:
                return NvmlMeter(nvml_gpu_for(backend_device)), skipped
            except MeterError as e:
                skipped["nvml"] = str(e)
    else:
        skipped["meter"] = f"no hardware meter for backend device {backend_device!r}"
    return None, skipped


def _probed(meter: EnergyMeter) -> EnergyMeter:
    """``meter`` once a start and stop proved its counters readable (RAPL needs root)."""
    meter.start()
    meter.stop()
    return meter


def choose_meter(
    profile: DeviceProfile,
    backend_device: str,
    host_profile: str,
    root: str | os.PathLike[str] = "/",
    simulate: bool = False,
    mode: PowerMode | None = None,
) -> tuple[EnergyMeter, list[str]]:
    """The meter for ``profile``'s energy while the work runs on ``backend_device`` here.

    A hardware meter (`open_hardware_meter`) only where it measures that device: ``profile`` is
    this machine's (``host_profile``: the detected Jetson board, else ``cpu``), or a GPU profile
    while the work runs on CUDA off a Jetson, on a GPU NVML names as that model. Otherwise,
    with ``simulate``, or where no meter works, the profile's power limit (``mode``; default:
    its default mode) over the wall clock, whose ``source`` says why. Returns the meter and
    notes naming the meters skipped.
    """
    mode = mode or profile.mode()
    notes: list[str] = []
    discrete_gpu = profile.kind == "gpu" and backend_device.startswith("cuda")
    if simulate:
        why = "simulated on request"
    elif profile.name != host_profile and not (discrete_gpu and host_profile == "cpu"):
        here = f"this machine is {host_profile}, the work runs on {backend_device}"
        why = f"no meter here measures {profile.name}: {here}"
    else:
        meter, skipped = open_hardware_meter(root, backend_device)
        notes = [f"{name}: {reason}" for name, reason in skipped.items()]
        gpu = getattr(meter, "gpu_name", None)
        if discrete_gpu and gpu is not None and not _same_gpu(gpu, profile.display_name):
            why = f"the GPU here is {gpu}, not a {profile.display_name}"
        elif meter is not None:
            return meter, notes
        else:
            why = "no hardware meter works here"
    return SimulatedMeter(mode.watts, f"{profile.name} {mode.name} power limit ({why})"), notes


def _same_gpu(nvml_name: str, display_name: str) -> bool:
    """Whether NVML's GPU name is the profile's model ("NVIDIA GeForce RTX 4090" is a
    "GeForce RTX 4090"): letters and digits compared, case ignored."""

    def squeeze(text: str) -> str:
        return "".join(c for c in text.lower() if c.isalnum())

    return bool(squeeze(display_name)) and squeeze(display_name) in squeeze(nvml_name)
