"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, imported when a meter is made).

The energy counter ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta
and newer, updated every 20–100 ms) is used where the GPU has it; otherwise the meter polls
``nvmlDeviceGetPowerUsage`` (mW; a 1 s average on Ampere and newer) and integrates it in a
thread. Both are ``measured``; ``source`` says which one was used.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from ganglion.device.meters.base import EnergyMeter, MeterError, PollingMeter, Reading


def load_nvml() -> ModuleType:
    """Import and initialise ``pynvml``; `MeterError` says why when there is no NVIDIA GPU."""
    try:
        import pynvml
    except ImportError as e:
        raise MeterError("NVML needs the nvidia-ml-py package (pip install nvidia-ml-py)") from e
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as e:
        raise MeterError(f"no NVIDIA GPU: NVML did not initialise ({e})") from e
    if count == 0:
        raise MeterError("no NVIDIA GPU: NVML reports 0 devices")
    return pynvml


def nvml_gpus(nvml: ModuleType | None = None) -> list[dict[str, Any]]:
    """Name, memory and power limit of every GPU NVML sees; `MeterError` when none."""
    nvml = nvml or load_nvml()
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        name = nvml.nvmlDeviceGetName(h)
        out.append(
            {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(h).total),
                "power_limit_w": nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            }
        )
    return out


class _PowerPolling(PollingMeter):
    def __init__(self, nvml: ModuleType, handle: Any, interval_s: float) -> None:
        super().__init__(interval_s)
        self._nvml, self._handle = nvml, handle

    def sample_watts(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0


class NvmlMeter(EnergyMeter):
    """GPU ``index``'s energy: NVML's energy counter, else polled power integrated over time.

    ``nvml`` replaces the ``pynvml`` module (tests pass a stand-in to exercise both paths).
    """

    def __init__(self, index: int = 0, interval_s: float = 0.02, nvml: ModuleType | None = None):
        self._nvml = nvml or load_nvml()
        if index >= self._nvml.nvmlDeviceGetCount():
            raise MeterError(f"no NVIDIA GPU with index {index}")
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
        self._polling: _PowerPolling | None = None
        self._start_mj = 0
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.source = f"nvml energy counter (GPU {index})"
        except self._nvml.NVMLError:
            self._polling = _PowerPolling(self._nvml, self._handle, interval_s)
            self.source = f"nvml power polling every {interval_s * 1000:.0f} ms (GPU {index})"
            self._polling.source = self.source

    @property
    def uses_energy_counter(self) -> bool:
        """Whether this GPU has NVML's energy counter (else power is polled)."""
        return self._polling is None

    def start(self) -> None:
        """Remember the counter's value, or start the polling thread."""
        if self._polling is not None:
            self._polling.start()
        else:
            self._start_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def stop(self) -> None:
        """Stop polling (nothing to do for the counter)."""
        if self._polling is not None:
            self._polling.stop()

    def read(self) -> Reading:
        """GPU energy since `start()`."""
        if self._polling is not None:
            return self._polling.read()
        mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        return Reading((mj - self._start_mj) / 1000.0, time.perf_counter(), "measured", self.source)
