"""The simulated event camera: polarity follows the motion of an edge, still images are
silent, and the same seed gives the same events."""

from __future__ import annotations

import numpy as np
import pytest

from ganglion.models.errors import ShapeError
from ganglion.models.events import SaccadeSensor, simulate_saccades

SACCADE = 100_000  # µs


def _edge_image() -> np.ndarray:
    """8x8: bright left half (columns 0-3), dark right half."""
    image = np.zeros((1, 8, 8))
    image[0, :, :4] = 1.0
    return image


def test_an_edge_moving_onto_dark_pixels_gives_on_events_and_moving_back_gives_off() -> None:
    (events,) = simulate_saccades(_edge_image(), SaccadeSensor(amplitude=2.0))
    # columns 4-5 (rows 2-7, away from the top border) are dark until the edge moves right
    # over them in saccade 1, and dark again after it moves back left in saccade 2
    band = (events["x"] >= 4) & (events["x"] <= 5) & (events["y"] >= 2) & (events["y"] <= 7)
    first = band & (events["t"] <= SACCADE)
    second = band & (events["t"] > SACCADE) & (events["t"] <= 2 * SACCADE)
    assert first.sum() >= 6 and second.sum() >= 6
    assert (events["p"][first] == 1).all() and (events["p"][second] == 0).all()
    assert not (events["x"] >= 6).any()  # the edge never reaches column 6


def test_events_are_sorted_inside_the_sensor_and_the_three_saccades() -> None:
    sensor = SaccadeSensor(amplitude=1.5)
    images = np.random.default_rng(0).random((3, 6, 7))
    streams = simulate_saccades(images, sensor)
    height, width = sensor.sensor_size(6, 7)
    assert (height, width) == (8, 9) and len(streams) == 3
    for events in streams:
        assert len(events) > 0 and (np.diff(events["t"]) >= 0).all()
        assert events["x"].max() < width and events["y"].max() < height
        assert 0 < events["t"].min() and events["t"].max() <= 3 * SACCADE


def test_a_still_image_gives_no_events() -> None:
    (events,) = simulate_saccades(_edge_image(), SaccadeSensor(amplitude=0.0))
    assert len(events) == 0


def test_the_same_seed_gives_the_same_events_and_another_seed_others() -> None:
    image = np.random.default_rng(1).random((1, 8, 8))
    first = simulate_saccades(image, SaccadeSensor(seed=3))[0]
    again = simulate_saccades(image, SaccadeSensor(seed=3))[0]
    other = simulate_saccades(image, SaccadeSensor(seed=4))[0]
    np.testing.assert_array_equal(first, again)
    assert len(first) != len(other) or not np.array_equal(first, other)


def test_a_refractory_period_spaces_a_pixels_events() -> None:
    image = _edge_image()
    quick = simulate_saccades(image, SaccadeSensor(refractory_us=0, threshold=0.05))[0]
    slow = simulate_saccades(image, SaccadeSensor(refractory_us=20_000, threshold=0.05))[0]
    assert len(slow) < len(quick)
    for x, y in {(int(e["x"]), int(e["y"])) for e in slow}:
        times = slow["t"][(slow["x"] == x) & (slow["y"] == y)]
        assert (np.diff(times) >= 20_000).all()


def test_bad_images_or_parameters_are_refused() -> None:
    with pytest.raises(ShapeError, match=r"intensities in \[0, 1\]"):
        simulate_saccades(np.full((1, 4, 4), 2.0))
    with pytest.raises(ShapeError, match="must be \\[N, H, W\\]"):
        simulate_saccades(np.zeros((4, 4)))
    with pytest.raises(ShapeError, match="step_us"):
        SaccadeSensor(step_us=0)
