"""The one contract every backend implements, and ``load`` that picks a backend by name.

Contract (who owns what):
- ``Backend.load(deployable, bundle_dir, device, **options) -> Session`` — a backend checks up
  front that it can run the program (package present, device present, ops supported) and
  raises ``BackendUnavailable`` with a one-line reason otherwise. Backends never convert.
- ``Session.run(x)``: the whole input (all timesteps / the whole sequence) -> output.
- ``Session.step(x_t, state) -> (output, state)``: one timestep or token; state is a dict of
  named numpy arrays (names in ``manifest.state``). ``run`` equals repeated ``step``.
- ``Session.init_state(batch)``; ``Session.close()`` releases the backend's resources.
Arrays in and out are numpy; a session is used from one thread at a time.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.manifest import Manifest

State = dict[str, np.ndarray]

# name -> "module:Class", imported only when asked for (heavy and optional packages).
BACKENDS: dict[str, str] = {
    "torch": "ganglion.runtime.backends.torch_backend:TorchBackend",
    "onnxruntime": "ganglion.runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "ganglion.runtime.backends.tensorrt_backend:TensorRTBackend",
    "lava": "ganglion.runtime.backends.lava_backend:LavaBackend",
}


class Session(ABC):
    """A loaded program on one backend and device."""

    manifest: Manifest
    backend: str
    device: str

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Whole input -> output (shapes per the manifest's time semantics)."""

    @abstractmethod
    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep or token with explicit state."""

    @abstractmethod
    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release resources (default: nothing to release)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """Where programs execute."""

    name: str

    @abstractmethod
    def load(
        self, deployable: Deployable, bundle_dir: Path | None, device: str, **options: Any
    ) -> Session:
        """A Session for the program, or BackendUnavailable saying why not."""


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name (imports it lazily)."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)()


def load(
    bundle: str | Path | Deployable, backend: str = "torch", device: str = "cpu", **options: Any
) -> Session:
    """Load a bundle (path) or an in-memory Deployable on a backend and device."""
    from ganglion.runtime.bundle import load_bundle, resolve_bundle

    if isinstance(bundle, Deployable):
        deployable, folder = bundle, None
    else:
        folder = resolve_bundle(bundle)
        deployable = load_bundle(folder)
    return get_backend(backend).load(deployable, folder, device, **options)


def check_float_input(x: np.ndarray, what: str = "input") -> np.ndarray:
    """Return ``x`` as float32, or ShapeError if it is not a real numeric array."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ShapeError(f"{what} must be a numeric array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)
