"""NVML meter: both paths through a stand-in module, and the real GPU where there is one."""

import sys
import threading
import time
import types

import pytest

from ganglion.device.meters import MeterError, NvmlMeter, load_nvml, nvml_gpu_for, nvml_gpus


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
        nvmlDeviceGetName=lambda _h: "Stand-in GPU",
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


def scripted_nvml(counter_mj=(), fail=(), power_w=50.0) -> types.SimpleNamespace:
    """A pynvml stand-in whose counter returns ``counter_mj`` in turn (then the GPU is lost),
    and whose queries named in ``fail`` raise NVMLError."""
    values = iter(counter_mj)

    class NVMLError(Exception):
        pass

    def query(name, value):
        def answer(*_):
            if name in fail:
                raise NVMLError("Not Supported\nsecond line")
            return value() if callable(value) else value

        return answer

    def energy(_h):
        if "energy" in fail:
            raise NVMLError("Not Supported")
        value = next(values, None)
        if value is None:
            raise NVMLError("GPU is lost")
        return value

    return types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetHandleByUUID=lambda u: f"uuid:{u.decode()}",
        nvmlDeviceGetName=query("name", b"Stand-in GPU"),
        nvmlDeviceGetMemoryInfo=query("memory", types.SimpleNamespace(total=8 << 30)),
        nvmlDeviceGetEnforcedPowerLimit=query("limit", 115_000),
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetPowerUsage=query("power", lambda: int(power_w * 1000)),
    )


def test_counter_going_backwards_is_an_error_not_negative_energy():
    meter = NvmlMeter(nvml=scripted_nvml([1, 9_000_000, 1_000]))
    meter.start()
    with pytest.raises(MeterError, match="went back from 9000000 to 1000 mJ"):
        meter.read()


def test_nvml_error_in_read_is_a_one_line_meter_error():
    meter = NvmlMeter(nvml=scripted_nvml([1, 2]))
    meter.start()
    with pytest.raises(MeterError, match=r"nvml energy counter \(GPU 0\): GPU is lost") as err:
        meter.read()
    assert "\n" not in str(err.value)


def test_nvml_error_in_the_polling_thread_stops_it_without_a_traceback(monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    nvml = scripted_nvml(fail={"energy"})
    meter = NvmlMeter(nvml=nvml, interval_s=0.005)
    meter.start()

    def lost(_h):
        raise nvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetPowerUsage = lost
    time.sleep(0.1)
    with pytest.raises(MeterError, match="GPU is lost"):
        meter.read()
    meter.stop()
    assert hooked == []


@pytest.mark.parametrize("fail", ["limit", "memory"])
def test_an_unsupported_query_makes_that_figure_unknown_not_the_gpu(fail):
    (gpu, _) = nvml_gpus(scripted_nvml(fail={fail}))
    assert gpu["name"] == "Stand-in GPU"
    assert gpu["power_limit_w" if fail == "limit" else "memory_bytes"] is None
    assert gpu["memory_bytes" if fail == "limit" else "power_limit_w"] is not None


@pytest.mark.parametrize(
    ("device", "visible", "gpu"),
    [
        ("cuda", None, 0),
        ("cuda:1", None, 1),
        ("cuda:0", "1,0", 1),
        ("cuda:1", "GPU-1a2b, GPU-3c4d", "GPU-3c4d"),
    ],
)
def test_cuda_device_maps_to_the_nvml_gpu_behind_it(device, visible, gpu):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert nvml_gpu_for(device, env) == gpu


def test_a_gpu_torch_has_started_is_found_by_its_uuid_whatever_the_numbering(monkeypatch):
    """CUDA numbers GPUs fastest first, NVML by PCI bus: where torch has CUDA running, its
    UUID for ``cuda:N`` names the GPU exactly, and CUDA_VISIBLE_DEVICES is not needed."""
    uuids = ["1a2b-0000", "3c4d-1111"]
    started = [True]
    cuda = types.SimpleNamespace(
        is_initialized=lambda: started[0],
        device_count=lambda: len(uuids),
        get_device_properties=lambda n: types.SimpleNamespace(uuid=uuids[n]),
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    order = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert nvml_gpu_for("cuda:1", order) == "GPU-3c4d-1111"
    assert nvml_gpu_for("cuda", order) == "GPU-1a2b-0000"
    assert nvml_gpu_for("cuda:1", {"CUDA_VISIBLE_DEVICES": "1,0"}) == "GPU-3c4d-1111"
    started[0] = False  # nothing is started to ask: the environment decides
    assert nvml_gpu_for("cuda:1", {"CUDA_VISIBLE_DEVICES": "1,0"}) == 0


@pytest.mark.parametrize(("device", "visible"), [("cuda:2", "0,1"), ("cuda", "MIG-x"), ("cpu", "")])
def test_cuda_device_without_an_nvml_gpu_is_refused(device, visible):
    with pytest.raises(MeterError):
        nvml_gpu_for(device, {"CUDA_VISIBLE_DEVICES": visible})


def test_uuid_selects_the_gpu_by_uuid():
    meter = NvmlMeter("GPU-3c4d", nvml=scripted_nvml([5, 6]))
    assert meter.source == "nvml energy counter (GPU GPU-3c4d)"
