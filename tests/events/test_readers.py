"""Event files: structured .npy/.npz read without unpickling and refused with one line when
wrong; AEDAT 4, EVT 3.0, EVT 2.0 and DAT files read back what was written (when the optional
reader and writer packages are installed)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.events import make_events
from ganglion.models.events.readers import read_events

# gaps over 4096 µs (EVT 3.0's low time field) and over 2**24 µs (its high time field)
EVENTS = make_events(
    x=[0, 1, 639, 5, 33, 3, 4],
    y=[0, 479, 2, 7, 33, 3, 4],
    t=[10, 20, 20, 5_000, 123_456, 9_000_000, 17_000_123],
    p=[1, 0, 1, 0, 1, 0, 1],
)


def _assert_same_events(got: np.ndarray, expected: np.ndarray) -> None:
    assert len(got) == len(expected)
    for name in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(got[name].astype(np.int64), expected[name].astype(np.int64))


# ---- .npy / .npz -----------------------------------------------------------------------------


def test_tonic_style_npy_and_npz_read_back(tmp_path: Path) -> None:
    tonic = np.zeros(len(EVENTS), [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    for name in ("x", "y", "t", "p"):
        tonic[name] = EVENTS[name]
    np.save(tmp_path / "e.npy", tonic)
    np.savez(tmp_path / "e.npz", events=tonic, frames=np.zeros(3))
    np.savez(tmp_path / "only.npz", tonic)
    for name in ("e.npy", "e.npz", "only.npz"):
        _assert_same_events(read_events(tmp_path / name), EVENTS)


def test_object_fields_are_refused_without_unpickling(tmp_path: Path) -> None:
    hostile = np.zeros(2, [("x", "O"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])
    np.save(tmp_path / "o.npy", hostile, allow_pickle=True)
    np.savez(tmp_path / "o.npz", events=hostile)
    for name in ("o.npy", "o.npz"):
        with pytest.raises(ShapeError, match="object fields are refused") as info:
            read_events(tmp_path / name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros(3, [("x", "<i2"), ("y", "<i2"), ("t", "<i8")]),
            "needs fields x, y, t, p; missing p",
        ),
        (np.zeros(3, [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "u1")]), "field t must"),
        (np.zeros((3, 4), np.float32), "expected a structured array"),
        (np.zeros((2, 2), [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")]), "one event"),
    ],
)
def test_wrong_fields_or_shapes_are_refused_with_one_line(
    tmp_path: Path, array: np.ndarray, message: str
) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ShapeError, match=message) as info:
        read_events(tmp_path / "bad.npy")
    assert "\n" not in str(info.value) and "bad.npy" in str(info.value)


def test_npz_without_an_events_array_and_truncated_files_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=EVENTS, b=EVENTS)
    with pytest.raises(ShapeError, match="none named 'events'"):
        read_events(tmp_path / "two.npz")
    np.save(tmp_path / "e.npy", EVENTS)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "e.npy").read_bytes()[:-5])
    with pytest.raises(ShapeError, match="not a readable .npy"):
        read_events(tmp_path / "cut.npy")
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as archive:
        archive.writestr("events.npy", b"not an array")
    with pytest.raises(ShapeError, match="not a readable"):
        read_events(tmp_path / "junk.npz")


def test_unknown_suffix_and_headerless_raw_are_refused(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("x,y,t,p\n")
    with pytest.raises(ShapeError, match="not an event file"):
        read_events(tmp_path / "e.csv")
    (tmp_path / "e.raw").write_bytes(b"\x00\x01" * 8)
    with pytest.raises(ShapeError, match="no '% evt 3.0'"):
        read_events(tmp_path / "e.raw")


def test_a_missing_reader_package_says_what_to_install(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "aedat", None)  # import fails as if not installed
    (tmp_path / "e.aedat4").write_bytes(b"#!AER-DAT4.0\r\n")
    with pytest.raises(BackendUnavailable, match=r"needs the 'aedat' package: pip install"):
        read_events(tmp_path / "e.aedat4")


# ---- camera formats --------------------------------------------------------------------------


def test_aedat4_written_by_dv_processing_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("aedat", reason="AEDAT 4 reader 'aedat' not installed")
    dv = pytest.importorskip("dv_processing", reason="AEDAT 4 writer 'dv-processing' not installed")
    store = dv.EventStore()
    for e in EVENTS:
        store.push_back(int(e["t"]), int(e["x"]), int(e["y"]), bool(e["p"]))
    writer = dv.io.MonoCameraWriter(
        str(tmp_path / "e.aedat4"), dv.io.MonoCameraWriter.EventOnlyConfig("test", (640, 480))
    )
    writer.writeEvents(store)
    del writer  # closes the file
    _assert_same_events(read_events(tmp_path / "e.aedat4"), EVENTS)


def _evt3_words(events: np.ndarray) -> bytes:
    """EVT 3.0 as Prophesee documents it (docs.prophesee.ai, EVT 3.0 format), 16-bit words,
    little-endian: EVT_ADDR_Y (0x0), EVT_TIME_HIGH (0x8, bits 23-12 of t, sent at every step
    as a sensor does, so a reader can see the 24-bit rollover), EVT_TIME_LOW (0x6, bits 11-0),
    EVT_ADDR_X (0x2, polarity in bit 11). Written here because no package writes EVT 3.0
    correctly (expelliarmus leaves out EVT_TIME_HIGH)."""
    words, high = [], 0
    words.append(0x8000)
    for e in events:
        t = int(e["t"])
        while high < t >> 12:  # one EVT_TIME_HIGH per 4096 µs step, wrapping at 12 bits
            high += 1
            words.append(0x8000 | (high & 0xFFF))
        words += [int(e["y"]), 0x6000 | (t & 0xFFF), 0x2000 | (int(e["p"]) << 11) | int(e["x"])]
    return np.array(words, "<u2").tobytes()


def test_evt3_read_with_time_rollovers(tmp_path: Path) -> None:
    pytest.importorskip("evt3", reason="EVT 3.0 reader 'evt3' not installed")
    header = b"% evt 3.0\n% format EVT3;height=480;width=640\n% end\n"
    (tmp_path / "e.raw").write_bytes(header + _evt3_words(EVENTS))
    _assert_same_events(read_events(tmp_path / "e.raw"), EVENTS)


@pytest.mark.parametrize(("encoding", "name"), [("evt2", "e.raw"), ("dat", "e.dat")])
def test_evt2_and_dat_written_by_expelliarmus_read_back(
    tmp_path: Path, encoding: str, name: str
) -> None:
    expelliarmus = pytest.importorskip("expelliarmus", reason="'expelliarmus' not installed")
    stored = np.zeros(len(EVENTS), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    for field in ("t", "x", "y", "p"):
        stored[field] = EVENTS[field]
    expelliarmus.Wizard(encoding=encoding).save(tmp_path / name, stored)
    _assert_same_events(read_events(tmp_path / name), EVENTS)
