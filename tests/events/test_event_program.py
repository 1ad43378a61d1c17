"""Event digits end to end: a CNN trained on simulated event digits converts into a spiking
program with input encoding ``events`` that scores well above chance, whose ``run`` equals
repeated ``step``, and that ``ganglion run`` feeds straight from an event stream."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.errors import ShapeError
from ganglion.models.events import SaccadeSensor, bin_events, make_events
from ganglion.models.events.program_input import program_frames
from ganglion.models.manifest import SpikingTime
from ganglion.models.recipes.event_digits import (
    EventDigits,
    ann_accuracy,
    convert_event_cnn,
    digits_events,
    snn_accuracy,
    train_event_cnn,
)
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.session import load

TIMESTEPS = 4


@pytest.fixture(scope="module")
def event_digits() -> EventDigits:
    """A small split of event digits (18x18 sensor, 2 ms simulation steps)."""
    return digits_events(sensor=SaccadeSensor(step_us=2_000), max_train=400, max_test=150)


@pytest.fixture(scope="module")
def converted(event_digits: EventDigits):  # noqa: ANN201
    model, _ = train_event_cnn(event_digits, epochs=15)
    return model, convert_event_cnn(model, event_digits, TIMESTEPS, calibration=256)


@pytest.fixture(scope="module")
def bundle(converted, tmp_path_factory) -> Path:  # noqa: ANN001
    return save_bundle(converted[1], tmp_path_factory.mktemp("events") / "bundle")


def ganglion(*args: str) -> tuple[int, str]:
    """The CLI in this process: (exit code, stdout + stderr)."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue()


def test_event_cnn_converts_and_scores_well_above_chance(event_digits, converted) -> None:  # noqa: ANN001
    model, program = converted
    time = program.manifest.time
    assert time.encoding == "events" and time.timesteps == TIMESTEPS
    assert time.events == {"width": 18, "height": 18, "channels": 2, "n_time_bins": TIMESTEPS}
    assert program.manifest.inputs[0].shape == [-1, 2, 18, 18]
    assert ann_accuracy(model, event_digits) > 0.8
    assert snn_accuracy(program, event_digits) > 0.5  # chance is 0.1
    report = program.manifest.report
    assert report["input"] == "events" and report["snn_accuracy"] > 0.5
    assert all(0 < layer["firing_rate"] < 1 for layer in report["layers"].values())


def test_run_on_frames_equals_repeated_step(event_digits, converted) -> None:  # noqa: ANN001
    network = converted[1].module
    frames = torch.from_numpy(event_digits.frames("test", n_time_bins=TIMESTEPS)[:, :5])
    with torch.no_grad():
        whole = network.run(frames)
        state = network.init_state(5)
        for x_t in frames:
            out, state = network.step(x_t, state)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


def test_ganglion_run_bins_an_event_npy_as_the_manifest_says(
    event_digits,  # noqa: ANN001
    bundle: Path,
    tmp_path: Path,
) -> None:
    events = event_digits.test[0]
    np.save(tmp_path / "events.npy", events)
    code, out = ganglion(
        "run",
        str(bundle),
        "--input",
        str(tmp_path / "events.npy"),
        "--output",
        str(tmp_path / "y.npy"),
    )
    assert code == 0, out
    frames = bin_events(events, width=18, height=18, n_time_bins=TIMESTEPS)[:, None]
    with load(bundle) as session:
        expected = session.run(frames)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)
    assert expected.shape == (1, 10)


def test_a_time_window_program_takes_as_many_frames_as_the_stream_spans(converted) -> None:  # noqa: ANN001
    direct = converted[1]
    binning = {"width": 18, "height": 18, "time_window": 50_000}
    time = SpikingTime(TIMESTEPS, encoding="events", decoding="membrane", events=binning)
    manifest = spiking_manifest(direct.module.graph, time)
    events = make_events(x=[1, 2, 3], y=[4, 5, 6], t=[1_000, 60_000, 151_000], p=[1, 0, 1])
    frames = program_frames(manifest, events)["input"]
    assert frames.shape == (4, 1, 2, 18, 18) and frames.sum() == 3  # 150 ms / 50 ms + 1
    with pytest.raises(ShapeError, match="holds no events"):
        program_frames(manifest, events[:0])


def test_ganglion_run_refuses_a_stream_without_events_naming_the_file(
    event_digits,  # noqa: ANN001
    bundle: Path,
    tmp_path: Path,
    one_line_error,  # noqa: ANN001
) -> None:
    """Binned into T bins, an empty stream made T empty frames, and the program answered."""
    np.save(tmp_path / "none.npy", event_digits.test[0][:0])
    code, out = ganglion("run", str(bundle), "--input", str(tmp_path / "none.npy"),
                         "--output", str(tmp_path / "y.npy"))  # fmt: skip
    one_line_error(code, out, "none.npy", "the event stream holds no events")
    assert not (tmp_path / "y.npy").exists()


def test_ganglion_run_refuses_events_for_a_program_without_events_encoding(
    event_digits,  # noqa: ANN001
    tmp_path: Path,
    digits_mlp,  # noqa: ANN001
) -> None:
    model, data = digits_mlp
    plain = save_bundle(
        convert_spiking(model, data.x_train[:64], None, SpikingOptions(timesteps=4)),
        tmp_path / "plain",
    )
    np.save(tmp_path / "events.npy", event_digits.test[0])
    code, out = ganglion(
        "run",
        str(plain),
        "--input",
        str(tmp_path / "events.npy"),
        "--output",
        str(tmp_path / "z.npy"),
    )
    assert code != 0 and "input encoding is 'direct'" in out
    assert len(out.strip().splitlines()) == 1
