"""A simulated event camera: events from small saccades over still images, as N-MNIST was
recorded (Orchard et al. 2015: an ATIS sensor on a pan-tilt unit, three ~100 ms saccades over
MNIST digits shown on a screen).

The image moves along three saccades that trace a triangle (diagonally down-right, left, up),
linearly and with sub-pixel (bilinear) interpolation. Every ``step_us`` each pixel compares its
log intensity ``log(eps + I)`` with the level it last fired at: a rise of at least its ON
threshold gives an ON event, a fall of at least its OFF threshold an OFF event, and the pixel's
level resets to the present one (a DVS pixel's reset). The event is stamped where the log
intensity crossed the threshold, interpolated linearly within the step. A pixel cannot fire
again within ``refractory_us``. Thresholds vary per pixel and polarity (``threshold_sigma``,
relative), drawn from ``seed``, so the same seed gives the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.events.stream import EVENT_DTYPE

SACCADES = ((0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0))  # (dx, dy) vertices / amplitude
MAX_PIXELS = 1 << 16  # per image
MAX_STEPS = 1 << 16  # simulation steps per image
_CHUNK = 256  # images simulated together


@dataclass
class SaccadeSensor:
    """Sensor parameters; ``sensor_size`` says how large the images come out."""

    amplitude: float = 2.0  # pixels the image travels along each leg of the triangle
    saccade_us: int = 100_000  # duration of one saccade
    step_us: int = 1_000  # simulation step
    threshold: float = 0.2  # log-intensity contrast threshold
    threshold_sigma: float = 0.03  # per-pixel threshold spread, relative to ``threshold``
    refractory_us: int = 1_000
    eps: float = 0.1  # offset inside the log, so black is finite
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.amplitude <= 64:
            raise ShapeError(f"amplitude must be in [0, 64] pixels, got {self.amplitude}")
        if not 1 <= self.step_us <= self.saccade_us:
            raise ShapeError(f"step_us must be in [1, saccade_us], got {self.step_us}")
        if 3 * self.saccade_us // self.step_us > MAX_STEPS:
            raise ShapeError(f"more than {MAX_STEPS} simulation steps; raise step_us")
        if self.threshold <= 0 or self.eps <= 0 or self.threshold_sigma < 0:
            raise ShapeError("threshold and eps must be positive, threshold_sigma not negative")

    def sensor_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the sensor that sees an image of that size move."""
        margin = math.ceil(self.amplitude)
        return height + margin, width + margin


def simulate_saccades(images: np.ndarray, sensor: SaccadeSensor | None = None) -> list[np.ndarray]:
    """One event stream (structured array x, y, t, p; sorted by t) per image.

    images: [N, H, W] intensities in [0, 1]. The sensor is ``sensor.sensor_size(H, W)``.
    """
    sensor = sensor or SaccadeSensor()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[1] * images.shape[2] > MAX_PIXELS:
        raise ShapeError(f"images must be [N, H, W] with H*W <= {MAX_PIXELS}, got {images.shape}")
    if images.size and not (np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1):
        raise ShapeError("images must hold intensities in [0, 1]")
    rng = np.random.default_rng(sensor.seed)
    streams: list[np.ndarray] = []
    for start in range(0, len(images), _CHUNK):
        streams += _simulate_chunk(images[start : start + _CHUNK], sensor, rng)
    return streams


def _simulate_chunk(
    images: np.ndarray, sensor: SaccadeSensor, rng: np.random.Generator
) -> list[np.ndarray]:
    n = len(images)
    height, width = sensor.sensor_size(*images.shape[1:])
    canvas = np.zeros((n, height, width), dtype=np.float32)
    canvas[:, : images.shape[1], : images.shape[2]] = images
    spread = 1 + sensor.threshold_sigma * rng.standard_normal((2, n * height * width))
    on_threshold, off_threshold = (sensor.threshold * np.clip(spread, 0.1, None)).astype(np.float32)
    previous = np.log(sensor.eps + canvas).reshape(-1)
    level = previous.copy()  # the log intensity each pixel last fired at
    last_fired = np.full(n * height * width, -np.inf)
    found: list[tuple[np.ndarray, ...]] = []
    for k in range(1, 3 * sensor.saccade_us // sensor.step_us + 1):
        now = k * sensor.step_us
        current = np.log(sensor.eps + _shift(canvas, *_offset(now, sensor))).reshape(-1)
        rise = current - level
        pixel = np.flatnonzero((rise >= on_threshold) | (rise <= -off_threshold))
        on = rise[pixel] > 0
        base = level[pixel]
        crossing = np.where(on, base + on_threshold[pixel], base - off_threshold[pixel])
        before, after = previous[pixel], current[pixel]
        change = np.where(after != before, after - before, 1)
        fraction = np.clip(np.where(after != before, (crossing - before) / change, 1), 0, 1)
        stamp = np.rint(now - sensor.step_us * (1 - fraction))
        fire = stamp - last_fired[pixel] >= sensor.refractory_us
        pixel, stamp, on = pixel[fire], stamp[fire], on[fire]
        level[pixel] = after[fire]
        last_fired[pixel] = stamp
        previous = current
        sample, rest = np.divmod(pixel, height * width)
        y, x = np.divmod(rest, width)
        found.append((sample, x, y, stamp.astype(np.int64), on))
    sample, x, y, t, p = (np.concatenate(column) for column in zip(*found, strict=True))
    order = np.lexsort((t, sample))  # by sample, then by time
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x[order], y[order], t[order], p[order]
    bounds = np.searchsorted(sample[order], np.arange(1, n))
    return np.split(events, bounds)


def _offset(now: int, sensor: SaccadeSensor) -> tuple[float, float]:
    """Where the image is at ``now`` µs: linear along the current saccade."""
    leg = min(now // sensor.saccade_us, len(SACCADES) - 2)
    fraction = (now - leg * sensor.saccade_us) / sensor.saccade_us
    (x0, y0), (x1, y1) = SACCADES[leg], SACCADES[leg + 1]
    a = sensor.amplitude
    return a * (x0 + (x1 - x0) * fraction), a * (y0 + (y1 - y0) * fraction)


def _shift(canvas: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``canvas`` [N, H, W] moved right by dx and down by dy (bilinear; zeros move in)."""
    ix, iy = math.floor(dx), math.floor(dy)
    fx, fy = dx - ix, dy - iy
    out = np.zeros_like(canvas)
    for sx, sy, weight in (
        (ix, iy, (1 - fx) * (1 - fy)),
        (ix + 1, iy, fx * (1 - fy)),
        (ix, iy + 1, (1 - fx) * fy),
        (ix + 1, iy + 1, fx * fy),
    ):
        if weight == 0 or sx >= canvas.shape[2] or sy >= canvas.shape[1]:
            continue
        out[:, sy:, sx:] += weight * canvas[:, : canvas.shape[1] - sy, : canvas.shape[2] - sx]
    return out
