"""Built-in profiles, the detected host CPU, and user devices from TOML/JSON files."""

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from ganglion.device.simulator import OpCounts, predict
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
    for suffix, text in ((".toml", USER_TOML), (".json", json.dumps(profile.to_dict()))):
        bom = tmp_path / f"bom{suffix}"  # a byte-order mark, as some editors save UTF-8
        bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
        (same,) = load_profile_file(bom)
        assert same.origin == str(bom)
        assert {**same.to_dict(), "origin": ""} == {**profile.to_dict(), "origin": ""}


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


def _write_profile(tmp_path, change, name="bad.json"):
    """A valid user profile (the RTX 4090's figures renamed) with ``change`` applied to it."""
    data = builtin_profiles()["rtx-4090"].to_dict()
    data["name"] = "my-gpu"
    change(data)
    f = tmp_path / name
    f.write_text(json.dumps(data))
    return f


def _set(path, value):
    def change(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return change


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("peak_ops.fp32", float("nan"), r"peak_ops\.fp32 must be a finite number > 0, got nan"),
        ("peak_ops.fp16", 0, r"peak_ops\.fp16 must be a finite number > 0, got 0\.0"),
        ("memory_bandwidth", -1e9, r"memory_bandwidth must be a finite number > 0"),
        ("memory_bytes", float("inf"), r"memory_bytes must be a finite number > 0, got inf"),
        ("idle_w", -5, r"idle_w must be a finite number >= 0"),
        ("launch_overhead_s", float("nan"), r"launch_overhead_s must be a finite number >= 0"),
        ("peak_ops.fp32", "82.6e12", r"peak_ops\.fp32 must be a number, got '82\.6e12'"),
        ("memory_bytes", True, r"memory_bytes must be a number, got True"),
        ("memory_bytes", 10**400, r"memory_bytes must be a number a float can hold"),
        ("peak_ops", [1, 2], r"peak_ops must be a table"),
        ("power_modes", [], r"power_modes must be a non-empty list of tables"),
        ("power_modes", [5], r"power_modes\[0\] must be a table"),
        ("sources", ["a"], r"sources must be a table"),
        ("assumed", [1], r"assumed\[0\] must be a string"),
        ("kind", 3, r"kind must be a string, got 3"),
    ],
)
def test_each_bad_field_is_one_line_naming_file_and_field(tmp_path, path, value, message):
    f = _write_profile(tmp_path, _set(path, value))
    with pytest.raises(ProfileError) as err:
        load_profile_file(f)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{f}: profile 'my-gpu': ")
    assert re.search(message, text), text


@pytest.mark.parametrize(
    "mode, message",
    [
        (
            {"name": "default", "watts": 0},
            r"power_modes\.default\.watts must be a finite number > 0",
        ),
        ({"name": "default", "watts": float("nan")}, r"watts must be a finite number > 0, got nan"),
        ({"name": "default", "watts": 450, "nvpmodel_id": 1.5}, r"nvpmodel_id must be a whole"),
        ({"name": "default"}, r"power_modes\[0\] must be a table of name, watts, nvpmodel_id"),
    ],
)
def test_bad_power_mode_is_refused(tmp_path, mode, message):
    f = _write_profile(tmp_path, _set("power_modes", [mode]))
    with pytest.raises(ProfileError, match=message):
        load_profile_file(f)


def test_duplicate_power_mode_names_are_refused(tmp_path):
    def change(data):
        data["power_modes"] = [{"name": "a", "watts": 1}, {"name": "a", "watts": 2}]
        data["default_mode"] = "a"

    f = _write_profile(tmp_path, change)
    with pytest.raises(ProfileError, match="power mode names must be unique"):
        load_profile_file(f)


def test_neuromorphic_rate_of_zero_is_refused_but_dense_zeros_are_not_applicable(tmp_path):
    loihi = builtin_profiles()["loihi2"]
    assert loihi.peak_ops["fp32"] == 0 and loihi.memory_bandwidth == 0  # allowed: does not apply
    data = loihi.to_dict()
    data["neuromorphic"]["synops_per_s"] = 0
    f = tmp_path / "chip.json"
    f.write_text(json.dumps(data))
    with pytest.raises(
        ProfileError, match=r"neuromorphic\.synops_per_s must be a finite number > 0"
    ):
        load_profile_file(f)


def test_loihi2_capacity_matches_the_brief_and_is_sourced():
    """128 cores holding 1,048,576 neurons and 120 M synapses per chip (Intel's Loihi 2
    brief), the per-core split sourced, the byte per synapse marked as our assumption."""
    loihi = builtin_profiles()["loihi2"]
    n = loihi.neuromorphic
    assert n.cores == 128
    assert n.cores * n.neurons_per_core == 1_048_576
    assert n.cores * n.synapses_per_core == 120_000_000
    for key in ("neuromorphic.neurons_per_core", "neuromorphic.synapses_per_core"):
        assert "brief" in loihi.sources[key] and not loihi.is_assumed(key)
    assert loihi.is_assumed("neuromorphic.bytes_per_synapse")


@pytest.mark.parametrize("key", ["synapses_per_core", "bytes_per_synapse"])
@pytest.mark.parametrize("value", [0, -5, 2.5, True, "937500", 10**31])
def test_capacity_counts_are_range_checked_by_name(tmp_path, key, value):
    data = builtin_profiles()["loihi2"].to_dict()
    data["neuromorphic"][key] = value
    f = tmp_path / "chip.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=rf"neuromorphic\.{key} must be a whole number in \[1,"):
        load_profile_file(f)


def test_neuromorphic_profile_without_a_synapse_limit_is_refused(tmp_path):
    data = builtin_profiles()["loihi2"].to_dict()
    del data["neuromorphic"]["synapses_per_core"]
    f = tmp_path / "chip.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"missing \['synapses_per_core'\]"):
        load_profile_file(f)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", r"entry 1 is a int, not a profile table"),
        ("[]", r"holds no profiles"),
        ("7", r"must hold a profile object or a list of them"),
        ("[" * 100_000, r"is not valid JSON"),
        ('{"name": 1' + "0" * 5000 + "}", r"is not valid JSON"),
        ('{"peak_ops": {"fp32": NaN}}', r"missing fields"),
    ],
)
def test_malformed_json_files_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "devices.json"
    f.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(f)
    assert re.search(message, str(err.value)) and str(f) in str(err.value)
    assert "\n" not in str(err.value)


def test_toml_device_key_that_is_not_an_array_is_refused(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text('device = "gpu"\n')
    with pytest.raises(ProfileError, match=r"'device' must be an array of tables"):
        load_profile_file(f)


def test_profile_file_is_bounded_before_parsing(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(2**31)  # 2 GB, sparse
    with pytest.raises(ProfileError, match=r"cannot read device file .*big.json: .*larger than"):
        load_profile_file(big)
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(ProfileError, match="is not UTF-8 text"):
        load_profile_file(tmp_path / "latin1.json")


@pytest.mark.timeout(30)
def test_profile_fifo_from_the_env_var_is_refused_without_blocking(tmp_path, monkeypatch):
    write_host_cpu(tmp_path)
    fifo = tmp_path / "devices.json"
    os.mkfifo(fifo)
    monkeypatch.setenv(ENV_VAR, str(fifo))
    with pytest.raises(ProfileError, match="a FIFO, not a regular file"):
        available_profiles(root=tmp_path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
FIELDS = [
    "name",
    "kind",
    "peak_ops",
    "peak_ops.fp32",
    "peak_ops.fp16",
    "memory_bandwidth",
    "memory_bytes",
    "power_modes",
    "default_mode",
    "idle_w",
    "launch_overhead_s",
    "sources",
    "assumed",
    "neuromorphic",
    "neuromorphic.synops_per_s",
    "neuromorphic.cores",
    "neuromorphic.synapses_per_core",
    "neuromorphic.min_timestep_s",
]


@settings(max_examples=80, deadline=None, database=None)
@given(
    base=st.sampled_from(["rtx-4090", "loihi2"]),
    changes=st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES), min_size=1, max_size=3),
)
def test_random_field_values_give_a_named_error_or_finite_predictions(base, changes):
    data = builtin_profiles()[base].to_dict()
    for path, value in changes:
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[last] = value
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "fuzzed.json"
        f.write_text(json.dumps(data))  # bare NaN/Infinity as Python writes them
        try:
            (profile,) = load_profile_file(f)
        except ProfileError as e:
            assert str(f) in str(e) and "\n" not in str(e)
            return
    counts = OpCounts(macs={"fp32": 1e6}, bytes_moved=1e6, synops=1e5, neuron_updates=1e4)
    pred = predict(counts, profile)
    assert math.isfinite(pred.latency_s) and pred.latency_s >= 0
    assert math.isfinite(pred.energy_j) and pred.energy_j >= 0


def _user_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("suffix", "detected", "field", "must"),
    [
        (".toml", "[device.detected]\nwhen = 1979-05-27T07:32:00Z\n", "detected.when", "a string"),
        (".json", {"clock": float("inf")}, "detected.clock", "a finite number"),
        (".json", {"n": 2**70}, "detected.n", "a number within 64 bits"),
        (".json", {"t": "x" * 5000}, "detected.t", "a string of at most"),
        (".json", json.loads("[" * 900 + "]" * 900), "detected", "a table"),
        (".json", json.loads('{"a":' * 900 + "1" + "}" * 900), "detected.a.a.a", "nested at most"),
        (".json", {f"k{i}": i for i in range(2000)}, "detected", "at most 1000 values"),
    ],
)
def test_detected_holds_only_bounded_json_safe_values(tmp_path, suffix, detected, field, must):
    data = builtin_profiles()["rtx-4060"].to_dict()
    data["name"] = "lab-gpu"
    if suffix == ".toml":
        text = USER_TOML + detected
    else:
        data["detected"] = detected
        text = json.dumps(data)
    path = _user_file(tmp_path, "lab" + suffix, text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"{field}" in message and must in message


def test_a_profile_cannot_be_named_auto(tmp_path):
    data = builtin_profiles()["rtx-4060"].to_dict()
    data["name"] = "auto"
    with pytest.raises(ProfileError, match="other than 'auto'"):
        load_profile_file(_user_file(tmp_path, "auto.json", json.dumps(data)))
