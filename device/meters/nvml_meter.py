"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, imported when a meter is made).

The energy counter ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta
and newer, updated every 20–100 ms) is used where the GPU has it; otherwise the meter polls
``nvmlDeviceGetPowerUsage`` (mW; a 1 s average on Ampere and newer) and integrates it in a
thread. Both are ``measured``; ``source`` says which one was used. Every NVML error, and a
counter that goes backwards (a driver reload), is a one-line `MeterError`.

`nvml_gpu_for` maps torch's ``cuda:N`` to the NVML GPU behind it. Where this process's torch
has CUDA running already, it asks torch for that GPU's UUID, which NVML knows it by whatever
the numbering. Otherwise it goes through ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-``
UUIDs) without starting CUDA: there CUDA numbers the visible GPUs fastest first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML by PCI bus, so on a machine with GPUs of different
models set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so both agree.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypeVar

from ganglion.device.meters.base import EnergyMeter, MeterError, PollingMeter, Reading

T = TypeVar("T")


def _nvml_call(nvml: ModuleType, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``; an NVML error becomes a one-line `MeterError` naming ``what``."""
    try:
        return fn(*args)
    except nvml.NVMLError as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise MeterError(f"{what}: {text[:200]}") from e


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
        raise MeterError(
            f"no NVIDIA GPU: NVML did not initialise ({' '.join(str(e).split())})"
        ) from e
    if count == 0:
        raise MeterError("no NVIDIA GPU: NVML reports 0 devices")
    return pynvml


def nvml_gpus(nvml: ModuleType | None = None) -> list[dict[str, Any]]:
    """Name, memory and power limit of every GPU NVML sees; a figure NVML cannot give (Not
    Supported) is ``None``. `MeterError` when there is no GPU or none can be listed."""
    nvml = nvml or load_nvml()

    def figure(query: Callable[[], T]) -> T | None:
        try:
            return query()
        except nvml.NVMLError:
            return None

    out = []
    for i in range(_nvml_call(nvml, "NVML device count", nvml.nvmlDeviceGetCount)):
        h = _nvml_call(nvml, f"NVML GPU {i}", nvml.nvmlDeviceGetHandleByIndex, i)
        name = figure(lambda h=h: nvml.nvmlDeviceGetName(h))
        memory = figure(lambda h=h: int(nvml.nvmlDeviceGetMemoryInfo(h).total))
        limit = figure(lambda h=h: nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)
        out.append(
            {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name or "unknown"),
                "memory_bytes": memory,
                "power_limit_w": limit,
            }
        )
    return out


def nvml_gpu_for(device: str, env: Mapping[str, str] = os.environ) -> int | str:
    """The NVML GPU (an index, or a ``GPU-`` UUID) that torch's ``device`` (``cuda`` or
    ``cuda:N``) runs on, through ``CUDA_VISIBLE_DEVICES``; `MeterError` when it cannot say."""
    match = re.fullmatch(r"cuda(?::([0-9]{1,4}))?", device)
    if match is None:
        raise MeterError(f"backend device {device!r} is not a CUDA device (cuda or cuda:N)")
    n = int(match.group(1) or 0)
    uuid = _torch_gpu_uuid(n)
    if uuid is not None:
        return uuid
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    entries = [e.strip() for e in visible.split(",")]
    entry = entries[n] if n < len(entries) else ""
    if re.fullmatch(r"[0-9]{1,4}", entry):
        return int(entry)
    if entry.startswith("GPU-"):
        return entry
    raise MeterError(
        f"{device}: CUDA_VISIBLE_DEVICES={visible[:100]!r} names no GPU index or GPU- UUID for it "
        "(MIG instances are not metered)"
    )


def _torch_gpu_uuid(n: int) -> str | None:
    """``GPU-<uuid>`` of torch's ``cuda:n`` where torch is imported and has started CUDA in
    this process (nothing is imported or started here), else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized() or n >= torch.cuda.device_count():
            return None
        uuid = str(torch.cuda.get_device_properties(n).uuid)
    except Exception:  # noqa: BLE001 - a torch without CUDA or UUIDs: use the environment
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


class _PowerPolling(PollingMeter):
    def __init__(self, nvml: ModuleType, handle: Any, interval_s: float) -> None:
        super().__init__(interval_s)
        self._nvml, self._handle = nvml, handle

    def sample_watts(self) -> float:
        """GPU power now (NVML's mW), in watts; an NVML error is a `MeterError`."""
        mw = _nvml_call(self._nvml, self.source, self._nvml.nvmlDeviceGetPowerUsage, self._handle)
        return mw / 1000.0


class NvmlMeter(EnergyMeter):
    """GPU ``index``'s energy (an NVML index, or a ``GPU-`` UUID as `nvml_gpu_for` gives): NVML's
    energy counter, else polled power integrated over time.

    ``nvml`` replaces the ``pynvml`` module (tests pass a stand-in to exercise both paths).
    """

    def __init__(
        self, index: int | str = 0, interval_s: float = 0.02, nvml: ModuleType | None = None
    ) -> None:
        self._nvml = nvml or load_nvml()
        where = f"GPU {index}"
        if isinstance(index, str):
            get = self._nvml.nvmlDeviceGetHandleByUUID
            self._handle = _nvml_call(self._nvml, f"NVML {where}", get, index.encode())
        else:
            if index >= _nvml_call(self._nvml, "NVML device count", self._nvml.nvmlDeviceGetCount):
                raise MeterError(f"no NVIDIA GPU with index {index}")
            get = self._nvml.nvmlDeviceGetHandleByIndex
            self._handle = _nvml_call(self._nvml, f"NVML {where}", get, index)
        self._polling: _PowerPolling | None = None
        self._start_mj = 0
        try:
            name = self._nvml.nvmlDeviceGetName(self._handle)
        except self._nvml.NVMLError:
            name = "unknown"
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.source = f"nvml energy counter ({where})"
        except self._nvml.NVMLError:
            self._polling = _PowerPolling(self._nvml, self._handle, interval_s)
            self.source = f"nvml power polling every {interval_s * 1000:.0f} ms ({where})"
            self._polling.source = self.source

    @property
    def uses_energy_counter(self) -> bool:
        """Whether this GPU has NVML's energy counter (else power is polled)."""
        return self._polling is None

    def _counter_mj(self) -> int:
        get = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        return _nvml_call(self._nvml, self.source, get, self._handle)

    def start(self) -> None:
        """Remember the counter's value, or start the polling thread."""
        if self._polling is not None:
            self._polling.start()
        else:
            self._start_mj = self._counter_mj()

    def stop(self) -> None:
        """Stop polling (nothing to do for the counter)."""
        if self._polling is not None:
            self._polling.stop()

    def read(self) -> Reading:
        """GPU energy since `start()`; `MeterError` when NVML fails or the counter went back."""
        if self._polling is not None:
            return self._polling.read()
        mj = self._counter_mj()
        if mj < self._start_mj:
            raise MeterError(
                f"{self.source}: went back from {self._start_mj} to {mj} mJ (driver reloaded?)"
            )
        return Reading((mj - self._start_mj) / 1000.0, time.perf_counter(), "measured", self.source)
