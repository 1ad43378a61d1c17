"""`detect` and the Jetson identity files (model, module, L4T, nvpmodel) on fixture trees,
including trees whose files are hostile (FIFOs, devices, huge files, garbage numbers)."""

import json
import os

import pytest

from ganglion.device import detect
from ganglion.device.jetson_system import jetpack_version, l4t_version, power_mode
from ganglion.device.sysfs_fixtures import write_file, write_host_cpu, write_jetson, write_rapl
from ganglion.device.sysroot import RootError, under

HWMON = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"

CASES = {
    # board: (profile, L4T, JetPack, mode id, mode name, read from status file, layout)
    "xavier-agx-jp46": (None, "32.7.1", "4.6.x", 3, "MODE_30W_ALL", True, "ina3221x"),
    "nano-jp46": (None, "32.7.1", "4.6.x", 1, "5W", True, "ina3221x"),
    "agx-orin-64gb-jp512": (
        "jetson-agx-orin-64gb",
        "35.4.1",
        "5.1.2",
        2,
        "MODE_30W",
        True,
        "hwmon",
    ),
    "orin-nano-8gb-jp62": ("jetson-orin-nano-8gb", "36.4.3", "6.1/6.2", 1, "25W", False, "hwmon"),
}


@pytest.mark.parametrize("board", sorted(CASES))
def test_detect_jetson_board(tmp_path, board):
    profile, l4t, jetpack, mode_id, mode_name, from_status, layout = CASES[board]
    write_jetson(tmp_path, board)
    d = detect(tmp_path)
    assert d.jetson_model is not None and "Jetson" in d.jetson_model
    assert d.jetson_profile == profile
    assert (d.l4t_version, d.jetpack_version) == (l4t, jetpack)
    assert d.power_mode["active_id"] == mode_id
    assert d.power_mode["active_name"] == mode_name
    assert d.power_mode["from_status_file"] is from_status
    assert d.rails_layout == layout and d.rails_w
    assert d.gpus == [] and "not queried" in d.gpu_error
    assert d.to_dict()["profile_name"] == (profile or "cpu")


def test_agx_orin_without_a_part_number_is_told_apart_by_memory(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    (tmp_path / "sys/firmware/devicetree/base/compatible").unlink()
    write_file(tmp_path, "/proc/meminfo", "MemTotal:       31000000 kB\n")
    d = detect(tmp_path)
    assert d.jetson_module is None and d.jetson_profile == "jetson-agx-orin-32gb"


@pytest.mark.parametrize(
    "module, profile",
    [
        ("p3701-0005", "jetson-agx-orin-64gb"),
        ("p3701-0004", "jetson-agx-orin-32gb"),
        ("p3701-0000", "jetson-agx-orin-32gb"),
        ("p3701-0008", None),  # AGX Orin Industrial: no built-in profile, not the 64 GB one
    ],
)
def test_agx_orin_module_part_number_decides_the_profile(tmp_path, module, profile):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    compatible = f"nvidia,p3737-0000+{module}\x00nvidia,tegra234\x00"
    write_file(tmp_path, "/sys/firmware/devicetree/base/compatible", compatible)
    (tmp_path / "proc/meminfo").unlink()  # the part number alone must decide
    d = detect(tmp_path)
    assert d.jetson_module == module and d.jetson_profile == profile


def test_status_file_overrides_the_configured_default(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    write_file(tmp_path, "/var/lib/nvpmodel/status", "pmode:0000 fmode:quiet\n")
    state = power_mode(tmp_path)
    assert (state.active_id, state.active_name, state.default_id) == (0, "MAXN", 2)
    assert state.modes == {0: "MAXN", 1: "MODE_15W", 2: "MODE_30W", 3: "MODE_50W"}


def test_absolute_symlinks_resolve_inside_the_root(tmp_path):
    write_jetson(tmp_path, "nano-jp46")
    assert (tmp_path / "etc/nvpmodel.conf").is_symlink()
    conf = under(tmp_path, "/etc/nvpmodel.conf")
    assert conf == tmp_path / "etc/nvpmodel/nvpmodel_t210_jetson-nano.conf"
    model = under(tmp_path, "/proc/device-tree/model")
    assert model == tmp_path / "sys/firmware/devicetree/base/model"


def test_release_file_variants():
    assert jetpack_version("35.4.1") == "5.1.2"
    assert jetpack_version("99.1") is None


def test_missing_release_file_gives_none(tmp_path):
    assert l4t_version(tmp_path) is None
    assert power_mode(tmp_path) is None


def test_x86_host_with_rapl(tmp_path):
    write_host_cpu(tmp_path)
    write_rapl(tmp_path, packages=2)
    d = detect(tmp_path)
    assert d.jetson_model is None and d.l4t_version is None and d.power_mode is None
    assert d.rails_error == "no INA3221 rails found"
    assert d.rapl_zones == ["package-0", "package-1"] and d.rapl_readable
    assert d.cpu["physical_cores"] == 8 and d.cpu["logical_cores"] == 16
    assert d.profile_name == "cpu"


def test_rapl_without_counter_is_reported_unreadable(tmp_path):
    write_host_cpu(tmp_path)
    write_rapl(tmp_path, packages=1)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()
    d = detect(tmp_path)
    assert d.rapl_zones == ["package-0"] and not d.rapl_readable
    assert "energy_uj" in d.rapl_error


def test_empty_root_detects_nothing_and_says_so(tmp_path):
    d = detect(tmp_path)
    assert "error" in d.cpu and "proc/cpuinfo" in d.cpu["error"]
    assert not d.rapl_readable and d.rapl_error


def test_missing_or_non_folder_root_is_an_error(tmp_path):
    with pytest.raises(RootError, match="does not exist"):
        detect(tmp_path / "nonexistent")
    (tmp_path / "file").write_text("")
    with pytest.raises(RootError, match="not a folder"):
        detect(tmp_path / "file")


@pytest.mark.timeout(30)
def test_fifos_devices_and_folders_make_parts_unreadable_without_blocking(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    os.unlink(tmp_path / "proc/cpuinfo")
    os.mkfifo(tmp_path / "proc/cpuinfo")
    os.unlink(tmp_path / "etc/nv_tegra_release")
    (tmp_path / "etc/nv_tegra_release").mkdir()
    os.unlink(tmp_path / "var/lib/nvpmodel/status")
    os.symlink("/dev/zero", tmp_path / "var/lib/nvpmodel/status")  # inside the root: absent
    rail = tmp_path / HWMON.lstrip("/") / "in1_input"
    rail.unlink()
    os.symlink("/dev/zero", rail)  # followed inside the root, as chroot would: absent there
    d = detect(tmp_path)
    assert d.cpu["error"] == f"unreadable ({tmp_path}/proc/cpuinfo: a FIFO, not a regular file)"
    assert d.unreadable == {
        "l4t_version": f"{tmp_path}/etc/nv_tegra_release: a folder, not a regular file"
    }
    assert d.power_mode["active_id"] == 2 and not d.power_mode["from_status_file"]
    assert d.jetson_profile == "jetson-agx-orin-64gb"  # the rest still read
    assert d.rails_unreadable["VDD_GPU_SOC"] == f"{tmp_path}/dev/zero: No such file or directory"
    assert set(d.rails_w) == {"VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}


def test_huge_sparse_cpuinfo_is_unreadable_not_read(tmp_path):
    write_host_cpu(tmp_path)
    with open(tmp_path / "proc/cpuinfo", "r+b") as f:
        f.truncate(3 * 2**30)
    assert "larger than the 4194304 read" in detect(tmp_path).cpu["error"]


@pytest.mark.parametrize("text", ["nan\n", "-inf\n", "-5\n", "lots\n", "1e999\n"])
def test_rail_reading_that_is_not_finite_non_negative_is_unreadable(tmp_path, text):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    write_file(tmp_path, f"{HWMON}/curr1_input", text)  # VDD_IN's current
    d = detect(tmp_path)
    assert "VDD_IN" not in d.rails_w and "curr1_input: holds" in d.rails_unreadable["VDD_IN"]
    assert d.total_w is None and "VDD_IN unreadable" in d.total_source
    assert all(w >= 0 for w in d.rails_w.values()) and d.rails_w


def test_board_without_vdd_in_reports_the_sum_of_its_rails_and_says_so(tmp_path):
    fixture = write_jetson(tmp_path, "agx-orin-64gb-jp512", board_w=20.0)
    d = detect(tmp_path)
    assert d.total_rail is None
    assert d.total_w == pytest.approx(fixture.total_watts(20.0), rel=2e-3)
    assert d.total_w == pytest.approx(sum(d.rails_w.values()))
    assert d.total_source.startswith("sum of 4 rails (no VDD_IN or POM_5V_IN rail)")


def test_board_with_vdd_in_reports_that_rail(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62", board_w=9.0)
    d = detect(tmp_path)
    assert (d.total_rail, d.total_source) == ("VDD_IN", "VDD_IN rail")
    assert d.total_w == pytest.approx(9.0, rel=2e-3)


def test_rapl_counter_holding_words_is_unreadable_not_an_abort(tmp_path):
    write_host_cpu(tmp_path)
    write_rapl(tmp_path, packages=1)
    write_file(tmp_path, "/sys/class/powercap/intel-rapl:0/energy_uj", "lots\n")
    d = detect(tmp_path)
    assert not d.rapl_readable
    assert d.rapl_error == (
        f"unreadable ({tmp_path}/sys/class/powercap/intel-rapl:0/energy_uj: "
        "holds 'lots', not a whole number of µJ)"
    )
    assert d.cpu["physical_cores"] == 8  # the rest of the machine is still detected


def test_garbage_cpu_figures_fall_back_to_plausible_ones(tmp_path):
    write_host_cpu(tmp_path, max_khz=None)
    text = (tmp_path / "proc/cpuinfo").read_text()
    text = text.replace("cpu cores\t: 4", "cpu cores\t: -3").replace("2000.000", "nan")
    write_file(tmp_path, "/proc/cpuinfo", text)
    write_file(tmp_path, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "9" * 4000)
    d = detect(tmp_path)
    assert d.cpu["physical_cores"] == d.cpu["logical_cores"] == 16
    assert d.cpu["max_mhz"] == 1000.0 and "assumed" in d.cpu["frequency_source"]
    json.dumps(d.to_dict(), allow_nan=False)
