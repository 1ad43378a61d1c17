"""RAPL powercap counters: package sums, wrap-around, missing zones, permission denied."""

import os
import threading
import time
from pathlib import Path

import pytest

from ganglion.device.meters import MeterError, RaplMeter, find_rapl_zones
from ganglion.device.sysfs_fixtures import PowerWriter, write_rapl
from ganglion.device.sysroot import read_text


def test_only_package_zones_are_summed(tmp_path):
    write_rapl(tmp_path, packages=2)
    zones = find_rapl_zones(tmp_path)
    assert [z.name for z in zones] == ["package-0", "package-1"]
    assert all(z.max_range_uj == 262_143_328_850 for z in zones)


def test_wrap_around_is_added_back(tmp_path):
    values = iter(["9990000\n", "500\n"])

    def reader(path: Path) -> str:
        if path.name == "energy_uj":
            return next(values)
        return read_text(path)

    write_rapl(tmp_path, packages=1, max_range_uj=9_999_999)
    meter = RaplMeter(tmp_path, reader=reader)
    meter.start()
    reading = meter.read()
    meter.stop()
    # 9_990_000 → wrap at 9_999_999 (+1) → 500: 10_000 + 500 µJ
    assert reading.joules == pytest.approx(0.0105, abs=1e-9)
    assert reading.kind == "measured"


def test_counters_wrapping_while_power_changes(tmp_path):
    fixture = write_rapl(tmp_path, packages=2, max_range_uj=4_000_000, start_uj=3_900_000)
    with PowerWriter(fixture, base_w=40.0, swing=0.3, period_s=0.1) as writer:
        meter = RaplMeter(tmp_path, wrap_check_s=0.02)
        with meter:
            first = meter.read()
            time.sleep(0.3)
            last = meter.read()
    assert fixture.counters[0] < 3_900_000  # each counter wrapped at least once
    truth = writer.energy_between(first.timestamp, last.timestamp)
    assert (last - first).joules == pytest.approx(truth, rel=0.05)
    assert (last - first).joules > 4.0  # more than one counter range: wraps were counted


def test_no_zones_is_a_clear_error(tmp_path):
    with pytest.raises(MeterError, match="no RAPL zones"):
        RaplMeter(tmp_path)


def test_permission_denied_names_the_file_and_root(tmp_path):
    write_rapl(tmp_path, packages=1)

    def deny(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    meter = RaplMeter(tmp_path, reader=deny)
    with pytest.raises(MeterError) as err:
        meter.start()
    message = str(err.value)
    assert "intel-rapl:0/energy_uj" in message
    assert "root" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_counter_is_refused(tmp_path):
    write_rapl(tmp_path, packages=1)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)
    with pytest.raises(MeterError, match="permission denied"):
        RaplMeter(tmp_path).start()


@pytest.mark.parametrize("text", ["lots\n", "-1\n", "nan\n", "1e9\n", "9" * 30 + "\n"])
def test_counter_that_is_not_a_whole_number_names_its_file(tmp_path, text):
    write_rapl(tmp_path, packages=1)
    counter = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    counter.write_text(text)
    with pytest.raises(MeterError, match=rf"{counter}: holds .*not a whole number of µJ"):
        RaplMeter(tmp_path).start()


def test_counter_above_its_range_is_refused(tmp_path):
    write_rapl(tmp_path, packages=1, max_range_uj=1000)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("5000\n")
    with pytest.raises(MeterError, match="above max_energy_range_uj 1000"):
        RaplMeter(tmp_path).start()


@pytest.mark.parametrize("text", ["0\n", "big\n"])
def test_bad_counter_range_makes_the_zone_unreadable(tmp_path, text):
    write_rapl(tmp_path, packages=1)
    (tmp_path / "sys/class/powercap/intel-rapl:0/max_energy_range_uj").write_text(text)
    with pytest.raises(MeterError, match="max_energy_range_uj: holds"):
        find_rapl_zones(tmp_path)


def test_counter_going_bad_mid_run_is_reported_by_read(tmp_path, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    write_rapl(tmp_path, packages=1)
    meter = RaplMeter(tmp_path, wrap_check_s=0.005)
    meter.start()
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("gone\n")
    time.sleep(0.3)  # about 60 ticks of the background thread on the bad file
    with pytest.raises(MeterError, match="energy_uj: holds 'gone'"):
        meter.read()
    meter.stop()
    assert hooked == []
