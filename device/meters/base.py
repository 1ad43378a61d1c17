"""The `EnergyMeter` contract and the polling integrator the power-only meters share.

A meter counts joules from `start()`; `read()` returns the energy so far, a monotonic timestamp
(``time.perf_counter`` seconds) and whether the figure is ``measured`` (a sensor or counter) or
``simulated`` (a model's power over the wall clock). Energy between two readings is the
difference of their ``joules``. Meters are context managers (start on enter, stop on exit).
Threading: `read()` may be called from any thread; `start`/`stop` from the owning thread.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from ganglion.device.sysroot import with_timeout

Kind = Literal["measured", "simulated"]


class MeterError(RuntimeError):
    """A meter cannot read its sensor (missing file, no permission, no device, a reading that is
    not a finite non-negative number); the message is one line naming the file."""


T = TypeVar("T")


def timed_read(fn: Callable[[], T], what: str) -> T:
    """Run the file reads in ``fn`` with the sysroot timeout; a timeout becomes `MeterError`."""
    try:
        return with_timeout(fn, what)
    except OSError as e:  # ReadTimeout; fn's own errors arrive as MeterError already
        raise MeterError(str(e)) from e


def check_watts(watts: float, what: str) -> float:
    """``watts`` if it is a finite non-negative number, else `MeterError` naming ``what``."""
    if not (math.isfinite(watts) and watts >= 0):
        raise MeterError(f"{what}: power {watts!r} W is not a finite non-negative number")
    return watts


@dataclass(frozen=True)
class Reading:
    """Energy counted since the meter started, at ``timestamp`` (perf_counter seconds)."""

    joules: float
    timestamp: float
    kind: Kind
    source: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.joules):
            raise MeterError(f"{self.source}: energy {self.joules!r} J is not a finite number")

    def __sub__(self, earlier: Reading) -> Reading:
        """The energy between ``earlier`` and this reading, stamped with this reading's time."""
        return Reading(self.joules - earlier.joules, self.timestamp, self.kind, self.source)


class EnergyMeter(ABC):
    """Counts energy from `start()`; subclasses say what they measure in ``source``."""

    kind: Kind = "measured"
    source: str = ""

    @abstractmethod
    def start(self) -> None:
        """Begin counting (energy 0 now)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop counting and release the sensor; later reads are not meaningful."""

    @abstractmethod
    def read(self) -> Reading:
        """Energy since `start()`, now."""

    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PeriodicThread:
    """Calls ``tick`` every ``interval_s`` seconds in a daemon thread until stopped.

    A `MeterError` raised by ``tick`` ends the thread and is kept in ``error`` (no traceback is
    printed); the owner re-raises it on its next `read()`.
    """

    def __init__(self, tick: Callable[[], object], interval_s: float, name: str) -> None:
        self.tick, self.interval_s, self.name = tick, interval_s, name
        self.error: MeterError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except MeterError as e:
                self.error = e
                return

    def check(self) -> None:
        """Re-raise the error that stopped the thread, if any."""
        if self.error is not None:
            raise self.error

    def start(self) -> None:
        """Start ticking (stops a running thread first)."""
        self.stop()
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class PollingMeter(EnergyMeter):
    """Integrates sampled power (W) over time in a background thread (trapezoid rule).

    Subclasses implement `sample_watts`. Each `read()` also takes a fresh sample, so the
    integral reaches the moment of the reading.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._poller = PeriodicThread(self._accumulate, interval_s, type(self).__name__)
        self._joules = 0.0
        self._last: tuple[float, float] | None = None
        self.samples = 0

    @abstractmethod
    def sample_watts(self) -> float:
        """Instantaneous (or sensor-averaged) power in watts."""

    def _accumulate(self) -> float:
        with self._lock:
            watts = check_watts(self.sample_watts(), self.source or type(self).__name__)
            now = time.perf_counter()
            if self._last is not None:
                t0, w0 = self._last
                self._joules += 0.5 * (w0 + watts) * (now - t0)
            self._last = (now, watts)
            self.samples += 1
            return now

    def start(self) -> None:
        """Reset the integral, take a first sample and start the polling thread."""
        self.stop()
        self._joules, self._last, self.samples = 0.0, None, 0
        self._accumulate()
        self._poller.start()

    def stop(self) -> None:
        """Stop the polling thread."""
        self._poller.stop()

    def read(self) -> Reading:
        """Energy integrated since `start()`, including a sample taken now."""
        if self._last is None:
            raise MeterError(f"{type(self).__name__}.read() called before start()")
        self._poller.check()
        now = self._accumulate()
        with self._lock:
            return Reading(self._joules, now, self.kind, self.source)
