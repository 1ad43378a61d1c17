"""RAPL powercap counters: package sums, wrap-around, missing zones, permission denied."""

import os
import threading
import time
from pathlib import Path

import pytest

from ganglion.device.meters import MeterError, RaplMeter, find_rapl_zones
from ganglion.device.sysfs_fixtures import PowerWriter, write_file, write_rapl
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
    with pytest.raises(MeterError, match="no RAPL package or psys zones"):
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


@pytest.mark.parametrize("after", [999_999, 0], ids=["one-uj-back", "reset"])
def test_counter_going_backwards_implausibly_is_an_error_not_a_wrap(tmp_path, after):
    write_rapl(tmp_path, packages=1, start_uj=1_000_000)  # range 262 kJ: a wrap is no small step
    counter = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
    meter = RaplMeter(tmp_path, wrap_check_s=100)
    meter.start()
    counter.write_text(f"{after}\n")
    with pytest.raises(MeterError, match=rf"{counter}: went from 1000000 to {after} µJ .*5000 W"):
        meter.read()
    meter.stop()


def _psys_laptop(root: Path, package: bool) -> None:
    """intel-rapl:0 package-0 and intel-rapl:1 psys (the platform, package included), or psys
    alone as intel-rapl:0."""
    write_rapl(root, packages=2 if package else 1, start_uj=0)
    psys = "intel-rapl:1" if package else "intel-rapl:0"
    write_file(root, f"/sys/class/powercap/{psys}/name", "psys\n")


@pytest.mark.parametrize("package", [True, False], ids=["package+psys", "psys-only"])
def test_psys_is_never_added_to_the_packages(tmp_path, package):
    _psys_laptop(tmp_path, package)
    meter = RaplMeter(tmp_path, wrap_check_s=100)
    meter.start()
    zones = tmp_path / "sys/class/powercap"
    if package:
        (zones / "intel-rapl:0/energy_uj").write_text("1000000\n")
        (zones / "intel-rapl:1/energy_uj").write_text("1500000\n")
    else:
        (zones / "intel-rapl:0/energy_uj").write_text("1500000\n")
    reading = meter.read()
    meter.stop()
    assert meter.source == ("rapl: package-0" if package else "rapl: psys")
    assert reading.joules == pytest.approx(1.0 if package else 1.5)


def test_absolute_symlink_is_followed_inside_the_root(tmp_path):
    host_file = tmp_path / "host/energy_uj"  # what a plain open() of the link would read
    host_file.parent.mkdir()
    host_file.write_text("9999\n")
    root = tmp_path / "root"
    write_rapl(root, packages=1, start_uj=0)
    write_file(root, str(host_file), "7\n")  # its twin inside the root
    counter = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    counter.unlink()
    counter.symlink_to(host_file)
    assert RaplMeter(root).raw_uj() == [7]


def test_too_many_zones_are_refused_in_one_line_naming_the_folder(tmp_path):
    write_rapl(tmp_path, packages=1)
    for i in range(1, 70):
        (tmp_path / f"sys/class/powercap/intel-rapl:{i}").mkdir()
    with pytest.raises(MeterError, match=r"sys/class/powercap: more than 64 entries") as err:
        RaplMeter(tmp_path)
    assert "\n" not in str(err.value)


def test_counter_digits_are_ascii_only(tmp_path):
    write_rapl(tmp_path, packages=1)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("\u0661\u0662\n")
    with pytest.raises(MeterError, match="not a whole number of µJ"):
        RaplMeter(tmp_path).start()
