"""What to build, decided without TensorRT: precision, builder flags, profile shapes.

Pure functions over the manifest and the device's capabilities, so they are tested
everywhere; ``tensorrt_backend`` turns a ``BuildPlan`` into TensorRT API calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganglion.models.errors import BackendUnavailable, OptionError
from ganglion.models.manifest import Manifest
from ganglion.runtime.onnx_export import naming

PRECISIONS = ("fp32", "fp16", "int8", "auto")
DEFAULT_WORKSPACE_MB = 1024

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


def select_precision(
    requested: str, fast_fp16: bool, fast_int8: bool, dla: bool, can_calibrate: bool
) -> str:
    """The engine precision for ``requested`` on this device, or BackendUnavailable.

    "auto" picks int8 when the device is fast at it and calibration data (or a calibration
    cache) is at hand, else fp16 when the device is fast at it, else fp32 (never fp32 on a
    DLA, which runs fp16 or int8 only).
    """
    if requested not in PRECISIONS:
        raise OptionError(
            f"tensorrt backend: precision must be one of {PRECISIONS}, got {requested!r}"
        )
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
    """(min, opt, max) batch; opt defaults to 1, the streaming case."""
    opt = 1 if opt_batch is None else opt_batch
    if max_batch < 1 or not 1 <= opt <= max_batch:
        raise OptionError(
            f"tensorrt backend: need 1 <= opt batch ({opt}) <= max batch ({max_batch})"
        )
    return (1, opt, max_batch)


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
    if workspace_mb < 1:
        raise OptionError(f"tensorrt backend: workspace must be >= 1 MiB, got {workspace_mb}")
    batches = batch_profile(max_batch, opt_batch)
    return BuildPlan(
        precision=precision,
        flags=builder_flags(precision, dla_core is not None),
        profile=profile_shapes(manifest, batches),
        batch_profile=batches,
        workspace_bytes=workspace_mb << 20,
        dla_core=dla_core,
    )
