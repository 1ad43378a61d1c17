"""`detect` and the Jetson identity files (model, L4T, nvpmodel) on fixture trees."""

import pytest

from ganglion.device import detect
from ganglion.device.jetson_system import jetpack_version, l4t_version, power_mode
from ganglion.device.sysfs_fixtures import write_file, write_host_cpu, write_jetson, write_rapl
from ganglion.device.sysroot import under

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


def test_agx_orin_32gb_is_told_apart_by_memory(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    write_file(tmp_path, "/proc/meminfo", "MemTotal:       31000000 kB\n")
    assert detect(tmp_path).jetson_profile == "jetson-agx-orin-32gb"


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
