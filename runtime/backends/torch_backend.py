"""The reference backend: runs the program's torch module (CPU, or CUDA with our kernels)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.session import Backend, Session, State, check_float_input


class TorchSession(Session):
    """Session over a Deployable's module; numpy in, numpy out."""

    backend = "torch"

    def __init__(self, deployable: Deployable, device: str) -> None:
        self.deployable = deployable
        self.manifest = deployable.manifest
        self.device = device
        # A session on another device works on its own copy: the Deployable (which other
        # sessions may share) stays where it is.
        module = deployable.module if device == "cpu" else copy.deepcopy(deployable.module)
        self.module = module.to(device).eval()

    def _tensor(self, x: np.ndarray, what: str = "input") -> torch.Tensor:
        return torch.from_numpy(check_float_input(x, what)).to(self.device)

    def run(self, x: np.ndarray, record: bool = False) -> np.ndarray:
        """Whole input -> output; ``record`` keeps per-layer activity where the program has it."""
        with torch.no_grad():
            kwargs = {"record": True} if record else {}
            return self.module.run(self._tensor(x), **kwargs).cpu().numpy()

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep with explicit state."""
        with torch.no_grad():
            torch_state = {
                k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in state.items()
            }
            out, new_state = self.module.step(self._tensor(x_t), torch_state)
        return out.cpu().numpy(), {k: v.cpu().numpy() for k, v in new_state.items()}

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        return {k: v.cpu().numpy() for k, v in self.module.init_state(batch).items()}

    def activity(self) -> dict[str, np.ndarray]:
        """Spikes per neuron of each layer in the last ``run(record=True)`` (spiking programs)."""
        return {k: v.cpu().numpy() for k, v in getattr(self.module, "activity", {}).items()}


class TorchBackend(Backend):
    """PyTorch reference backend."""

    name = "torch"

    def load(
        self, deployable: Deployable, bundle_dir: Path | None, device: str, **options: Any
    ) -> Session:
        """A TorchSession on ``device`` ("cpu" or "cuda[:N]")."""
        if options:
            raise BackendUnavailable(f"torch backend takes no options, got {sorted(options)}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                "torch backend: device 'cuda' asked for but no CUDA GPU is visible"
            )
        if not (device == "cpu" or device.startswith("cuda")):
            raise BackendUnavailable(f"torch backend: unknown device {device!r} (use cpu or cuda)")
        return TorchSession(deployable, device)
