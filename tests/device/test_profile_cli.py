"""``ganglion devices`` and ``ganglion profile`` through Typer's CliRunner on fixture roots."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.device.sysfs_fixtures import PowerWriter, write_host_cpu, write_jetson, write_rapl
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli.app import _register, app
from ganglion.runtime.opcount import count_ops, example_inputs
from ganglion.runtime.profiling import MIN_METER_WINDOW_S

runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    calib = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    deployable = convert_spiking(model.eval(), calib, options=SpikingOptions(timesteps=8))
    return save_bundle(deployable, tmp_path_factory.mktemp("b") / "tiny-snn")


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_spiking_counts_follow_the_recorded_spikes(bundle):
    d = load_bundle(bundle)
    counts = count_ops(d, example_inputs(d.manifest, batch=3))
    first, lif, second = counts.layers[0], counts.layers[1], counts.layers[2]
    assert first.macs == {"fp32": 16 * 32 * 8}  # real-valued input: dense every timestep
    assert lif.neurons == 32 and lif.neuron_updates == 32 * 8
    assert second.synops == pytest.approx(lif.spike_rate * 32 * 4 * 8)
    assert counts.timesteps == 8
    assert second.synaptic_macs == 32 * 4 * 8  # a dense device multiplies the zeros too


def test_counts_include_the_ops_the_scan_dispatches(bundle):
    d = load_bundle(bundle)
    one, four = (count_ops(d, example_inputs(d.manifest, batch=b)) for b in (1, 4))
    # the reference scan issues several small ops per timestep: the loop dominates launches
    assert one.launches >= 4 * 8
    assert one.launches == pytest.approx(four.launches, abs=2)  # per call, whatever the batch
    assert one.elementwise_bytes > 0 and one.weight_bytes == (16 * 32 + 32 + 32 * 4 + 4) * 4
    assert four.elementwise_bytes == pytest.approx(one.elementwise_bytes, rel=0.2)


def test_devices_json_reports_the_fixture_board(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    data = json.loads(invoke("devices", "--json", "--root", tmp_path))
    assert data["detected"]["jetson_profile"] == "jetson-orin-nano-8gb"
    assert data["detected"]["power_mode"]["active_name"] == "25W"
    assert data["detected"]["l4t_version"] == "36.4.3"
    assert {"loihi2", "rtx-4090", "cpu"} <= set(data["profiles"])


def test_devices_table_names_rapl_state(tmp_path):
    write_host_cpu(tmp_path)
    write_rapl(tmp_path, packages=1)
    out = invoke("devices", "--root", tmp_path)
    assert "package-0 (readable)" in out and "Xeon" in out
    for name in ("jetson-agx-orin-64gb", "jetson-orin-nano-8gb", "rtx-4090"):
        assert name in out  # full names in a pipe (CliRunner's output is not a terminal)


def test_profile_measures_energy_from_rapl_fixture(tmp_path, bundle):
    write_host_cpu(tmp_path)
    fixture = write_rapl(tmp_path, packages=1)
    with PowerWriter(fixture, base_w=30.0, swing=0.0):
        data = json.loads(
            invoke("profile", bundle, "--runs", 300, "--warmup", 2, "--json", "--root", tmp_path)
        )
    (r,) = data["results"]
    assert r["device"] == "cpu" and r["latency_kind"] == "measured"
    assert r["energy_kind"] == "measured" and r["energy_source"].startswith("rapl")
    assert r["average_power_w"] == pytest.approx(30.0, rel=0.25)
    lat = r["latency"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["throughput_per_s"] == pytest.approx(1 / lat["mean"], rel=1e-6)
    assert data["ops_per_inference"]["neuron_updates"] == 32 * 8
    # a meter's counter moves in steps: the calls go on until it has counted long enough
    assert r["runs"] >= 300 and r["runs"] * lat["mean"] >= 0.9 * MIN_METER_WINDOW_S


def test_profile_simulates_other_devices_and_plots(tmp_path, bundle):
    write_host_cpu(tmp_path)
    png = tmp_path / "pareto.png"
    data = json.loads(
        invoke(
            "profile",
            bundle,
            "--device",
            "auto",
            "--device",
            "loihi2",
            "--device",
            "jetson-agx-orin-64gb",
            "--runs",
            5,
            "--warmup",
            1,
            "--simulate",
            "--json",
            "--plot",
            png,
            "--root",
            tmp_path,
        )
    )
    host, loihi, orin = data["results"]
    assert host["latency_kind"] == "measured" and host["energy_kind"] == "simulated"
    assert loihi["latency_kind"] == loihi["energy_kind"] == "simulated" and loihi["runs"] == 0
    assert loihi["latency"] is None and loihi["predicted_latency_s"] > 0
    assert host["step_latency"]["p50"] > 0 and host["latency"]["p99_over_p50"] >= 1
    assert loihi["energy_per_inference_j"] == pytest.approx(loihi["prediction"]["energy_j"])
    first, neuron, second = loihi["layers"][:3]
    assert first["spike_rate"] is None and neuron["spike_rate"] is not None
    assert second["synops"] > 0 and second["energy_j"] > 0
    assert orin["mode"] == "MAXN"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_profile_table_marks_measured_and_simulated(tmp_path, bundle):
    write_host_cpu(tmp_path)
    out = invoke(
        "profile",
        bundle,
        "--device",
        "cpu",
        "--device",
        "loihi2",
        "--runs",
        3,
        "--warmup",
        0,
        "--root",
        tmp_path,
    )
    assert "p50 / p90 / p99" in out and "spread p99 / p50" in out and "spike rate" in out
    assert "per step" in out and "measured (streaming)" in out
    assert "simulated (roofline)" in out  # the Loihi 2 row is one predicted figure
    assert "mJ" in out and " J " not in out  # one energy unit


def test_unknown_device_is_one_line_error(tmp_path, bundle):
    write_host_cpu(tmp_path)
    result = runner.invoke(
        app, ["profile", str(bundle), "--device", "tpu-v9", "--root", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "unknown device 'tpu-v9'" in str(result.exception)


def test_a_batch_too_large_for_memory_is_refused_before_it_is_drawn(
    tmp_path, bundle, one_line_error, monkeypatch
):
    from ganglion.runtime.cli import invoke
    from ganglion.runtime.kinds import base

    write_host_cpu(tmp_path)
    monkeypatch.setattr(base, "MAX_EXAMPLE_BYTES", 1 << 18)  # 2048 samples of 16 values
    code, _, err = invoke("profile", str(bundle), "--batch", "2049", "--root", str(tmp_path))
    one_line_error(code, err, str(bundle), "batch 2049", "GiB")
    code, out, _ = invoke("profile", str(bundle), "--batch", "2048", "--root", str(tmp_path),
                          "--runs", "2", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["results"][0]["batch"] == 2048


def test_profile_under_a_root_says_so_and_uses_the_detected_power_mode(tmp_path, bundle):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    (tmp_path / "var/lib/nvpmodel/status").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0003\n")  # 7W, not the 25W default
    args = (
        "profile",
        bundle,
        "--runs",
        3,
        "--warmup",
        0,
        "--simulate",
        "--json",
        "--root",
        tmp_path,
    )
    (r,) = json.loads(invoke(*args))["results"]
    assert r["device"] == "jetson-orin-nano-8gb" and r["mode"] == "7W"
    assert "7W power limit" in r["energy_source"]
    assert any(note.startswith(f"--root {tmp_path}: ") for note in r["notes"])


def _user_profile(tmp_path, name):
    from ganglion.device.profiles import builtin_profiles

    data = builtin_profiles()["rtx-4060"].to_dict()
    data["name"] = name
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(data))
    return path


def test_names_from_files_are_printed_as_plain_text(tmp_path, bundle):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    (hwmon / "in1_label").write_text("VDD[/b]\x1b[2J\n")  # no VDD_IN now: the rails are summed
    name = "x[/bold]y[link=file:///etc/passwd]z"
    out = invoke(
        "profile", bundle, "--device", "auto", "--device", name, "--devices",
        _user_profile(tmp_path, name), "--runs", 3, "--warmup", 0, "--root", tmp_path,
    )  # fmt: skip
    flat = " ".join(out.replace("│", " ").split())
    assert f"on {name} (default)" in flat and "VDD[/b]\ufffd[2J" in flat
    assert "\x1b" not in out


def test_a_dollar_in_a_device_name_is_drawn_as_text(tmp_path, bundle):
    write_host_cpu(tmp_path)
    png = tmp_path / "p.png"
    name = "gpu$\\frac{a$"
    invoke(
        "profile", bundle, "--device", name, "--devices", _user_profile(tmp_path, name),
        "--plot", png, "--runs", 3, "--root", tmp_path,
    )  # fmt: skip
    assert png.read_bytes()[:4] == b"\x89PNG"
