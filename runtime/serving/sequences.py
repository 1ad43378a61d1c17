"""Per-sequence state of a stateful program, keyed by Triton's sequence-batching parameters.

A request carrying ``sequence_id`` (uint64 or string; 0 and "" mean none) advances that
sequence by one ``step``: ``sequence_start`` begins it from a fresh state (restarting an id
already live), ``sequence_end`` drops its state after the step. A sequence idle for longer
than ``idle_s`` is forgotten. Per model at most ``max_sequences`` are live and their states
hold at most ``max_bytes`` together: a start beyond either, or a step whose state grew past
``max_bytes``, is refused (the node answers RESOURCE_EXHAUSTED). A sequence takes at most
``context`` steps (a token model's context: one token a step; 0: no limit). A refused or
failed step changes nothing: the stored state is replaced only by ``commit``, once the step's
reply is built and only while its client still waits (``served_model``: a step that ends after
the request's deadline, or after the client left, is not committed). Thread-safe: steps run
on the model's worker thread while the event loop sweeps expired sequences.
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
MAX_SEQUENCE_ID_CHARS = 128  # Triton's limit on a string correlation id


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
    if isinstance(value, str) and len(value) > MAX_SEQUENCE_ID_CHARS:
        raise SequenceError(
            f"parameter sequence_id: a string of {len(value)} characters "
            f"(at most {MAX_SEQUENCE_ID_CHARS}, as Triton)"
        )
    flags = {}
    for key in ("sequence_start", "sequence_end"):
        flag = _param_value(parameters[key]) if key in parameters else False
        if not isinstance(flag, bool):
            raise SequenceError(f"parameter {key} must be a bool")
        flags[key] = flag
    if value in (0, ""):
        if flags["sequence_start"] or flags["sequence_end"]:
            raise SequenceError("sequence_start or sequence_end needs a non-zero sequence_id")
        return SequenceControl(None)
    return SequenceControl(value, flags["sequence_start"], flags["sequence_end"])


@dataclass
class _Live:
    """One live sequence: its state, when it was last used, its batch, steps taken, bytes."""

    state: State
    used: float
    batch: int | None
    steps: int
    nbytes: int


def state_bytes(state: State) -> int:
    """Bytes the arrays of ``state`` hold."""
    return sum(int(np.asarray(value).nbytes) for value in state.values())


class SequenceStore:
    """Live sequences of one model: id -> state, last use, batch, steps taken and bytes."""

    def __init__(
        self, max_sequences: int, idle_s: float, max_bytes: int = 1 << 62, context: int = 0
    ) -> None:
        self.max_sequences = max_sequences
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.context = context
        self._lock = threading.Lock()
        self._live: dict[SequenceId, _Live] = {}
        self._bytes = 0  # held by every live state together

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    @property
    def nbytes(self) -> int:
        """Bytes the live states hold together."""
        with self._lock:
            return self._bytes

    def begin(
        self,
        control: SequenceControl,
        fresh: Callable[[], State],
        fresh_bytes: int = 0,
        batch: int | None = None,
    ) -> State:
        """The state this request's step starts from: fresh on ``start`` (``fresh_bytes``
        large, checked before it is made), else the live one (which must have ``batch``
        samples and steps left, when given)."""
        assert control.id is not None
        self.expire()
        with self._lock:
            live = self._live.get(control.id)
            if control.start:
                if live is None and len(self._live) >= self.max_sequences:
                    raise SequenceLimit(
                        f"{self.max_sequences} sequences are live (the node's limit); "
                        "end one or wait for idle ones to expire"
                    )
                held = self._bytes - (live.nbytes if live is not None else 0)
                if held + fresh_bytes > self.max_bytes:
                    raise SequenceLimit(
                        f"a new sequence's state of {fresh_bytes} bytes does not fit: live "
                        f"sequences hold {held} of this model's {self.max_bytes} bytes "
                        "(--max-sequence-state-mb); end some, wait for idle ones to expire, "
                        "or send fewer samples"
                    )
            elif live is None:
                raise SequenceError(
                    f"sequence {control.id!r} is not live (never started, ended, or idle "
                    f"for more than {self.idle_s:g} s); send sequence_start first"
                )
            else:
                if batch is not None and live.batch is not None and batch != live.batch:
                    raise SequenceError(
                        f"sequence {control.id!r} was started with batch {live.batch}; "
                        f"this step sends batch {batch}"
                    )
                if self.context and live.steps >= self.context:
                    raise SequenceError(
                        f"sequence {control.id!r} has taken {live.steps} tokens, the model's "
                        "context; send sequence_start to begin it again"
                    )
                return live.state
        return fresh()

    def commit(self, control: SequenceControl, state: State, batch: int | None = None) -> None:
        """Keep the state after a step (copied: backends may reuse their buffers), or drop
        the sequence when the request ended it. SequenceLimit, keeping nothing, when the
        state grew past ``max_bytes`` together with the other live states."""
        key = control.id
        assert key is not None
        with self._lock:
            live = self._live.get(key)
            old = live.nbytes if live is not None else 0
            if control.end:
                if live is not None:
                    del self._live[key]
                    self._bytes -= old
                return
            nbytes = state_bytes(state)
            if self._bytes - old + nbytes > self.max_bytes:
                raise SequenceLimit(
                    f"sequence {key!r}'s state grew to {nbytes} bytes; live sequences "
                    f"would hold more than this model's {self.max_bytes} bytes "
                    "(--max-sequence-state-mb); the step was not applied"
                )
            kept = {name: np.array(value) for name, value in state.items()}
            steps = 1 if control.start or live is None else live.steps + 1
            self._live[key] = _Live(kept, time.monotonic(), batch, steps, nbytes)
            self._bytes += nbytes - old

    def expire(self) -> int:
        """Forget sequences idle for longer than ``idle_s``; how many were forgotten."""
        cutoff = time.monotonic() - self.idle_s
        with self._lock:
            old = [key for key, live in self._live.items() if live.used < cutoff]
            for key in old:
                self._bytes -= self._live.pop(key).nbytes
        return len(old)

    def clear(self) -> None:
        """Forget every sequence (the model is unloaded)."""
        with self._lock:
            self._live.clear()
            self._bytes = 0
