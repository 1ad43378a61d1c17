"""Ganglion device: profiles (published figures as data), energy meters, simulators, detection.

Imports nothing else of Ganglion's; optional packages (pynvml) load inside the meter needing them.
"""

from ganglion.device.detect import Detection, detect
from ganglion.device.meters import (
    EnergyMeter,
    JetsonRailsMeter,
    MeterError,
    NvmlMeter,
    RaplMeter,
    Reading,
    SimulatedMeter,
    choose_meter,
    open_hardware_meter,
)
from ganglion.device.profiles import (
    DeviceProfile,
    PowerMode,
    ProfileError,
    available_profiles,
    get_profile,
    load_profile_file,
)
from ganglion.device.simulator import (
    LayerOpCounts,
    OpCounts,
    Prediction,
    Sample,
    calibrate_cpu,
    predict,
)
from ganglion.device.sysroot import RootError
from ganglion.device.tegrastats import TegrastatsSample, parse_tegrastats

__all__ = [
    "Detection",
    "DeviceProfile",
    "EnergyMeter",
    "JetsonRailsMeter",
    "LayerOpCounts",
    "MeterError",
    "NvmlMeter",
    "OpCounts",
    "PowerMode",
    "Prediction",
    "ProfileError",
    "RaplMeter",
    "Reading",
    "RootError",
    "Sample",
    "SimulatedMeter",
    "TegrastatsSample",
    "available_profiles",
    "calibrate_cpu",
    "choose_meter",
    "detect",
    "get_profile",
    "load_profile_file",
    "open_hardware_meter",
    "parse_tegrastats",
    "predict",
]
