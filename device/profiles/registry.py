"""Where profiles come from: built-in JSON files, the detected host CPU, and user files.

Users add a device without code by writing a JSON or TOML file and pointing Ganglion at it:
- ``paths`` given to `available_profiles` (the CLI's ``--devices FILE``),
- the ``GANGLION_DEVICES`` environment variable: files or folders, separated by ``os.pathsep``,
- ``~/.config/ganglion/devices/`` (every ``*.json`` and ``*.toml`` in it).
A file holds one profile (a top-level object/table with ``name``), a JSON list of them, or a TOML
array of tables ``[[device]]``. A user profile with a built-in's name replaces the built-in.
A file is read through `sysroot` (a regular file of at most `PROFILE_MAX_BYTES`, with a timeout)
before it is parsed, and every field of every profile is checked (`profile_from_dict`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):  # noqa: UP036 - nodes run on Python 3.10 (JetPack 6)
    import tomllib
else:  # tomli: the same parser, from PyPI
    import tomli as tomllib

from ganglion.device.profiles.cpu_host import detect_cpu_profile
from ganglion.device.profiles.schema import DeviceProfile, ProfileError, profile_from_dict
from ganglion.device.sysroot import problem, read_bytes, with_timeout

ENV_VAR = "GANGLION_DEVICES"
PROFILE_MAX_BYTES = 1024 * 1024  # a profile is a few KB; a list of hundreds still fits
USER_DIR = Path("~/.config/ganglion/devices")
BUILTIN_NAMES = (
    "jetson-agx-orin-64gb",
    "jetson-agx-orin-32gb",
    "jetson-orin-nx-16gb",
    "jetson-orin-nano-8gb",
    "rtx-4090",
    "rtx-4060",
    "loihi2",
)


def builtin_profiles() -> dict[str, DeviceProfile]:
    """The shipped profiles (without the host ``cpu``, which is detected), by name."""
    pkg = resources.files(__package__)
    out = {}
    for name in BUILTIN_NAMES:
        data = json.loads(pkg.joinpath(f"{name}.json").read_text())
        out[name] = profile_from_dict(data, origin=f"builtin {name}.json")
    return out


def load_profile_file(path: str | os.PathLike[str]) -> list[DeviceProfile]:
    """Read the profiles in one user JSON or TOML file; every error is one line naming the file."""
    p = Path(path)
    if p.suffix not in (".json", ".toml"):
        raise ProfileError(f"device file {p} must end in .json or .toml")
    try:
        raw_bytes = with_timeout(lambda: read_bytes(p, PROFILE_MAX_BYTES), str(p))
    except OSError as e:
        raise ProfileError(f"cannot read device file {p}: {problem(e)}") from e
    try:
        text = raw_bytes.decode("utf-8-sig")  # a byte-order mark, as some editors write, dropped
    except UnicodeDecodeError as e:
        raise ProfileError(
            f"device file {p} is not UTF-8 text ({e.reason} at byte {e.start})"
        ) from e
    kind = p.suffix[1:].upper()
    repeated: list[str] = []  # a key repeated in one JSON object (TOML refuses them itself)
    try:
        raw: Any = (
            tomllib.loads(text)
            if p.suffix == ".toml"
            else json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, repeated))
        )
    except ValueError as e:  # JSONDecodeError, TOMLDecodeError, and ints over 4300 digits
        raise ProfileError(f"device file {p} is not valid {kind}: {e}") from e
    except RecursionError as e:
        raise ProfileError(f"device file {p} is not valid {kind}: nested too deeply") from e
    if repeated:
        raise ProfileError(
            f"device file {p}: key {repeated[0]!r} appears twice in one JSON object "
            "(which value is meant?)"
        )
    entries = _entries(raw, p)
    if not entries:
        raise ProfileError(f"device file {p} holds no profiles")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ProfileError(
                f"device file {p}: entry {i + 1} is a {type(entry).__name__}, not a profile table"
            )
    profiles = [profile_from_dict(entry, origin=str(p)) for entry in entries]
    first: dict[str, int] = {}
    for i, profile in enumerate(profiles):
        if profile.name in first:
            raise ProfileError(
                f"device file {p}: entries {first[profile.name] + 1} and {i + 1} are both "
                f"named {profile.name!r}"
            )
        first[profile.name] = i
    return profiles


def _unique_keys(pairs: list[tuple[str, Any]], repeated: list[str]) -> dict[str, Any]:
    """``json`` object hook: the object, noting in ``repeated`` a key it holds twice (the
    selection reader's rule; raising here would be reported as a JSON syntax error)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and not repeated:
            repeated.append(key)
        out[key] = value
    return out


def _entries(raw: Any, p: Path) -> list[Any]:
    """The profiles in a parsed file: a JSON list, a TOML ``[[device]]`` array, or one table."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict) and p.suffix == ".toml" and "device" in raw:
        if not isinstance(raw["device"], list):
            raise ProfileError(f"device file {p}: 'device' must be an array of tables [[device]]")
        return raw["device"]
    if isinstance(raw, dict):
        return [raw]
    raise ProfileError(f"device file {p} must hold a profile object or a list of them")


def user_profile_files(paths: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The user device files to read: ``paths``, then ``GANGLION_DEVICES``, then the user folder."""
    candidates = [Path(p) for p in paths]
    env = os.environ.get(ENV_VAR, "")
    candidates += [Path(p) for p in env.split(os.pathsep) if p]
    user_dir = USER_DIR.expanduser()
    if user_dir.is_dir():
        candidates.append(user_dir)
    files: list[Path] = []
    for c in candidates:
        if c.is_dir():
            files += sorted(f for f in c.iterdir() if f.suffix in (".json", ".toml"))
        elif c.exists():
            files.append(c)
        else:
            raise ProfileError(f"device file {c} does not exist (from --devices or {ENV_VAR})")
    return files


def available_profiles(
    paths: Iterable[str | os.PathLike[str]] = (), root: str | os.PathLike[str] = "/"
) -> dict[str, DeviceProfile]:
    """Every known profile by name: built-ins, the host ``cpu`` detected under ``root``, and
    user files (which override same-named entries)."""
    profiles = builtin_profiles()
    profiles["cpu"] = detect_cpu_profile(root)
    for f in user_profile_files(paths):
        for profile in load_profile_file(f):
            profiles[profile.name] = profile
    return profiles


def get_profile(
    name: str, paths: Iterable[str | os.PathLike[str]] = (), root: str | os.PathLike[str] = "/"
) -> DeviceProfile:
    """The profile called ``name``; unknown names raise with the list of known ones."""
    profiles = available_profiles(paths, root)
    if name not in profiles:
        raise ProfileError(f"unknown device {name!r}; known: {', '.join(sorted(profiles))}")
    return profiles[name]
