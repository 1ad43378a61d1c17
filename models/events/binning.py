"""Binning an event stream into time-major frames: [T, channels, height, width] float32.

Like ``tonic.transforms.ToFrame``, with exactly one way of slicing the stream:
  ``time_window``  windows of that many µs from the first event: T = (t_max − t_min) // w + 1
  ``event_count``  consecutive groups of that many events (the last may be short): T = ⌈n / N⌉
  ``n_time_bins``  T equal bins spanning [t_min, t_max], the last one closed
Every event lands in exactly one frame, so the frames sum to the number of events; tonic drops
the event at t_max under ``time_window`` and ``n_time_bins`` and swaps height and width when the
stream is empty, and neither happens here. An empty stream gives ``n_time_bins`` zero frames,
or no frame at all for the other two slicings. Channels: 2 puts OFF events in channel 0 and ON
events in channel 1 (tonic's order); 1 counts both together.

Sizes are bounded before anything is allocated: the sensor and the slicing parameter by their
ranges (``ganglion.models.manifest.check_event_binning``), the number of frames by
``MAX_FRAMES``, the frame buffer by ``MAX_FRAME_BYTES``, the time span by ``MAX_SPAN_US``, and
the temporaries by binning ``CHUNK_EVENTS`` events at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.events.stream import check_events, first_unsorted
from ganglion.models.manifest import check_event_binning

MAX_FRAMES = 1 << 16
MAX_FRAME_BYTES = 1 << 30  # the int64 counts buffer of one stream's frames
MAX_SPAN_US = 1 << 40  # about 12.7 days of events in one stream
CHUNK_EVENTS = 1 << 22  # events binned at a time: their int64 temporaries stay near 200 MB


def bin_events(
    events: np.ndarray,
    *,
    width: int,
    height: int,
    channels: int = 2,
    time_window: int | None = None,
    event_count: int | None = None,
    n_time_bins: int | None = None,
) -> np.ndarray:
    """Frames [T, channels, height, width] (float32 event counts) of one event stream.

    events: structured array with fields x, y, t (µs), p (``ganglion.models.events.stream``).
    width, height: the sensor size; an event outside it is a ShapeError naming its index.
    Exactly one of time_window (µs), event_count or n_time_bins (module docstring).
    """
    binning = check_event_binning(
        {
            "width": width,
            "height": height,
            "channels": channels,
            "time_window": time_window,
            "event_count": event_count,
            "n_time_bins": n_time_bins,
        },
        "events binning",
        ShapeError,
    )
    events = check_events(events)
    _check_inside(events, width, height)
    index_of, frames = _slicing(events, binning)
    size = frames * channels * height * width
    if frames > MAX_FRAMES or size * 8 > MAX_FRAME_BYTES:
        raise ShapeError(
            f"events bin into {frames} frames of {channels}x{height}x{width}: more than "
            f"{MAX_FRAMES} frames or {MAX_FRAME_BYTES >> 20} MiB; use a longer slice"
        )
    counts = np.zeros(size, np.int64)
    for lo in range(0, len(events), CHUNK_EVENTS):  # bounded temporaries: a few per event
        part = events[lo : lo + CHUNK_EVENTS]
        channel = (part["p"].astype(np.int64) > 0) if channels == 2 else 0
        flat = (index_of(part, lo) * channels + channel) * height + part["y"].astype(np.int64)
        flat = flat * width + part["x"].astype(np.int64)
        if len(part) == len(events):
            counts = np.bincount(flat, minlength=size)
        else:
            np.add.at(counts, flat, 1)
    return counts.astype(np.float32).reshape(frames, channels, height, width)


def bin_batch(streams: Sequence[np.ndarray], **binning: int | None) -> np.ndarray:
    """Frames [T, batch, channels, height, width] of several streams binned alike
    (``bin_events``'s keywords); T is the longest, shorter ones end in zero frames (no events)."""
    binned = [bin_events(s, **binning) for s in streams]  # type: ignore[arg-type]
    if not binned:
        raise ShapeError("bin_batch needs at least one event stream")
    steps = max(f.shape[0] for f in binned)
    out = np.zeros((steps, len(binned), *binned[0].shape[1:]), dtype=np.float32)
    for i, frames in enumerate(binned):
        out[: frames.shape[0], i] = frames
    return out


def _check_inside(events: np.ndarray, width: int, height: int) -> None:
    for name, size in (("x", width), ("y", height)):
        coord = events[name]
        outside = np.flatnonzero((coord < 0) | (coord >= size))
        if len(outside):
            i = int(outside[0])
            raise ShapeError(
                f"event {i} has {name}={int(coord[i])}, outside the sensor's "
                f"{'width' if name == 'x' else 'height'} {size}"
            )


def _slicing(
    events: np.ndarray, binning: dict[str, int]
) -> tuple[Callable[[np.ndarray, int], np.ndarray], int]:
    """The number of frames, and ``index_of(part, first)``: the frame index [len(part)] (int64)
    of each event of ``part``, the stream's events from position ``first`` on."""
    n = len(events)
    if "event_count" in binning:
        unsorted = first_unsorted(events["t"])
        if unsorted is not None:
            raise ShapeError(
                f"event_count slicing needs events sorted by t; event {unsorted} goes back "
                f"in time (np.sort(events, order='t') sorts them)"
            )
        count = binning["event_count"]
        return lambda part, first: np.arange(first, first + len(part)) // count, -(-n // count)
    if n == 0:
        return lambda part, first: np.zeros(0, np.int64), binning.get("n_time_bins", 0)
    start, end = int(events["t"].min()), int(events["t"].max())
    span = end - start
    if span > MAX_SPAN_US:
        raise ShapeError(f"events span {span} µs, more than {MAX_SPAN_US} µs")

    def offset(part: np.ndarray) -> np.ndarray:
        return part["t"].astype(np.int64) - start

    if "time_window" in binning:
        window = binning["time_window"]
        return lambda part, first: offset(part) // window, span // window + 1
    bins = binning["n_time_bins"]
    if span == 0:
        return lambda part, first: np.zeros(len(part), np.int64), bins
    return lambda part, first: np.minimum(offset(part) * bins // span, bins - 1), bins
