"""NVML meter: both paths through a stand-in module, and the real GPU where there is one."""

import time
import types

import pytest

from ganglion.device.meters import MeterError, NvmlMeter, load_nvml, nvml_gpus


def fake_nvml(has_counter: bool, watts: float = 100.0) -> types.SimpleNamespace:
    """A pynvml stand-in: an mJ counter growing at ``watts``, or (without it) power only."""
    t0 = time.perf_counter()

    class NVMLError(Exception):
        pass

    def energy(_h):
        if not has_counter:
            raise NVMLError("Not Supported")
        return int(5_000_000 + (time.perf_counter() - t0) * watts * 1000)  # mJ

    return types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetPowerUsage=lambda _h: int(watts * 1000),  # mW
    )


@pytest.mark.parametrize("has_counter", [True, False], ids=["counter", "polling"])
def test_energy_tracks_power_on_both_paths(has_counter):
    meter = NvmlMeter(nvml=fake_nvml(has_counter, watts=100.0), interval_s=0.005)
    assert meter.uses_energy_counter is has_counter
    assert ("energy counter" in meter.source) is has_counter
    with meter:
        first = meter.read()
        time.sleep(0.2)
        last = meter.read()
    elapsed = last.timestamp - first.timestamp
    assert (last - first).joules == pytest.approx(100.0 * elapsed, rel=0.05)
    assert last.kind == "measured"


def test_missing_gpu_index_is_refused():
    with pytest.raises(MeterError, match="no NVIDIA GPU with index 3"):
        NvmlMeter(index=3, nvml=fake_nvml(True))


def _real_nvml_or_skip():
    try:
        return load_nvml()
    except MeterError as e:
        pytest.skip(f"no NVIDIA GPU ({e})")


def test_real_gpu_energy_grows():
    nvml = _real_nvml_or_skip()
    gpus = nvml_gpus(nvml)
    assert gpus[0]["name"] and gpus[0]["power_limit_w"] > 0
    with NvmlMeter(nvml=nvml) as meter:
        first = meter.read()
        time.sleep(0.5)
        last = meter.read()
    watts = (last - first).joules / (last.timestamp - first.timestamp)
    assert 1.0 < watts < gpus[0]["power_limit_w"] * 1.2
