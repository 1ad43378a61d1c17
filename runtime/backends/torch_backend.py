"""The reference backend: runs the program's torch module (CPU, or CUDA with our kernels).

On the CPU a kind may offer a leaner step and run on arrays (``ProgramKind.cpu_step`` and
``cpu_run``: spiking chains with plain neurons), equal bit for bit to the module's; a call they
cannot take goes the usual way.

State ownership: the arrays ``step`` returns as the new state are numpy views of the tensors
the module produced (on the CPU; copies from a GPU), and the session remembers those tensors.
Passed back as the next step's state (the same array objects), they go to the module as they
are, with no conversion or copy; any other arrays are converted. A step never writes into the
arrays an earlier step returned, so they stay valid; an in-place edit of one is seen by the
next step that is given it.

On glibc, opening a CPU session raises malloc's mmap and trim thresholds once per process
(``mallopt``): the large tensors a ``run`` frees are then reused by the next one instead of
being unmapped and faulted in again, which otherwise costs large batches up to half their time.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import platform
from typing import Any

import numpy as np
import torch

from ganglion.models.errors import (
    BackendFailure,
    BackendUnavailable,
    OptionError,
    first_line,
)
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

Arrays = dict[str, np.ndarray]
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest; larger blocks are still mapped on their own
TRIM_THRESHOLD = 256 * 2**20  # freed memory kept for reuse before it goes back to the OS


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc malloc's mmap and trim thresholds (module docstring); False elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


class TorchSession(Session):
    """Session over a program's torch module; numpy in, numpy out."""

    backend = "torch"

    def __init__(self, program: Program, device: str) -> None:
        super().__init__(program, device)
        self.deployable = program.deployable()
        # A session on another device works on its own copy: the Deployable (which other
        # sessions may share) stays where it is.
        module = self.deployable.module
        module = module if device == "cpu" else copy.deepcopy(module)
        self.module = module.to(device).eval()
        self._on_cpu = device == "cpu"
        self._state_arrays: State = {}  # the state ``step`` returned last, as arrays ...
        self._state_tensors: dict[str, torch.Tensor] = {}  # ... and as the module's tensors
        # a state given as lists or in other dtypes is cast to the declared ones
        self._state_dtypes = {s.name: np.dtype(s.dtype) for s in program.manifest.state}
        # the kind's leaner step and run on arrays (``ProgramKind.cpu_step``, ``cpu_run``)
        self._cpu_step = self._cpu_run = None
        if self._on_cpu:
            keep_freed_memory()
            self._cpu_step = self.kind.cpu_step(self.module)
            self._cpu_run = self.kind.cpu_run(self.module)

    def _tensors(
        self, arrays: Arrays, dtypes: dict[str, np.dtype] | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensors of ``arrays`` (each cast to ``dtypes[name]`` where given), on the device."""
        dtypes = dtypes or {}
        tensors = {k: torch.from_numpy(np.asarray(v, dtypes.get(k))) for k, v in arrays.items()}
        return tensors if self._on_cpu else {k: v.to(self.device) for k, v in tensors.items()}

    def _arrays(self, tensors: dict[str, torch.Tensor]) -> Arrays:
        if self._on_cpu:
            return {k: v.numpy() for k, v in tensors.items()}
        return {k: v.detach().cpu().numpy() for k, v in tensors.items()}

    def run(self, inputs: Any, record: bool = False) -> Any:
        """Whole input -> outputs; ``record`` keeps per-layer activity (see ``activity``)."""
        with self._lock:  # ``_record`` belongs to this call
            self._record = record
            try:
                return super().run(inputs)
            finally:
                self._record = False

    def _run(self, inputs: Arrays) -> Arrays:
        with torch.inference_mode():
            if self._cpu_run is not None and not self._record:
                done = self._cpu_run(inputs)
                if done is not None:
                    return done
            try:
                out = self.kind.torch_run(self.module, self._tensors(inputs), record=self._record)
            except (IndexError, RuntimeError) as exc:  # e.g. an embedding index out of range
                first = first_line(exc)
                message = f"{self._name}: torch failed on these inputs: {first}"
                raise BackendFailure(message) from exc
        return self._arrays(out)

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        with torch.inference_mode():
            if self._cpu_step is not None:
                done = self._cpu_step(inputs, state)
                if done is not None:
                    self._state_arrays = {}  # its state is arrays only: convert it when given
                    return done
            out, new = self.kind.torch_step(
                self.module, self._tensors(inputs), self._state_in(state)
            )
        arrays = self._arrays(new)
        self._state_arrays, self._state_tensors = arrays, new
        # the caller gets a dict of its own: an entry it replaces is not replaced in ours too
        return self._arrays(out), dict(arrays)

    def _state_in(self, state: State) -> dict[str, torch.Tensor]:
        """The module's tensors for ``state``: those of the last step when ``state`` holds the
        arrays it returned (see the module docstring), else converted."""
        own = self._state_arrays
        if len(state) == len(own) and all(own.get(k) is v for k, v in state.items()):
            return self._state_tensors
        return self._tensors(state, self._state_dtypes)

    def _prefill(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        with torch.inference_mode():
            result = self.kind.torch_prefill(
                self.module, self._tensors(inputs), self._tensors(state, self._state_dtypes)
            )
        if result is None:
            return super()._prefill(inputs, state)
        return self._arrays(result[0]), self._arrays(result[1])

    def _fresh_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples, from the module."""
        with torch.inference_mode():
            return self._arrays(self.kind.torch_init_state(self.module, batch))

    def activity(self) -> dict[str, np.ndarray]:
        """Spikes per neuron of each layer in the last ``run(record=True)`` (spiking programs)."""
        return self.kind.activity(self.module)

    _record = False


class TorchBackend(Backend):
    """PyTorch reference backend."""

    name = "torch"

    def load(self, program: Program, device: str, **options: Any) -> Session:
        """A TorchSession on ``device`` ("cpu" or "cuda[:N]")."""
        if options:
            raise OptionError(f"torch backend takes no options, got {sorted(options)}")
        kind, _, index = device.partition(":")
        digits = index.isascii() and index.isdigit()  # "²" is a digit int() cannot read
        if device != "cpu" and not (kind == "cuda" and (not index or digits)):
            raise OptionError(f"torch backend: unknown device {device!r} (use cpu, cuda or cuda:N)")
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"torch backend: device {device!r} asked for but no CUDA GPU is visible"
            )
        if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"torch backend: device {device!r} asked for but only "
                f"{torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
        missing = program.kind.torch_face_missing(program.manifest)
        if missing is not None:
            raise BackendUnavailable(f"torch backend: {missing}")
        return TorchSession(program, device)
