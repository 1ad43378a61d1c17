"""Device profiles: published figures with sources, as data (built-in JSON and user files)."""

from ganglion.device.profiles.cpu_host import CpuInfo, detect_cpu_profile, read_cpu_info
from ganglion.device.profiles.registry import (
    ENV_VAR,
    available_profiles,
    builtin_profiles,
    get_profile,
    load_profile_file,
    user_profile_files,
)
from ganglion.device.profiles.schema import (
    DeviceProfile,
    NeuromorphicFigures,
    PowerMode,
    ProfileError,
    profile_from_dict,
)

__all__ = [
    "ENV_VAR",
    "CpuInfo",
    "DeviceProfile",
    "NeuromorphicFigures",
    "PowerMode",
    "ProfileError",
    "available_profiles",
    "builtin_profiles",
    "detect_cpu_profile",
    "get_profile",
    "load_profile_file",
    "profile_from_dict",
    "read_cpu_info",
    "user_profile_files",
]
