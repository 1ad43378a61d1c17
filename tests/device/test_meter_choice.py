"""The energy meter follows the chip that runs the work, and only meters the profile it is."""

import sys
import types

import pytest

from ganglion.device import JetsonRailsMeter, NvmlMeter, RaplMeter, SimulatedMeter, get_profile
from ganglion.device.meters import choose_meter, open_hardware_meter
from ganglion.device.sysfs_fixtures import write_host_cpu, write_jetson, write_rapl
from ganglion.runtime.serving.telemetry import NodeTelemetry


@pytest.fixture
def gpu_present(monkeypatch):
    """A pynvml stand-in with two GPUs drawing power, as on a workstation."""
    nvml = types.SimpleNamespace(
        NVMLError=type("NVMLError", (Exception,), {}),
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetTotalEnergyConsumption=lambda _h: 5_000_000,
        nvmlDeviceGetName=lambda _h: b"NVIDIA GeForce RTX 4090",
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def x86_host(tmp_path):
    write_host_cpu(tmp_path)
    write_rapl(tmp_path, packages=1, start_uj=0)
    return tmp_path


def test_cpu_work_is_metered_by_rapl_even_with_a_gpu_present(x86_host, gpu_present):
    meter, _ = open_hardware_meter(x86_host, "cpu", use_nvml=True)
    assert isinstance(meter, RaplMeter)


def test_cpu_work_without_rapl_is_not_metered_by_the_gpu(tmp_path, gpu_present):
    meter, skipped = open_hardware_meter(tmp_path, "cpu", use_nvml=True)
    assert meter is None and "rapl" in skipped


def test_cuda_work_is_metered_by_nvml_for_that_gpu(x86_host, gpu_present):
    meter, _ = open_hardware_meter(x86_host, "cuda:1", use_nvml=True)
    assert isinstance(meter, NvmlMeter) and meter.source.endswith("(GPU 1)")


@pytest.mark.parametrize("backend_device", ["cpu", "cuda"])
def test_a_jetson_is_metered_by_its_board_rails(tmp_path, backend_device):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    meter, _ = open_hardware_meter(tmp_path, backend_device)
    assert isinstance(meter, JetsonRailsMeter)


@pytest.mark.parametrize(
    ("profile", "backend_device"),
    [("loihi2", "cpu"), ("jetson-orin-nano-8gb", "cpu"), ("rtx-4090", "cpu")],
)
def test_a_profile_this_host_does_not_run_is_simulated_and_says_why(
    x86_host, profile, backend_device
):
    meter, _ = choose_meter(get_profile(profile, root=x86_host), backend_device, "cpu", x86_host)
    assert isinstance(meter, SimulatedMeter)
    assert f"no meter here measures {profile}: this machine is cpu" in meter.source


def test_this_hosts_profile_is_measured(x86_host):
    meter, _ = choose_meter(get_profile("cpu", root=x86_host), "cpu", "cpu", x86_host)
    assert isinstance(meter, RaplMeter)


def test_serving_loihi2_on_a_host_with_rapl_reports_simulated_energy(x86_host):
    telemetry = NodeTelemetry("loihi2", simulate=False, root=str(x86_host))
    try:
        device = telemetry.message([], 1).device
    finally:
        telemetry.close()
    assert device.profile == "loihi2" and device.meter_kind == "simulated"
    assert (
        "rapl" not in device.meter_source and "no meter here measures loihi2" in device.meter_source
    )


def test_serving_this_host_on_cpu_reports_rapl(x86_host):
    telemetry = NodeTelemetry("auto", root=str(x86_host), backend_device="cpu")
    try:
        device = telemetry.message([], 1).device
    finally:
        telemetry.close()
    assert device.meter_kind == "measured" and device.meter_source == "rapl: package-0"


def test_served_jetson_reports_the_detected_power_mode(tmp_path):
    write_jetson(tmp_path, "orin-nano-8gb-jp62")
    (tmp_path / "var/lib/nvpmodel").mkdir(parents=True, exist_ok=True)
    (tmp_path / "var/lib/nvpmodel/status").write_text("pmode:0003\n")
    telemetry = NodeTelemetry("auto", simulate=True, root=str(tmp_path))
    try:
        device = telemetry.message([], 1).device
    finally:
        telemetry.close()
    assert (device.power_mode, device.power_limit_w) == ("7W", 7.0)


def test_a_gpu_profile_is_measured_only_on_that_model(gpu_present, monkeypatch):
    """An RTX 4090 profile on an RTX 4090 is metered; on an H200 it is simulated, saying why
    (root "/": NVML talks to the driver, and the stand-in is that driver here)."""
    meter, _ = choose_meter(get_profile("rtx-4090"), "cuda:0", "cpu", "/")
    assert isinstance(meter, NvmlMeter)
    monkeypatch.setattr(sys.modules["pynvml"], "nvmlDeviceGetName", lambda _h: "NVIDIA H200")
    meter, _ = choose_meter(get_profile("rtx-4090"), "cuda:0", "cpu", "/")
    assert isinstance(meter, SimulatedMeter)
    assert "the GPU here is NVIDIA H200, not a GeForce RTX 4090" in meter.source
