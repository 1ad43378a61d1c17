"""What to build, decided without TensorRT: precision, builder flags, profile shapes.

Pure functions over the manifest and the device's capabilities, so they are tested
everywhere; ``tensorrt_backend`` turns a ``BuildPlan`` into TensorRT API calls.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from ganglion.models.errors import BackendUnavailable, OptionError
from ganglion.models.manifest import Manifest
from ganglion.runtime.onnx_export import naming

PRECISIONS = ("fp32", "fp16", "int8", "auto")
DEFAULT_WORKSPACE_MB = 1024
MAX_WORKSPACE_MB = 1 << 20  # 1 TiB: more than any GPU's memory
MAX_ENGINE_BATCH = 1 << 16  # the largest max_batch an engine's profile is built for
OPTIONS = (
    "precision",
    "workspace_mb",
    "max_batch",
    "opt_batch",
    "dla_core",
    "engine_cache",
    "calibration",
    "cuda_graphs",
)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """Builder settings of one engine."""

    precision: str
    flags: tuple[str, ...]  # names of tensorrt.BuilderFlag members
    profile: dict[str, tuple[Shape, Shape, Shape]] = field(hash=False)  # input -> min/opt/max
    batch_profile: tuple[int, int, int]
    workspace_bytes: int
    dla_core: int | None = None


@dataclass(frozen=True)
class EngineOptions:
    """The backend's options, checked (``engine_options``)."""

    precision: str = "fp32"
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    max_batch: int = 1
    opt_batch: int | None = None
    dla_core: int | None = None
    engine_cache: str | None = None  # a folder (None: ``default_cache_dir()``)
    calibration: Any = None  # ``run``'s inputs by name, or one array (checked when read)
    cuda_graphs: bool = True


def engine_options(options: dict[str, Any]) -> EngineOptions:
    """``options`` checked before anything else (the package, the GPU): OptionError naming an
    unknown option or one of the wrong type or out of range, so a typo is the same error on
    every machine."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise OptionError(
            f"tensorrt backend: unknown options {unknown} (known: {', '.join(OPTIONS)})"
        )
    checked = {**options}

    def whole(name: str, low: int, high: int, none_ok: bool = False) -> None:
        value = checked.get(name)
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise OptionError(f"tensorrt backend: {name} must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise OptionError(f"tensorrt backend: {name} must be in [{low}, {high}], got {value}")
        checked[name] = int(value)

    precision = checked.get("precision", "fp32")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise OptionError(
            f"tensorrt backend: precision must be one of {PRECISIONS}, got {precision!r}"
        )
    checked.setdefault("workspace_mb", DEFAULT_WORKSPACE_MB)
    whole("workspace_mb", 1, MAX_WORKSPACE_MB)
    checked.setdefault("max_batch", 1)
    whole("max_batch", 1, MAX_ENGINE_BATCH)
    whole("opt_batch", 1, checked["max_batch"], none_ok=True)
    whole("dla_core", 0, 63, none_ok=True)
    cache = checked.get("engine_cache")
    if cache is not None and not isinstance(cache, str | os.PathLike):
        raise OptionError(f"tensorrt backend: engine_cache must be a folder, got {cache!r}")
    checked["engine_cache"] = None if cache is None or str(cache) == "" else str(cache)
    if not isinstance(checked.get("cuda_graphs", True), bool):
        raise OptionError(
            f"tensorrt backend: cuda_graphs must be True or False, got {checked['cuda_graphs']!r}"
        )
    return EngineOptions(**checked)


def select_precision(
    requested: str, fast_fp16: bool, fast_int8: bool, dla: bool, can_calibrate: bool
) -> str:
    """The engine precision for ``requested`` (one of PRECISIONS: ``engine_options`` checked
    it) on this device, or BackendUnavailable.

    "auto" picks int8 when the device is fast at it and calibration data (or a calibration
    cache) is at hand, else fp16 when the device is fast at it, else fp32 (never fp32 on a
    DLA, which runs fp16 or int8 only).
    """
    if requested == "auto":
        if fast_int8 and can_calibrate:
            return "int8"
        return "fp16" if fast_fp16 or dla else "fp32"
    if requested == "fp32" and dla:
        raise BackendUnavailable("tensorrt backend: a DLA core runs fp16 or int8, not fp32")
    if requested == "fp16" and not fast_fp16:
        raise BackendUnavailable("tensorrt backend: this GPU has no fast fp16; use fp32")
    if requested == "int8":
        if not fast_int8:
            raise BackendUnavailable("tensorrt backend: this GPU has no fast int8; use fp16")
        if not can_calibrate:
            raise BackendUnavailable(
                "tensorrt backend: int8 needs calibration data "
                "(--calib CALIB.npz) or an existing calibration cache"
            )
    return requested


def builder_flags(precision: str, dla: bool) -> tuple[str, ...]:
    """BuilderFlag names for ``precision`` (int8 keeps fp16 as the fallback for layers that
    cannot run int8; a DLA engine falls back to the GPU for layers the DLA lacks)."""
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
    return (*flags, "GPU_FALLBACK") if dla else flags


def batch_profile(max_batch: int, opt_batch: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) batch of checked options (``engine_options``); opt defaults to 1, the
    streaming case."""
    return (1, 1 if opt_batch is None else opt_batch, max_batch)


def profile_shapes(
    manifest: Manifest, batches: tuple[int, int, int]
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """min/opt/max shape of every step-graph input: the batch axis (-1) spans ``batches``."""
    specs = [(s.name, s.shape) for s in manifest.inputs]
    specs += [(naming.state_input(s.name), s.shape) for s in manifest.state]
    out: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, shape in specs:
        mn, opt, mx = (tuple(b if d == -1 else d for d in shape) for b in batches)
        out[name] = (mn, opt, mx)
    return out


def build_plan(
    manifest: Manifest,
    precision: str,
    max_batch: int,
    opt_batch: int | None,
    workspace_mb: int,
    dla_core: int | None,
) -> BuildPlan:
    """A BuildPlan for an already selected ``precision``."""
    batches = batch_profile(max_batch, opt_batch)
    return BuildPlan(
        precision=precision,
        flags=builder_flags(precision, dla_core is not None),
        profile=profile_shapes(manifest, batches),
        batch_profile=batches,
        workspace_bytes=workspace_mb << 20,
        dla_core=dla_core,
    )
