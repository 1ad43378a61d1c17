"""The reference backend: runs the program's torch module (CPU, or CUDA with our kernels)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

Arrays = dict[str, np.ndarray]


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

    def _tensors(self, arrays: Arrays) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in arrays.items()}

    @staticmethod
    def _arrays(tensors: dict[str, torch.Tensor]) -> Arrays:
        return {k: v.detach().cpu().numpy() for k, v in tensors.items()}

    def run(self, inputs: Any, record: bool = False) -> Any:
        """Whole input -> outputs; ``record`` keeps per-layer activity (see ``activity``)."""
        self._record = record
        try:
            return super().run(inputs)
        finally:
            self._record = False

    def _run(self, inputs: Arrays) -> Arrays:
        with torch.inference_mode():
            out = self.kind.torch_run(self.module, self._tensors(inputs), record=self._record)
        return self._arrays(out)

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        with torch.inference_mode():
            out, new = self.kind.torch_step(
                self.module, self._tensors(inputs), self._tensors(state)
            )
        return self._arrays(out), self._arrays(new)

    def _prefill(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        with torch.inference_mode():
            result = self.kind.torch_prefill(
                self.module, self._tensors(inputs), self._tensors(state)
            )
        if result is None:
            return super()._prefill(inputs, state)
        return self._arrays(result[0]), self._arrays(result[1])

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples, from the module."""
        super().init_state(batch)  # checks ``batch``
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
            raise BackendUnavailable(f"torch backend takes no options, got {sorted(options)}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                "torch backend: device 'cuda' asked for but no CUDA GPU is visible"
            )
        if not (device == "cpu" or device.startswith("cuda")):
            raise BackendUnavailable(f"torch backend: unknown device {device!r} (use cpu or cuda)")
        missing = program.kind.torch_face_missing(program.manifest)
        if missing is not None:
            raise BackendUnavailable(f"torch backend: {missing}")
        return TorchSession(program, device)
