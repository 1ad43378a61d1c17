"""Per-sequence state of a stateful program, keyed by Triton's sequence-batching parameters.

A request carrying ``sequence_id`` (uint64 or string; 0 and "" mean none) advances that
sequence by one ``step``: ``sequence_start`` begins it from a fresh state (restarting an id
already live), ``sequence_end`` drops its state after the step. A sequence idle for longer
than ``idle_s`` is forgotten; at most ``max_sequences`` are live per model, and starting one
more is refused (the node answers RESOURCE_EXHAUSTED). Thread-safe: steps run on the model's
worker thread while the event loop sweeps expired sequences.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganglion.models.errors import GanglionError

State = dict[str, np.ndarray]
SequenceId = int | str


class SequenceError(GanglionError):
    """A sequence request that cannot proceed (unknown id without start, bad parameters)."""


class SequenceLimit(GanglionError):
    """No room for another live sequence."""


@dataclass(frozen=True)
class SequenceControl:
    """The sequence parameters of one request (``id`` None: no sequence, ``run`` it)."""

    id: SequenceId | None
    start: bool = False
    end: bool = False


def _param_value(param: Any) -> object:
    which = param.WhichOneof("parameter_choice")
    return None if which is None else getattr(param, which)


def sequence_control(parameters: Mapping[str, Any]) -> SequenceControl:
    """Read ``sequence_id``/``sequence_start``/``sequence_end`` from request parameters."""
    if "sequence_id" not in parameters:
        return SequenceControl(None)
    value = _param_value(parameters["sequence_id"])
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SequenceError("parameter sequence_id must be an unsigned integer or a string")
    if isinstance(value, int) and value < 0:
        raise SequenceError(f"parameter sequence_id must not be negative, got {value}")
    flags = {}
    for key in ("sequence_start", "sequence_end"):
        flag = _param_value(parameters[key]) if key in parameters else False
        if not isinstance(flag, bool):
            raise SequenceError(f"parameter {key} must be a bool")
        flags[key] = flag
    if value in (0, ""):
        return SequenceControl(None)
    return SequenceControl(value, flags["sequence_start"], flags["sequence_end"])


class SequenceStore:
    """Live sequences of one model: id -> (state, last use)."""

    def __init__(self, max_sequences: int, idle_s: float) -> None:
        self.max_sequences = max_sequences
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._live: dict[SequenceId, tuple[State, float]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def begin(self, control: SequenceControl, fresh: Callable[[], State]) -> State:
        """The state this request's step starts from: fresh on ``start``, else the live one."""
        assert control.id is not None
        self.expire()
        with self._lock:
            if control.start:
                if control.id not in self._live and len(self._live) >= self.max_sequences:
                    raise SequenceLimit(
                        f"{self.max_sequences} sequences are live (the node's limit); "
                        "end one or wait for idle ones to expire"
                    )
            elif control.id not in self._live:
                raise SequenceError(
                    f"sequence {control.id!r} is not live (never started, ended, or idle "
                    f"for more than {self.idle_s:g} s); send sequence_start first"
                )
            else:
                return self._live[control.id][0]
        return fresh()

    def commit(self, control: SequenceControl, state: State) -> None:
        """Keep the state after a step (copied: backends may reuse their buffers), or drop
        the sequence when the request ended it."""
        with self._lock:
            if control.end:
                self._live.pop(control.id, None)
            else:
                kept = {name: np.array(value) for name, value in state.items()}
                self._live[control.id] = (kept, time.monotonic())

    def expire(self) -> int:
        """Forget sequences idle for longer than ``idle_s``; how many were forgotten."""
        cutoff = time.monotonic() - self.idle_s
        with self._lock:
            old = [key for key, (_, used) in self._live.items() if used < cutoff]
            for key in old:
                del self._live[key]
        return len(old)

    def clear(self) -> None:
        """Forget every sequence (the model is unloaded)."""
        with self._lock:
            self._live.clear()
