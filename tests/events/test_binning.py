"""Binning event streams into frames: hand-computed frames, edge events, empty streams, the
three slicings, bounds refused before allocation, and the manifest's ``events`` field."""

from __future__ import annotations

import numpy as np
import pytest

from ganglion.models.errors import BundleError, ShapeError
from ganglion.models.events import bin_batch, bin_events, make_events
from ganglion.models.events import binning as binning_module
from ganglion.models.events.binning import MAX_FRAMES
from ganglion.models.manifest import Manifest, SpikingTime, TensorSpec

# five events on a 3-wide, 2-high sensor: (x, y, t µs, p)
EVENTS = make_events(
    x=[0, 2, 1, 1, 2], y=[0, 1, 1, 0, 1], t=[100, 104, 105, 109, 110], p=[1, 0, 1, 1, 0]
)


def test_time_window_frames_match_hand_computed_ones() -> None:
    frames = bin_events(EVENTS, width=3, height=2, time_window=5)
    expected = np.zeros((3, 2, 2, 3), np.float32)  # windows [100,105) [105,110) [110,115)
    expected[0, 1, 0, 0] = 1  # t=100 ON at (x0, y0)
    expected[0, 0, 1, 2] = 1  # t=104 OFF at (x2, y1)
    expected[1, 1, 1, 1] = 1  # t=105 ON at (x1, y1): on a window edge, in the later window
    expected[1, 1, 0, 1] = 1  # t=109 ON at (x1, y0)
    expected[2, 0, 1, 2] = 1  # t=110 OFF at (x2, y1): the last event keeps its own window
    np.testing.assert_array_equal(frames, expected)
    assert frames.dtype == np.float32


def test_n_time_bins_keeps_the_event_at_t_max() -> None:
    frames = bin_events(EVENTS, width=3, height=2, n_time_bins=2)  # bins [100,105) [105,110]
    assert frames.shape == (2, 2, 2, 3)
    assert frames.sum() == len(EVENTS)  # tonic's ToFrame drops the event at t = 110
    assert frames[0].sum() == 2 and frames[1].sum() == 3 and frames[1, 0, 1, 2] == 1


def test_event_count_slices_by_count_not_time() -> None:
    frames = bin_events(EVENTS, width=3, height=2, event_count=3)
    assert frames.shape == (2, 2, 2, 3)  # 3 + 2 events, the short last group kept
    assert frames[0, 1, 0, 0] == frames[0, 0, 1, 2] == frames[0, 1, 1, 1] == 1  # events 0-2
    assert frames[1, 1, 0, 1] == frames[1, 0, 1, 2] == 1 and frames.sum() == 5  # events 3-4
    assert bin_events(EVENTS, width=3, height=2, time_window=5).shape[0] == 3


@pytest.mark.parametrize(
    "slicing", [{"time_window": 700}, {"n_time_bins": 5}, {"event_count": 9}], ids=str
)
@pytest.mark.parametrize("channels", [1, 2])
def test_binning_in_chunks_gives_the_frames_of_one_pass(monkeypatch, slicing, channels) -> None:
    """A long stream is binned a chunk of events at a time (bounded temporaries): the same
    frames as one pass, chunk edges inside frames included."""
    rng = np.random.default_rng(0)
    n = 100
    events = make_events(
        x=rng.integers(0, 4, n),
        y=rng.integers(0, 3, n),
        t=np.sort(rng.integers(0, 3000, n)),
        p=rng.integers(0, 2, n),
    )
    binning = dict(width=4, height=3, channels=channels, **slicing)
    whole = bin_events(events, **binning)
    monkeypatch.setattr(binning_module, "CHUNK_EVENTS", 7)
    chunked = bin_events(events, **binning)
    np.testing.assert_array_equal(chunked, whole)
    assert chunked.sum() == n


def test_one_channel_counts_both_polarities_and_any_polarity_convention_splits_alike() -> None:
    merged = bin_events(EVENTS, width=3, height=2, channels=1, time_window=5)
    split = bin_events(EVENTS, width=3, height=2, time_window=5)
    assert merged.shape == (3, 1, 2, 3)
    np.testing.assert_array_equal(merged[:, 0], split.sum(axis=1))
    for p_type, off in (("i1", -1), ("?", False)):  # OFF as -1 or False; other field types
        other = np.empty(len(EVENTS), [("t", "u8"), ("p", p_type), ("x", "i4"), ("y", "i4")])
        for name in ("t", "x", "y"):
            other[name] = EVENTS[name]
        other["p"] = np.where(EVENTS["p"] > 0, 1, off)
        np.testing.assert_array_equal(bin_events(other, width=3, height=2, time_window=5), split)


def test_empty_stream_keeps_height_and_width_in_order() -> None:
    empty = EVENTS[:0]
    frames = bin_events(empty, width=5, height=3, n_time_bins=4)
    assert frames.shape == (4, 2, 3, 5) and frames.dtype == np.float32 and not frames.any()
    assert bin_events(empty, width=5, height=3, time_window=10).shape == (0, 2, 3, 5)
    assert bin_events(empty, width=5, height=3, event_count=10).shape == (0, 2, 3, 5)


def test_batch_pads_shorter_streams_with_empty_frames() -> None:
    frames = bin_batch([EVENTS, EVENTS[:2]], width=3, height=2, time_window=5)
    assert frames.shape == (3, 2, 2, 2, 3)
    np.testing.assert_array_equal(
        frames[:, 0], bin_events(EVENTS, width=3, height=2, time_window=5)
    )
    assert frames[0, 1].sum() == 2 and not frames[1:, 1].any()


@pytest.mark.parametrize(
    ("binning", "message"),
    [
        ({"width": 3, "height": 2}, "exactly one of"),
        ({"width": 3, "height": 2, "time_window": 5, "event_count": 2}, "exactly one of"),
        ({"width": 0, "height": 2, "time_window": 5}, "width must be an integer in [1, 4096]"),
        ({"width": 3, "height": 5000, "time_window": 5}, "height must be an integer"),
        ({"width": 3, "height": 2, "n_time_bins": 0}, "n_time_bins must be an integer"),
        ({"width": 3, "height": 2, "channels": 3, "time_window": 5}, "channels must be"),
    ],
)
def test_bad_binning_is_refused_naming_the_field(binning: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bin_events(EVENTS, **binning)


def test_too_many_frames_are_refused_before_allocation() -> None:
    far = make_events(x=[0, 0], y=[0, 0], t=[0, 10 * MAX_FRAMES], p=[1, 1])
    with pytest.raises(ShapeError, match=f"more than {MAX_FRAMES} frames"):
        bin_events(far, width=3, height=2, time_window=1)
    with pytest.raises(ShapeError, match="MiB"):  # few frames, each too large
        bin_events(far, width=4096, height=4096, time_window=2 * MAX_FRAMES)


def test_events_outside_the_sensor_or_unsorted_are_refused_with_their_index() -> None:
    with pytest.raises(ShapeError, match="event 1 has x=2, outside the sensor's width 2"):
        bin_events(EVENTS, width=2, height=2, time_window=5)
    backwards = EVENTS[::-1].copy()
    with pytest.raises(ShapeError, match="event 1 goes back in time"):
        bin_events(backwards, width=3, height=2, event_count=2)
    np.testing.assert_array_equal(  # time slicing does not care about order
        bin_events(backwards, width=3, height=2, time_window=5),
        bin_events(EVENTS, width=3, height=2, time_window=5),
    )


def test_manifest_events_round_trip_and_make_the_input_time_major() -> None:
    time = SpikingTime(
        4,
        encoding="events",
        decoding="membrane",
        events={"width": 3, "height": 2, "n_time_bins": 4},
    )
    assert time.time_major and time.events == {
        "width": 3,
        "height": 2,
        "channels": 2,
        "n_time_bins": 4,
    }
    manifest = Manifest("spiking", "spiking_graph", [TensorSpec("input", [-1, 2, 2, 3])],
                        [TensorSpec("output", [-1, 10])], time=time)  # fmt: skip
    again = Manifest.from_dict(manifest.to_dict())
    assert again.time == time


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoding": "events"}, "manifest.time.events must be an object"),
        ({"encoding": "direct", "events": {"width": 3, "height": 2, "time_window": 5}}, "absent"),
        ({"encoding": "events", "events": {"width": 3, "height": 2}}, "exactly one of"),
        ({"encoding": "events", "events": {"width": 3, "height": 2, "n_time_bins": 5}},
         "timesteps must be 5"),
        ({"encoding": "events", "events": {"width": 3, "height": 2, "time_window": 5, "fps": 1}},
         "manifest.time.events keys"),
        ({"encoding": "events", "events": {"width": 3.5, "height": 2, "time_window": 5}},
         "manifest.time.events.width"),
    ],
)  # fmt: skip
def test_bad_manifest_events_are_a_bundle_error_naming_the_field(
    fields: dict, message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        SpikingTime(4, **fields)
