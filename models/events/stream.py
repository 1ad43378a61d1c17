"""Event streams as numpy structured arrays, in the convention of the ``tonic`` library.

One event per row, fields ``x`` and ``y`` (pixel column and row), ``t`` (timestamp in
microseconds) and ``p`` (polarity: greater than 0 is ON, a brightness increase; 0, -1 or False is
OFF). Other fields may ride along and are ignored; object fields are refused everywhere.
"""

from __future__ import annotations

import numpy as np

from ganglion.models.errors import ShapeError

EVENT_FIELDS = ("x", "y", "t", "p")
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])
MAX_EVENTS = 1 << 28  # a stream longer than this is refused before it is binned


def make_events(x: object, y: object, t: object, p: object) -> np.ndarray:
    """A structured event array (``EVENT_DTYPE``) from four equally long sequences."""
    columns = [np.asarray(c).reshape(-1) for c in (x, y, t, p)]
    if len({len(c) for c in columns}) != 1:
        raise ShapeError(f"x, y, t and p must be equally long, got {[len(c) for c in columns]}")
    events = np.empty(len(columns[0]), dtype=EVENT_DTYPE)
    for name, column in zip(EVENT_FIELDS, columns, strict=True):
        events[name] = column
    return events


def check_events(events: object, where: str = "events") -> np.ndarray:
    """``events`` if it is a 1-D structured array with integer ``x``, ``y``, ``t`` and an
    integer or boolean ``p`` and no object field; else a one-line ShapeError naming ``where``."""
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        got = getattr(events, "dtype", type(events).__name__)
        raise ShapeError(f"{where}: expected a structured array with fields x, y, t, p, got {got}")
    if events.dtype.hasobject:
        raise ShapeError(f"{where}: object fields are refused (dtype {events.dtype})")
    missing = [name for name in EVENT_FIELDS if name not in events.dtype.names]
    if missing:
        raise ShapeError(
            f"{where}: a structured array is read as an event stream, which needs fields x, "
            f"y, t, p; missing {', '.join(missing)} (has {', '.join(events.dtype.names)})"
        )
    for name in EVENT_FIELDS:
        field = events.dtype.fields[name][0]
        allowed = "iub" if name == "p" else "iu"
        if field.kind not in allowed or field.shape:
            kinds = "integers or booleans" if name == "p" else "integers"
            raise ShapeError(f"{where}: field {name} must hold {kinds}, got {field}")
    if events.ndim != 1:
        raise ShapeError(f"{where}: expected one event per row (1-D), got shape {events.shape}")
    if len(events) > MAX_EVENTS:
        raise ShapeError(f"{where}: {len(events)} events, more than {MAX_EVENTS}")
    t = events["t"]
    if t.dtype.kind == "u" and t.dtype.itemsize == 8 and len(t) and t.max() >= 1 << 63:
        raise ShapeError(f"{where}: timestamps above 2**63 µs")
    return events


def first_unsorted(t: np.ndarray) -> int | None:
    """Index of the first timestamp smaller than the one before it (None when sorted)."""
    drops = np.flatnonzero(np.diff(t.astype(np.int64)) < 0)
    return int(drops[0]) + 1 if len(drops) else None
