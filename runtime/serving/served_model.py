"""One model on a node: its Session, where its calls run, its live sequences and its latency
figures.

Threading rule (a Session runs one call at a time; here also in arrival order): a call runs on
the model's own single worker thread, queued in arrival order, so the event loop keeps
answering other calls meanwhile. A model whose warm-up call took under ``INLINE_BELOW_S``
(less than the thread hop costs) runs a small request on the event loop itself, but only
when nothing of that model is queued on its worker, so no two calls ever overlap and steps of
one sequence still apply in the order their requests arrived. Outputs become response bytes
right after the call, before the next call may reuse a backend's buffers.

Limits checked before a call runs: the reply's size, from the inputs' shapes and the manifest
(RESOURCE_EXHAUSTED when it would exceed the node's largest message, ``--max-message-mb``,
unless the inputs are malformed: an empty or oversized batch is INVALID_ARGUMENT, whatever
the reply would be), and for sequences the count, state bytes and context of
``SequenceStore``. A sequence's new state is kept only once its step's reply is built.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ganglion.device import EnergyMeter
from ganglion.models.errors import ShapeError
from ganglion.models.manifest import SequenceTime
from ganglion.runtime.kinds import BATCH, TIME
from ganglion.runtime.kinds.base import check_example_bytes
from ganglion.runtime.serving.kserve_tensors import (
    DATATYPE_OF,
    WireError,
    check_datatypes,
    fill_tensors,
)
from ganglion.runtime.serving.sequences import (
    SequenceControl,
    SequenceError,
    SequenceStore,
    state_bytes,
)
from ganglion.runtime.serving.settings import NodeSettings
from ganglion.runtime.serving.status import NodeError
from ganglion.runtime.session import Session, output_shapes
from ganglion.runtime.tensors import check_batch_bound, check_inputs, shape_text, tensor_bytes

LATENCY_WINDOW = 1024  # recent requests the percentiles cover
INLINE_BELOW_S = 0.5e-3  # warm-up p99 under which small requests run on the event loop
INLINE_MAX_BYTES = 64 << 10  # input bytes of a request small enough for that
WARMUP_UNTIMED = 2
WARMUP_MIN_RUNS, WARMUP_MAX_RUNS, WARMUP_BUDGET_S = 5, 50, 0.5
TENSOR_HEADER_BYTES = 256  # an output's name, datatype, shape and framing in the reply, at most
LARGEST_PROBE = (2, 3)  # batch and steps of the largest zeros warm-up runs (``_output_info``)


@dataclass(frozen=True)
class Measurement:
    """The warm-up run at load: latency of ``session.run`` at batch 1 and energy per call."""

    runs: int
    latency_p50_s: float
    latency_p99_s: float
    energy_per_inference_j: float
    energy_kind: str
    energy_source: str


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as ModelMetadata states it: KServe datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: list[int]


class ServedModel:
    """A loaded model: ``infer`` is called on the event loop; calls run as the module says."""

    def __init__(
        self,
        name: str,
        session: Session,
        backend: str,
        settings: NodeSettings,
    ) -> None:
        self.name = name
        self.session = session
        self.backend = backend
        self.kind = session.manifest.kind
        self.stateful = session.kind.has_steps and bool(session.manifest.state)
        time_ = session.manifest.time
        self.sequences = SequenceStore(
            settings.max_sequences,
            settings.sequence_idle_s,
            settings.max_sequence_state_bytes,
            time_.context if isinstance(time_, SequenceTime) else 0,
        )
        self.max_reply_bytes = settings.max_message_bytes
        # a fresh state's bytes: per sample, and for the tensors without a batch axis
        one, two = (state_bytes(session.init_state(b)) for b in (1, 2)) if self.stateful else (0, 0)
        self._state_bytes = (two - one, 2 * one - two)
        self.measurement: Measurement | None = None
        self.inputs = _input_info(session)
        self.outputs = [
            TensorInfo(s.name, DATATYPE_OF[s.dtype], [-1 for _ in s.shape])
            for s in session.manifest.outputs
        ]
        self.inferences = self.failures = self.queue_depth = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._stats_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ganglion-{name}")
        self._queued = 0  # calls handed to the worker and not yet answered (event loop only)
        self.inline = False  # set by ``warm_up``
        self.batch_first = False  # every input and output leads with the batch (``warm_up``)

    # ---- load time (called once, before the model takes requests) -----------------------------

    def warm_up(self, meter: EnergyMeter, bundle: Path) -> Measurement:
        """Learn the outputs' shapes, then run example inputs (batch 1) and measure latency
        and energy per call with ``meter`` (already started); blocking.

        A model whose example inputs, or the zeros its outputs are probed with, would take
        more than ``MAX_EXAMPLE_BYTES`` is refused before any of them is allocated
        (``_check_warm_up_bytes``): a one-line ShapeError naming ``bundle`` and the input.
        It is not served unmeasured instead: the probes are what give its outputs' metadata,
        and a request of one sample would take as much memory. So ``ganglion serve`` stops
        at start; a repository bundle is left unloaded, the reason in RepositoryIndex."""
        session = self.session
        _check_warm_up_bytes(session, str(bundle))
        self.outputs = _output_info(session)
        self.batch_first = _batch_first(session)
        example = session.kind.example_inputs(session.manifest, batch=1)
        for _ in range(WARMUP_UNTIMED):
            session.run(example)
        times: list[float] = []
        first = meter.read()
        while len(times) < WARMUP_MIN_RUNS or (
            len(times) < WARMUP_MAX_RUNS and sum(times) < WARMUP_BUDGET_S
        ):
            t0 = time.perf_counter()
            session.run(example)
            times.append(time.perf_counter() - t0)
        spent = meter.read() - first
        self.measurement = Measurement(
            runs=len(times),
            latency_p50_s=float(np.percentile(times, 50)),
            latency_p99_s=float(np.percentile(times, 99)),
            energy_per_inference_j=spent.joules / len(times),
            energy_kind=spent.kind,
            energy_source=spent.source,
        )
        self.inline = self.measurement.latency_p99_s < INLINE_BELOW_S
        return self.measurement

    # ---- requests -------------------------------------------------------------------------------

    async def infer(
        self,
        arrays: dict[str, np.ndarray],
        control: SequenceControl,
        wanted: Sequence[str],
        response: Any,
        remaining_s: float | None = None,
    ) -> None:
        """Run one request (see the module docstring for where) and fill ``response``'s
        outputs; raises ShapeError / WireError / SequenceError (bad request) or the
        backend's error. ``remaining_s``: the client's time left (None: no deadline); a
        sequence step done after it, or after the client stopped waiting, keeps no state."""
        with self._stats_lock:
            self.queue_depth += 1
        live = _Waiting(None if remaining_s is None else time.monotonic() + remaining_s)
        try:
            self.check(arrays, control, wanted, response.ByteSize())
            small = sum(a.nbytes for a in arrays.values()) <= INLINE_MAX_BYTES
            if self.inline and small and self._queued == 0:
                self._execute(arrays, control, wanted, response, live)
                return
            await self._queue(arrays, control, wanted, response, live)
        except BaseException:
            with self._stats_lock:
                self.failures += 1
            raise
        finally:
            with self._stats_lock:
                self.queue_depth -= 1

    async def _queue(
        self,
        arrays: dict[str, np.ndarray],
        control: SequenceControl,
        wanted: Sequence[str],
        response: Any,
        live: _Waiting,
    ) -> None:
        """Run on the worker thread. ``_queued`` drops when the call has really finished
        (or was cancelled before it started), not when a cancelled request stops waiting."""
        loop = asyncio.get_running_loop()
        self._queued += 1
        call = self._executor.submit(self._execute, arrays, control, wanted, response, live)
        call.add_done_callback(lambda _: _soon(loop, self._release))
        try:
            await asyncio.wrap_future(call)
        except asyncio.CancelledError:  # the client left or its deadline passed
            live.gone.set()
            raise

    def _release(self) -> None:
        self._queued -= 1

    def check_datatypes(self, tensors: Any) -> None:
        """Each request tensor's datatype against the manifest's (``check_datatypes``)."""
        check_datatypes(self.name, self.session.manifest.inputs, tensors)

    def check(
        self,
        arrays: dict[str, np.ndarray],
        control: SequenceControl,
        wanted: Sequence[str],
        header_bytes: int = 0,
    ) -> None:
        """What can be refused before queueing: sequence use, output names, and a reply
        (``header_bytes`` of it besides the outputs) larger than the node may send, unless the
        session would refuse the inputs by their shapes anyway (``_check_input_shapes``: an
        empty or oversized batch is INVALID_ARGUMENT, whatever its reply would be; checked
        only then, as the call checks every request's inputs itself)."""
        stepping = control.id is not None
        if stepping and not self.stateful:
            raise SequenceError(f"model {self.name!r} is stateless; it takes no sequence_id")
        names = [t.name for t in self.outputs]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise WireError(
                f"unknown output {unknown[0]!r}; model {self.name!r} has outputs "
                f"{', '.join(map(repr, names))}"
            )
        shapes = output_shapes(self.session, arrays, stepping=stepping)
        if shapes is not None:
            try:
                self._check_reply(shapes, wanted, header_bytes)
            except NodeError:
                _check_input_shapes(self.session, arrays, stepping)
                raise

    def _check_reply(
        self, shapes: dict[str, list[int]], wanted: Sequence[str], header_bytes: int
    ) -> None:
        """RESOURCE_EXHAUSTED, naming the largest output, when the outputs asked for (each
        time it is asked for; those whose shapes are known before the call) would make a reply
        above ``max_reply_bytes``."""
        declared = {s.name: s for s in self.session.manifest.outputs}
        specs = [declared[n] for n in wanted if n in declared] if wanted else [*declared.values()]
        sizes = {
            s.name: tensor_bytes(shapes[s.name], s.dtype) for s in specs if -1 not in shapes[s.name]
        }
        total = header_bytes + TENSOR_HEADER_BYTES * len(specs)
        total += sum(sizes[s.name] for s in specs if s.name in sizes)
        if total <= self.max_reply_bytes or not sizes:
            return
        name = max(sizes, key=lambda n: sizes[n])
        spec = declared[name]
        raise NodeError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"output {name!r} would be {shapes[name]} {DATATYPE_OF[spec.dtype]} "
            f"({sizes[name]} bytes; the reply {total}), over the node's largest message of "
            f"{self.max_reply_bytes} bytes (--max-message-mb); send fewer samples or steps",
        )

    def _execute(
        self,
        arrays: dict[str, np.ndarray],
        control: SequenceControl,
        wanted: Sequence[str],
        response: Any,
        live: _Waiting,
    ) -> None:
        t0 = time.perf_counter()
        if control.id is None:
            outputs = self.session.run(arrays)
        else:
            batch = _batch_size(self.session, arrays)
            per_sample, shared = self._state_bytes
            state = self.sequences.begin(
                control,
                lambda: self.session.init_state(batch),
                per_sample * batch + shared,
                batch,
            )
            outputs, state = self.session.step(arrays, state)
        assert isinstance(outputs, dict)
        fill_tensors(response.outputs, response.raw_output_contents, outputs, wanted)
        if control.id is not None:
            if not live.waiting():
                raise NodeError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"sequence {control.id!r}: the step ended after the request's deadline or "
                    "the client left; its state was not kept (send the step again)",
                )
            self.sequences.commit(control, state, batch)  # only once the reply is built
        elapsed = time.perf_counter() - t0
        with self._stats_lock:
            self.inferences += 1
            self._latencies.append(elapsed)

    # ---- figures and lifetime -------------------------------------------------------------------

    def latency_percentiles(self) -> tuple[float, float]:
        """p50 and p99 of recent requests' execution time, seconds (NaN before any)."""
        with self._stats_lock:
            recent = list(self._latencies)
        if not recent:
            return math.nan, math.nan
        p50, p99 = np.percentile(recent, [50, 99])
        return float(p50), float(p99)

    def close(self) -> None:
        """Stop taking work; the session closes once requests already queued are done."""
        self.sequences.clear()
        self._executor.submit(self.session.close)
        self._executor.shutdown(wait=False)


@dataclass
class _Waiting:
    """Whether a request's client still waits for it: its deadline (monotonic; None: none)
    has not passed and it has not gone (``gone``, set when the handler is cancelled)."""

    deadline: float | None
    gone: threading.Event = field(default_factory=threading.Event)

    def waiting(self) -> bool:
        """True while the reply can still reach the client."""
        late = self.deadline is not None and time.monotonic() >= self.deadline
        return not (late or self.gone.is_set())


def _soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """``callback`` on ``loop``'s thread (nothing once the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def _input_info(session: Session) -> list[TensorInfo]:
    manifest, kind = session.manifest, session.kind
    return [
        TensorInfo(
            s.name,
            DATATYPE_OF[s.dtype],
            [-1 if d in (BATCH, TIME) else d for d in kind.run_shape(manifest, s)],
        )
        for s in manifest.inputs
    ]


def _check_input_shapes(session: Session, arrays: dict[str, np.ndarray], stepping: bool) -> None:
    """ShapeError for inputs the session would refuse by their names, dtypes and shapes
    (``check_inputs``: an empty batch or time axis, more than ``MAX_BATCH`` samples) or
    batch (the manifest's ``max_batch``), a step's inputs of another rank in a step's words
    (``_batch_size``); their values are left to the call's own check."""
    if stepping:
        _batch_size(session, arrays)
    manifest, kind = session.manifest, session.kind
    shape_of = kind.step_shape if stepping else kind.run_shape
    expected = {s.name: shape_of(manifest, s) for s in manifest.inputs}
    checked = check_inputs(manifest.inputs, expected, arrays, allow_nonfinite=True)
    batched = [checked[n].shape[w.index(BATCH)] for n, w in expected.items() if BATCH in w]
    check_batch_bound(int(batched[0]) if batched else None, manifest.max_batch)


def _check_warm_up_bytes(session: Session, bundle: str) -> None:
    """``check_example_bytes`` (naming ``bundle``) on what ``warm_up`` allocates, before any
    of it: the example inputs of batch 1, then the largest zeros it probes the outputs with."""
    check_example_bytes(session.kind.example_shapes(session.manifest, 1), 1, bundle)
    check_example_bytes(_probe_shapes(session, *LARGEST_PROBE), LARGEST_PROBE[0], bundle)


def _probe_shapes(session: Session, batch: int, steps: int) -> dict[str, list[int]]:
    """The shapes of ``run``'s inputs for ``batch`` samples, ``steps`` on every other
    variable axis (computed: nothing is allocated)."""
    manifest, kind = session.manifest, session.kind
    out = {}
    for spec in manifest.inputs:
        seen_batch = False
        dims = []
        for d in kind.run_shape(manifest, spec):
            if d == BATCH and not seen_batch:
                dims.append(batch)
                seen_batch = True
            else:
                dims.append(steps if d in (TIME, BATCH) else d)
        out[spec.name] = dims
    return out


def _probe_inputs(session: Session, batch: int, steps: int) -> dict[str, np.ndarray]:
    """Zeros shaped as ``_probe_shapes`` says (zeros are valid for every kind: token id 0)."""
    shapes = _probe_shapes(session, batch, steps)
    return {s.name: np.zeros(shapes[s.name], dtype=s.dtype) for s in session.manifest.inputs}


def _output_info(session: Session) -> list[TensorInfo]:
    """Outputs as ``run`` returns them: two calls on zeros of different batch and length
    show which axes vary (-1) and which are fixed."""
    small = session.run(_probe_inputs(session, 1, 1))
    large = session.run(_probe_inputs(session, *LARGEST_PROBE))
    assert isinstance(small, dict) and isinstance(large, dict)
    return [
        TensorInfo(name, DATATYPE_OF[a.dtype.name], _varying(a.shape, large[name].shape))
        for name, a in small.items()
    ]


def _batch_first(session: Session) -> bool:
    """Whether every input's first axis is the batch and every output's follows it (checked
    on zeros of batch 1 and 2 at one step): Triton's ``max_batch_size`` > 0 form."""
    manifest, kind = session.manifest, session.kind
    if not all(kind.run_shape(manifest, s)[:1] == [BATCH] for s in manifest.inputs):
        return False
    one = session.run(_probe_inputs(session, 1, 1))
    two = session.run(_probe_inputs(session, 2, 1))
    assert isinstance(one, dict) and isinstance(two, dict)
    return all(a.shape[:1] == (1,) and two[n].shape[:1] == (2,) for n, a in one.items())


def _varying(small: tuple[int, ...], large: tuple[int, ...]) -> list[int]:
    """An output's shape for metadata: axes that grew with batch or time become -1."""
    if len(small) != len(large):
        return [-1] * len(small)
    return [a if a == b else -1 for a, b in zip(small, large, strict=True)]


def _batch_size(session: Session, arrays: dict[str, np.ndarray]) -> int:
    """The batch of a step's inputs (ShapeError naming what a step takes otherwise)."""
    manifest, kind = session.manifest, session.kind
    for spec in manifest.inputs:
        shape = kind.step_shape(manifest, spec)
        array = arrays.get(spec.name)
        if BATCH in shape and array is not None and array.ndim == len(shape):
            return int(array.shape[shape.index(BATCH)])
    got = ", ".join(f"{name} {list(a.shape)}" for name, a in arrays.items())
    raise ShapeError(
        f"a sequence step takes {_step_text(session)} (one step per request), got {got}"
    )


def _step_text(session: Session) -> str:
    manifest, kind = session.manifest, session.kind
    shapes = [f"{s.name} {shape_text(kind.step_shape(manifest, s))}" for s in manifest.inputs]
    return ", ".join(shapes)
