"""Jetson INA3221 rails on fixture trees of both sysfs layouts, with power changing over time."""

import threading
import time
from pathlib import Path

import pytest

from ganglion.device import detect, sysroot
from ganglion.device.meters import JetsonRailsMeter, MeterError, find_rails
from ganglion.device.sysfs_fixtures import JETSON_BOARDS, PowerWriter, write_file, write_jetson
from ganglion.device.sysroot import read_text

HWMON3 = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
EXPECTED_TOTAL = {
    "xavier-agx-jp46": None,
    "nano-jp46": "POM_5V_IN",
    "agx-orin-64gb-jp512": None,
    "orin-nano-8gb-jp62": "VDD_IN",
}


@pytest.mark.parametrize("board", sorted(JETSON_BOARDS))
def test_rails_read_the_written_watts(tmp_path, board):
    fixture = write_jetson(tmp_path, board, board_w=12.0)
    meter = JetsonRailsMeter(tmp_path)
    expected = fixture.rail_watts(12.0)
    got = meter.read_rails()
    assert set(got) == set(expected)  # NC channels and the shunt-sum channel are dropped
    for name, watts in expected.items():
        assert got[name] == pytest.approx(watts, rel=2e-3)
    assert meter.layout == JETSON_BOARDS[board].layout
    assert (meter.total_rail.name if meter.total_rail else None) == EXPECTED_TOTAL[board]
    assert meter.sample_watts() == pytest.approx(fixture.total_watts(12.0), rel=2e-3)


@pytest.mark.parametrize("board", ["nano-jp46", "agx-orin-64gb-jp512", "orin-nano-8gb-jp62"])
def test_energy_integrates_changing_power(tmp_path, board):
    fixture = write_jetson(tmp_path, board)
    with PowerWriter(fixture, base_w=10.0, swing=0.5, period_s=0.1) as writer:
        meter = JetsonRailsMeter(tmp_path, interval_s=0.003)
        with meter:
            first = meter.read()
            time.sleep(0.35)
            last = meter.read()
    truth = writer.energy_between(first.timestamp, last.timestamp)
    assert last.kind == "measured"
    assert meter.samples > 50
    assert (last - first).joules == pytest.approx(truth, rel=0.05)


def test_hwmon_power_files_are_microwatts(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62", board_w=8.0, power_files=True)
    rails = {r.name: r for r in find_rails(tmp_path)}
    assert rails["VDD_IN"].power_file is not None
    assert rails["VDD_IN"].watts() == pytest.approx(8.0, rel=2e-3)


def test_hwmon_class_symlinks_are_not_counted_twice(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    assert (tmp_path / "sys/class/hwmon/hwmon3").is_symlink()
    names = [r.name for r in find_rails(tmp_path)]
    assert len(names) == len(set(names)) == 4


def test_no_rails_names_the_paths_searched(tmp_path):
    with pytest.raises(MeterError, match="ina3221x"):
        JetsonRailsMeter(tmp_path)


def test_missing_power_file_after_discovery_names_it(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    meter = JetsonRailsMeter(tmp_path)
    victim = meter.rails[0].current_file
    victim.unlink()
    with pytest.raises(MeterError, match=str(victim)):
        meter.sample_watts()


def test_unreadable_rail_is_reported_with_its_file(tmp_path):
    write_jetson(tmp_path, "nano-jp46")

    def deny_power(path: Path) -> str:
        if path.name.startswith("in_power"):
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    meter = JetsonRailsMeter(tmp_path, reader=deny_power)
    with pytest.raises(MeterError, match=r"in_power0_input: Permission denied"):
        meter.start()


def test_garbage_in_a_rail_file_is_a_clear_error(tmp_path):
    fixture = write_jetson(tmp_path, "nano-jp46")
    meter = JetsonRailsMeter(tmp_path)
    (fixture.root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input").write_text(
        "n/a\n"
    )
    with pytest.raises(MeterError, match="not a number"):
        meter.sample_watts()


@pytest.mark.parametrize("text", ["nan\n", "-inf\n", "inf\n", "-3\n"])
def test_non_finite_or_negative_reading_is_refused_not_measured(tmp_path, text):
    fixture = write_jetson(tmp_path, "nano-jp46")
    power = fixture.root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input"
    power.write_text(text)
    meter = JetsonRailsMeter(tmp_path)
    with pytest.raises(MeterError, match=rf"{power}: holds .*not a finite non-negative number"):
        meter.start()


def test_rail_going_bad_mid_run_stops_polling_without_a_traceback(tmp_path, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    fixture = write_jetson(tmp_path, "orin-nano-8gb-jp62")
    meter = JetsonRailsMeter(tmp_path, interval_s=0.005)
    meter.start()
    victim = meter.total_rail.current_file
    write_file(fixture.root, str(victim.relative_to(fixture.root)), "nan\n")
    time.sleep(0.3)  # about 60 ticks of the background thread on the bad file
    with pytest.raises(MeterError, match=str(victim)):
        meter.read()
    meter.stop()
    assert hooked == []  # the polling thread ended quietly; read() reported why


def test_blocked_rail_read_times_out(tmp_path, monkeypatch):
    write_jetson(tmp_path, "nano-jp46")
    monkeypatch.setattr(sysroot, "READ_TIMEOUT_S", 0.2)
    release = threading.Event()

    def hung_power(path: Path) -> str:
        if path.name.startswith("in_power"):
            release.wait(30)  # a sysfs read stuck on a dead I2C bus
        return read_text(path)

    meter = JetsonRailsMeter(tmp_path, reader=hung_power)
    try:
        with pytest.raises(MeterError, match=r"no answer within 0.2 s"):
            meter.sample_watts()
    finally:
        release.set()


def test_board_without_total_rail_says_it_sums_the_rails(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    meter = JetsonRailsMeter(tmp_path)
    assert meter.total_rail is None
    assert meter.source == (
        "jetson INA3221 (hwmon): sum of 4 rails (no VDD_IN or POM_5V_IN rail): "
        "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0+VDDQ_VDD2_1V8AO"
    )


def _relabel(root: Path, labels: dict[str, str]) -> None:
    """Write each hwmon ``inN_label`` file (path relative to ``root``) with its new label."""
    for path, label in labels.items():
        (root / path).write_text(label + "\n")


def test_rails_sharing_a_label_are_all_kept_and_detect_agrees(tmp_path):
    fixture = write_jetson(tmp_path, "agx-orin-64gb-jp512", board_w=20.0)
    label_files = sorted(tmp_path.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/*/in*_label"))
    rails = [p for p in label_files if p.read_text().strip() not in ("NC", "sum of shunt voltages")]
    _relabel(tmp_path, {str(p.relative_to(tmp_path)): "VDD_GPU_SOC" for p in rails})
    meter = JetsonRailsMeter(tmp_path)
    got = meter.read_rails()
    assert len(got) == 4 and all(name.startswith("VDD_GPU_SOC (hwmon") for name in got)
    assert sum(got.values()) == pytest.approx(fixture.total_watts(20.0), rel=2e-3)
    assert meter.sample_watts() == pytest.approx(fixture.total_watts(20.0), rel=2e-3)
    d = detect(tmp_path)
    assert d.rails_w == pytest.approx(got, rel=2e-3)
    assert d.total_w == pytest.approx(meter.sample_watts(), rel=2e-3)


@pytest.mark.parametrize("label", ["vdd_in", "Vdd_In"])
def test_total_rail_is_recognised_in_any_case(tmp_path, label):
    write_jetson(tmp_path, "orin-nano-8gb-jp62", board_w=10.0)
    _relabel(tmp_path, {f"{HWMON3}/in1_label": label})
    meter = JetsonRailsMeter(tmp_path)
    assert meter.total_rail is not None and meter.total_rail.name == label
    assert meter.sample_watts() == pytest.approx(10.0, rel=2e-3)  # not VDD_IN + its sub-rails
    assert detect(tmp_path).total_w == pytest.approx(10.0, rel=2e-3)


def test_a_rail_without_a_label_is_kept_as_unlabelled(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62", board_w=10.0)
    _relabel(tmp_path, {f"{HWMON3}/in2_label": ""})
    names = [r.name for r in find_rails(tmp_path)]
    assert names == ["VDD_IN", "unlabelled (hwmon3 in2)", "VDD_SOC"]


@pytest.mark.parametrize(
    ("name", "text", "limit"),
    [("curr1_input", "1e300", "above 50000"), ("in1_input", "100000", "above 40000")],
)
def test_a_reading_beyond_an_ina3221_channel_is_refused(tmp_path, name, text, limit):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    write_file(tmp_path, f"/{HWMON3}/{name}", text + "\n")
    with pytest.raises(MeterError, match=rf"{name}: holds '{text}', {limit}"):
        JetsonRailsMeter(tmp_path).start()


def test_too_many_rails_are_refused_in_one_line_naming_the_folder(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    for n in range(10, 80):
        write_file(tmp_path, f"/{HWMON3}/in{n}_label", f"RAIL_{n}\n")
    with pytest.raises(MeterError, match=r"hwmon3: more than 64 entries match 'in\*_label'"):
        find_rails(tmp_path)
