"""`SimulatedMeter`: a device model's power integrated over the measured wall-clock run.

Use it where no sensor exists (a profile of another device, Loihi 2 without hardware, a CPU
without readable RAPL). Readings say ``simulated``; the power comes from the model, the time
from the real run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ganglion.device.meters.base import EnergyMeter, MeterError, Reading


class SimulatedMeter(EnergyMeter):
    """Energy = ∫ P(t) dt over wall-clock time since `start()`.

    ``power_w`` is a constant (watts) or a callable returning the model's current power; with a
    callable, the integral is a step function updated on every `read()` (call `read()` when the
    modelled power changes, e.g. between idle and busy phases).
    """

    kind = "simulated"

    def __init__(self, power_w: float | Callable[[], float], source: str = "model") -> None:
        self._power = power_w if callable(power_w) else (lambda: float(power_w))
        self.source = f"simulated: {source}"
        self._joules = 0.0
        self._last: tuple[float, float] | None = None

    def start(self) -> None:
        """Start integrating from now."""
        self._joules = 0.0
        self._last = (time.perf_counter(), self._power())

    def stop(self) -> None:
        """Nothing to release; the model needs no sensor."""

    def read(self) -> Reading:
        """Modelled energy since `start()`."""
        if self._last is None:
            raise MeterError("SimulatedMeter.read() called before start()")
        now = time.perf_counter()
        t0, watts = self._last
        self._joules += watts * (now - t0)
        self._last = (now, self._power())
        return Reading(self._joules, now, "simulated", self.source)
