"""Built-in profiles, the detected host CPU, and user devices from TOML/JSON files."""

import json

import pytest

from ganglion.device.profiles import (
    ENV_VAR,
    ProfileError,
    available_profiles,
    builtin_profiles,
    detect_cpu_profile,
    get_profile,
    load_profile_file,
    profile_from_dict,
)
from ganglion.device.sysfs_fixtures import write_host_cpu, write_jetson

REQUIRED = [
    "jetson-agx-orin-64gb",
    "jetson-agx-orin-32gb",
    "jetson-orin-nx-16gb",
    "jetson-orin-nano-8gb",
    "rtx-4090",
    "rtx-4060",
    "loihi2",
    "cpu",
]

USER_TOML = """
[[device]]
name = "my-board"
kind = "gpu"
memory_bandwidth = 50e9
memory_bytes = 4e9
default_mode = "10W"
peak_ops = { fp32 = 1e12, int8 = 8e12 }
power_modes = [{ name = "10W", watts = 10 }, { name = "5W", watts = 5 }]
assumed = ["power_modes.5W"]

[device.sources]
"peak_ops.fp32" = "vendor sheet"
"peak_ops.int8" = "vendor sheet"
memory_bandwidth = "vendor sheet"
memory_bytes = "vendor sheet"
"power_modes.10W" = "vendor sheet"
"""


def test_every_required_profile_exists(tmp_path):
    write_host_cpu(tmp_path)
    assert set(REQUIRED) <= set(available_profiles(root=tmp_path))


def test_every_builtin_figure_has_a_source_or_is_marked_assumed():
    for profile in builtin_profiles().values():
        for key in profile.figure_keys():
            assert key in profile.sources or profile.is_assumed(key), (profile.name, key)


def test_published_figures_match_reference():
    p = builtin_profiles()
    assert p["rtx-4090"].peak_ops["fp32"] == 82.6e12
    assert p["rtx-4090"].peak_ops["fp16"] == 165.2e12
    assert p["rtx-4090"].memory_bandwidth == 1008e9
    assert p["jetson-agx-orin-64gb"].memory_bandwidth == 204.8e9
    assert {m.name: m.watts for m in p["jetson-agx-orin-64gb"].power_modes} == {
        "MAXN": 60,
        "15W": 15,
        "30W": 30,
        "50W": 50,
    }
    assert p["jetson-orin-nano-8gb"].mode("25W").nvpmodel_id == 1
    assert p["loihi2"].is_assumed("neuromorphic.energy_per_synop_j")


def test_cpu_profile_is_detected_from_the_root(tmp_path):
    write_host_cpu(
        tmp_path, sockets=1, cores_per_socket=6, max_khz=3_000_000, flags="sse2 avx avx2"
    )
    cpu = detect_cpu_profile(tmp_path)
    assert cpu.detected["physical_cores"] == 6 and cpu.detected["logical_cores"] == 12
    assert cpu.detected["max_mhz"] == 3000.0 and cpu.detected["simd"] == "avx2"
    assert cpu.peak_ops["fp32"] == pytest.approx(6 * 3.0e9 * 32)
    assert cpu.is_assumed("peak_ops.fp32") and not cpu.is_assumed("memory_bytes")
    assert "Xeon" in cpu.display_name


def test_arm_cpu_without_model_name(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    cpu = detect_cpu_profile(tmp_path)
    assert cpu.detected["physical_cores"] == 6 and cpu.detected["simd"] == "asimd"
    assert cpu.detected["max_mhz"] == 1728.0
    assert "0xd42" in cpu.detected["model"]


def test_frequency_falls_back_to_cpuinfo(tmp_path):
    write_host_cpu(tmp_path, max_khz=None)
    assert detect_cpu_profile(tmp_path).detected["max_mhz"] == 2000.0


def test_user_toml_adds_a_device(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(USER_TOML)
    (profile,) = load_profile_file(f)
    assert profile.name == "my-board" and profile.origin == str(f)
    assert profile.ops_per_s("int8") == 8e12 and profile.ops_per_s("fp16") == 1e12
    assert profile.mode().watts == 10 and profile.is_assumed("power_modes.5W")
    assert profile.is_assumed("idle_w")  # left out, so marked assumed


def test_user_json_from_env_var_overrides_a_builtin(tmp_path, monkeypatch):
    write_host_cpu(tmp_path)
    data = builtin_profiles()["rtx-4060"].to_dict()
    data["power_modes"] = [{"name": "default", "watts": 100.0}]
    folder = tmp_path / "devices"
    folder.mkdir()
    (folder / "4060.json").write_text(json.dumps(data))
    monkeypatch.setenv(ENV_VAR, str(folder))
    profile = get_profile("rtx-4060", root=tmp_path)
    assert profile.mode().watts == 100.0 and profile.origin.endswith("4060.json")


def test_figure_without_source_is_refused(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(USER_TOML.replace('assumed = ["power_modes.5W"]', ""))
    with pytest.raises(ProfileError, match=r"'my-board'.*power_modes\.5W"):
        load_profile_file(f)


def test_unknown_field_and_bad_syntax_name_the_file(tmp_path):
    f = tmp_path / "typo.json"
    f.write_text(json.dumps({**builtin_profiles()["rtx-4090"].to_dict(), "peak_flops": 1}))
    with pytest.raises(ProfileError, match="unknown fields.*peak_flops"):
        load_profile_file(f)
    g = tmp_path / "broken.toml"
    g.write_text("name = ")
    with pytest.raises(ProfileError, match="broken.toml is not valid TOML"):
        load_profile_file(g)


def test_unknown_device_lists_known_ones(tmp_path):
    write_host_cpu(tmp_path)
    with pytest.raises(ProfileError, match="unknown device 'tpu'.*rtx-4090"):
        get_profile("tpu", root=tmp_path)


def test_missing_env_file_is_an_error(tmp_path, monkeypatch):
    write_host_cpu(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.toml"))
    with pytest.raises(ProfileError, match="nope.toml does not exist"):
        available_profiles(root=tmp_path)


def test_profile_round_trips_through_json():
    for profile in builtin_profiles().values():
        data = json.loads(json.dumps(profile.to_dict()))
        assert profile_from_dict(data, origin=profile.origin) == profile


def test_empty_root_still_lists_a_template_cpu(tmp_path):
    cpu = available_profiles(root=tmp_path)["cpu"]
    assert "proc/cpuinfo" in cpu.detected["error"]
    assert cpu.is_assumed("peak_ops.fp32")
