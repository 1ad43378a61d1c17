"""The one contract every backend implements, and ``load`` that opens a program on a backend.

Contract (who owns what):
- ``Backend.load(program, device, **options) -> Session``: a backend checks up front that it
  can run the program (package present, device present, ops supported) and raises
  ``BackendUnavailable`` with a one-line reason otherwise; it reads every file it needs while
  loading. Backends never convert.
- ``Session.run(inputs) -> outputs``: the whole input (all timesteps / the whole sequence).
- ``Session.step(inputs, state) -> (outputs, state)``: one timestep or token; ``run`` equals
  repeated ``step`` (how ``run``'s inputs split into steps is the program kind's rule).
- ``Session.prefill(inputs, state) -> (outputs, state)``: ``run`` continuing from ``state``
  and returning the state after it (what generation uses for a prompt); the default is
  repeated ``step``, backends with a parallel form override it.
- ``Session.init_state(batch)``; ``Session.close()`` releases the backend's resources.

Inputs, outputs and state are named numpy arrays whose names, dtypes and shapes the manifest
declares; the base class checks inputs and state (``runtime.tensors``) before a backend sees
them (a state with the names and shapes of the last one it accepted, such as the state the last
step returned, without walking it again; values are checked finite except the arrays the
session handed out itself: ``StateCheck``; a bare array of a shape and dtype accepted before
has only its values checked). A program with one input also takes
a bare array, and then returns a bare array when it has one output. A session may be shared by
threads: its calls take a lock and run one at a time (backends keep buffers between calls).
"""

from __future__ import annotations

import importlib
import numbers
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, BundleError, OptionError, ShapeError
from ganglion.models.manifest import Manifest
from ganglion.runtime.kinds import BATCH, TIME, ProgramKind
from ganglion.runtime.program import Program
from ganglion.runtime.tensors import (
    MAX_BATCH,
    MAX_STATE_BYTES,
    State,
    StateCheck,
    batched_state,
    check_batch_bound,
    check_bounds,
    check_finite,
    check_inputs,
    declared_state,
    tensor_bytes,
)

MAX_CHECKED_SHAPES = 256  # input shapes a session remembers having checked (inputs, outputs)
Inputs = Mapping[str, np.ndarray] | np.ndarray
Outputs = dict[str, np.ndarray] | np.ndarray

# name -> "module:Class", imported only when asked for (heavy and optional packages).
BACKENDS: dict[str, str] = {
    "torch": "ganglion.runtime.backends.torch_backend:TorchBackend",
    "onnxruntime": "ganglion.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "ganglion.runtime.backends.tensorrt_backend:TensorRTBackend",
    "lava": "ganglion.runtime.backends.lava_backend:LavaBackend",
}


class Session(ABC):
    """A loaded program on one backend and device (see the module docstring)."""

    backend: str = ""

    def __init__(self, program: Program, device: str) -> None:
        self.manifest: Manifest = program.manifest
        self.kind: ProgramKind = program.kind
        self.device = device
        self.allow_nonfinite = False  # set by ``load(..., allow_nonfinite=True)``
        self._closed = False
        self._lock = threading.RLock()  # one call at a time (module docstring)
        self._name = program.name
        self._state0 = program.initial_state()
        self._check_state = StateCheck(program.manifest.state)
        manifest, kind = self.manifest, self.kind
        self._run_shapes = {s.name: kind.run_shape(manifest, s) for s in manifest.inputs}
        self._outputs_checked: set[tuple[Any, ...]] = set()  # input shapes whose outputs fit
        self._step_shapes = {s.name: kind.step_shape(manifest, s) for s in manifest.inputs}
        # (run or step, shape, dtype) of bare C-contiguous arrays ``check_inputs`` accepted as
        # they are: the same again needs only its values checked (``_named``)
        self._accepted: set[tuple[bool, tuple[int, ...], np.dtype]] = set()

    # ---- what backends implement ---------------------------------------------------------------

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked inputs of the whole sequence -> outputs by name."""

    @abstractmethod
    def _step(
        self, inputs: dict[str, np.ndarray], state: State
    ) -> tuple[dict[str, np.ndarray], State]:
        """Checked inputs of one step and a checked state -> (outputs, new state)."""

    def _prefill(
        self, inputs: dict[str, np.ndarray], state: State
    ) -> tuple[dict[str, np.ndarray], State]:
        """``run`` from ``state`` returning the final state; default: repeated ``_step``."""
        outputs = []
        for step_inputs in self.kind.split_steps(self.manifest, inputs):
            out, state = self._step(step_inputs, state)
            outputs.append({k: np.array(v) for k, v in out.items()})
        return self.kind.collect(self.manifest, outputs), state

    # ---- the public contract -------------------------------------------------------------------

    def run(self, inputs: Inputs) -> Outputs:
        """Whole input -> outputs (shapes per the manifest's time semantics)."""
        with self._lock:
            self._check_open()
            named, bare = self._named(inputs, self._run_shapes)
            outputs = self._run(named)
            self._check_outputs_once(named, outputs, stepping=False)
            return self._unnamed(_unshared(outputs, named), bare)

    def step(self, inputs: Inputs, state: State) -> tuple[Outputs, State]:
        """One timestep or token with explicit state -> (outputs, new state)."""
        return self._from_state(inputs, state, self._step_shapes, self._step)

    def prefill(self, inputs: Inputs, state: State) -> tuple[Outputs, State]:
        """``run``'s inputs continuing from ``state`` -> (``run``'s outputs, final state)."""
        return self._from_state(inputs, state, self._run_shapes, self._prefill)

    def _from_state(
        self,
        inputs: Inputs,
        state: State,
        shapes: dict[str, list[int]],
        call: Callable[[dict[str, np.ndarray], State], tuple[dict[str, np.ndarray], State]],
    ) -> tuple[Outputs, State]:
        """``call`` (``_step`` or ``_prefill``) on checked inputs of ``shapes`` and a checked
        state, under the session's lock; the new state is recorded as handed out."""
        with self._lock:
            self._check_open()
            named, bare = self._named(inputs, shapes)
            self._check_state(state, self._batch(named, shapes), self.allow_nonfinite)
            self.kind.check_continuation(self.manifest, named, state)
            outputs, new_state = call(named, declared_state(self.manifest.state, state))
            self._check_outputs_once(named, outputs, stepping=call == self._step)
            self._check_state.issued(new_state)
            return self._unnamed(_unshared(outputs, named), bare), new_state

    def _check_outputs_once(
        self, named: dict[str, np.ndarray], outputs: dict[str, np.ndarray], stepping: bool
    ) -> None:
        """``check_outputs`` once per call form and input shapes (a program's outputs follow
        its inputs' shapes), so a call pays a set lookup, not the check."""
        key = (stepping, tuple((k, v.shape) for k, v in named.items()))
        if key in self._outputs_checked:
            return
        check_outputs(self, named, outputs, stepping)
        if len(self._outputs_checked) >= MAX_CHECKED_SHAPES:
            self._outputs_checked.clear()
        self._outputs_checked.add(key)

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        with self._lock:
            state = self._fresh_state(self._checked_batch(batch))
            self._check_state.issued(state)
            return state

    def _checked_batch(self, batch: object) -> int:
        """``batch`` as an int; ShapeError unless a positive integer whose fresh state fits
        ``MAX_BATCH`` samples and ``MAX_STATE_BYTES`` (checked before anything is allocated)."""
        self._check_open()
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ShapeError(f"batch must be a positive integer, got {batch!r}")
        batch = int(batch)
        size = batch * sum(
            tensor_bytes([max(d, 1) for d in s.shape], s.dtype) for s in self.manifest.state
        )
        if batch > MAX_BATCH or size > MAX_STATE_BYTES:
            raise ShapeError(
                f"a state for batch {batch} would take {size} bytes; at most {MAX_BATCH} "
                f"samples and {MAX_STATE_BYTES} bytes"
            )
        check_batch_bound(batch, self.manifest.max_batch)
        return batch

    def _fresh_state(self, batch: int) -> State:
        """The fresh state for a checked ``batch`` (what ``init_state`` hands out; a backend's
        own ``run`` takes it without changing which state the session last handed out)."""
        return batched_state(self.manifest.state, self._state0, batch)

    def close(self) -> None:
        """Release the backend's resources; the session then refuses every call (closing
        twice is harmless)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._check_state.issued({})  # keep no state alive
                self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook, not abstract
        """What a backend frees on ``close`` (default: nothing)."""

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"{self._name}: this session is closed")

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _named(
        self, inputs: Inputs, shapes: dict[str, list[int]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        specs = self.manifest.inputs
        bare = not isinstance(inputs, Mapping)
        if bare and len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise ShapeError(f"this program takes several named inputs ({names}): pass a dict")
        key = None
        if bare and type(inputs) is np.ndarray and inputs.flags.c_contiguous:
            key = (shapes is self._run_shapes, inputs.shape, inputs.dtype)
        if key is not None and key in self._accepted:  # its shape and dtype passed before
            if not self.allow_nonfinite:
                check_finite(specs[0].name, inputs)
            checked = {specs[0].name: inputs}
        else:
            named = {specs[0].name: inputs} if bare else inputs
            checked = check_inputs(specs, shapes, named, self.allow_nonfinite)  # type: ignore[arg-type]
            if key is not None and checked[specs[0].name] is inputs:
                if len(self._accepted) >= MAX_CHECKED_SHAPES:
                    self._accepted.clear()
                self._accepted.add(key)
        batch = self._batch(checked, shapes)
        check_bounds(checked, batch, self.manifest.max_batch, self.manifest.value_ranges)
        self.kind.check_values(self.manifest, checked)
        return checked, bare

    @staticmethod
    def _batch(inputs: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> int | None:
        for name, shape in shapes.items():
            if BATCH in shape:
                return int(inputs[name].shape[shape.index(BATCH)])
        return None

    def _unnamed(self, outputs: dict[str, np.ndarray], bare: bool) -> Outputs:
        if bare and len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs


def _unshared(
    outputs: dict[str, np.ndarray], inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``outputs``, each copied where it may share memory with an input (a program returning a
    view of its input, on torch): an output never changes when the caller edits an input."""
    return {
        name: value.copy()
        if any(np.may_share_memory(value, given) for given in inputs.values())
        else value
        for name, value in outputs.items()
    }


class Backend(ABC):
    """Where programs execute."""

    name: str

    @abstractmethod
    def load(self, program: Program, device: str, **options: Any) -> Session:
        """A Session for the program, or BackendUnavailable saying why not."""


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name (imports it lazily)."""
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()


def open_session(program: Program, backend: str, device: str, **options: Any) -> Session:
    """A session for an opened program (a composite kind opens its members' sessions)."""
    allow_nonfinite = options.pop("allow_nonfinite", False)
    if type(allow_nonfinite) is not bool:
        raise OptionError(f"allow_nonfinite must be True or False, got {allow_nonfinite!r}")
    if type(device).__module__ == "torch" and type(device).__name__ == "device":
        device = str(device)  # a torch.device names the same thing
    if not isinstance(device, str):
        raise OptionError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    session = program.kind.open_session(program, backend, device, options)
    if session is None:
        session = get_backend(backend).load(program, device, **options)
    session.allow_nonfinite = allow_nonfinite
    return session


def load(
    bundle: str | Path | Deployable | Program,
    backend: str = "torch",
    device: str = "cpu",
    **options: Any,
) -> Session:
    """Open a bundle (folder or .tar), an in-memory Deployable or a Program on a backend.

    ``allow_nonfinite=True`` lets NaN and infinity through to the program; other options
    are the backend's (see each backend's module).
    """
    from ganglion.runtime.bundle import open_bundle

    if not isinstance(bundle, str | os.PathLike | Deployable | Program):
        raise BundleError(
            f"load takes a bundle path, a Deployable or a Program, got {type(bundle).__name__}"
        )
    if isinstance(bundle, Program):
        return open_session(bundle, backend, device, **options)
    if isinstance(bundle, Deployable):
        return open_session(Program.in_memory(bundle), backend, device, **options)
    with open_bundle(bundle) as program:
        return open_session(program, backend, device, **options)


def output_shapes(
    session: Session, arrays: dict[str, np.ndarray], stepping: bool
) -> dict[str, list[int]] | None:
    """The shape of every output of ``run`` (or of ``step``) on ``arrays``, from their batch
    and time axes (-1: not known before the call); None when the inputs do not have the ranks
    the manifest declares (the Session's check then names what is wrong). Serving sizes its
    replies with it; ``check_outputs`` holds a program's outputs to it."""
    manifest, kind = session.manifest, session.kind
    batch = steps = None
    for spec in manifest.inputs:
        want = (kind.step_shape if stepping else kind.run_shape)(manifest, spec)
        array = arrays.get(spec.name)
        if array is None or array.ndim != len(want):
            return None
        if BATCH in want:
            batch = int(array.shape[want.index(BATCH)])
        if TIME in want:
            steps = int(array.shape[want.index(TIME)])
    if batch is None:
        return None
    if stepping:
        return {s.name: kind.step_output_shape(manifest, s, batch) for s in manifest.outputs}
    return {s.name: kind.run_output_shape(manifest, s, batch, steps) for s in manifest.outputs}


def check_outputs(
    session: Session, arrays: dict[str, np.ndarray], outputs: dict[str, np.ndarray], stepping: bool
) -> None:
    """BundleError when a program's ``outputs`` on ``arrays`` are not what its manifest
    declares (a name, a dtype, a size it fixes): a manifest edited apart from its program
    would otherwise describe, and serve, tensors the program does not give."""
    manifest = session.manifest
    shapes = output_shapes(session, arrays, stepping) or {}
    for spec in manifest.outputs:
        value = outputs.get(spec.name)
        if value is None:
            raise BundleError(
                f"{session._name}: the program gives no output {spec.name!r} (it gives "
                f"{', '.join(outputs)}), which its manifest declares"
            )
        want = shapes.get(spec.name)
        fits = want is None or (
            len(want) == value.ndim
            and all(w in (-1, g) for w, g in zip(want, value.shape, strict=True))
        )
        if value.dtype != np.dtype(spec.dtype) or not fits:
            raise BundleError(
                f"{session._name}: output {spec.name!r} is {list(value.shape)} {value.dtype}, "
                f"where its manifest declares {want} {spec.dtype}"
            )
