"""An event stream as a spiking program's input: read from ``ganglion run``'s ``--input`` and
binned into time-major frames [T, 1, channels, height, width] as the program's manifest says
(``SpikingTime.events``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ganglion.models.errors import ShapeError, file_problem
from ganglion.models.events.binning import bin_events
from ganglion.models.events.readers import (
    EVENT_SUFFIXES,
    npz_events_member,
    read_events,
    read_npy_header,
)
from ganglion.models.manifest import Manifest, SpikingTime


def read_event_input(specs: list[str]) -> np.ndarray | None:
    """The event stream ``--input`` names: one .aedat4, .raw or .dat file, or a .npy/.npz whose
    array is structured (x, y, t, p). None for anything else (plain arrays are read as usual)."""
    if len(specs) != 1 or "=" in specs[0]:
        return None
    path = Path(specs[0])
    if path.suffix not in EVENT_SUFFIXES:
        return None
    if path.suffix in (".npy", ".npz") and not _holds_structured_array(path):
        return None
    return read_events(path)


def program_frames(manifest: Manifest, events: np.ndarray) -> dict[str, np.ndarray]:
    """{input name: frames [T, 1, channels, height, width]} of one event stream, binned as the
    program declares; a ShapeError if the program does not take events, the stream holds none or
    no frame results."""
    time = manifest.time
    encoding = time.encoding if isinstance(time, SpikingTime) else None
    if not isinstance(time, SpikingTime) or time.events is None:
        raise ShapeError(
            f"an event stream was given, but this {manifest.kind} program's input encoding is "
            f"{encoding!r}, not 'events': give it arrays shaped as `ganglion inspect` states"
        )
    if len(events) == 0:  # n_time_bins slicing would give T empty frames, and an answer
        raise ShapeError("the event stream holds no events")
    frames = bin_events(events, **time.events)
    if frames.shape[0] == 0:
        raise ShapeError("the event stream is empty: it bins into no frame")
    return {manifest.inputs[0].name: frames[:, None]}


def _holds_structured_array(path: Path) -> bool:
    """Whether a .npy (or the events member of a .npz) has a structured dtype, judged from its
    header alone; False when it cannot be read (the plain array reader then says why), and
    without opening anything but a regular file (a FIFO would block)."""
    if file_problem(path) is not None:
        return False
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as fh:
                return read_npy_header(fh, str(path))[1].names is not None
        with zipfile.ZipFile(path) as archive:
            member = npz_events_member(archive.namelist())
            if member is None:
                return False
            with archive.open(member) as fh:
                return read_npy_header(fh, str(path))[1].names is not None
    except Exception:
        return False
