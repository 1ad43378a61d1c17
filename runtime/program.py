"""``Program``: what a backend loads — a verified manifest plus where the program's parts are.

A program comes from a bundle folder (verified, read while a session loads) or from an
in-memory ``Deployable``. Backends read what they need through it at load time:
- ``artifact(name)``: a file's bytes from the bundle (checksummed at open);
- ``initial_state()``: the fresh state of one sample as numpy arrays, from
  ``initial_state.safetensors`` (no torch needed), or from the module of an in-memory program;
- ``deployable()``: the torch module, built on first use (imports torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError, ConversionError
from ganglion.models.manifest import Manifest
from ganglion.runtime.kinds import ProgramKind, kind_of

CONFIG, WEIGHTS, INITIAL_STATE = "config.json", "weights.safetensors", "initial_state.safetensors"
MAX_REASON = 400  # characters of a rebuild error kept in its one-line message
MAX_CONFIG_BYTES = 16 << 20


@dataclass
class Program:
    """A program ready to load: manifest, its bundle folder and/or its in-memory Deployable."""

    manifest: Manifest
    folder: Path | None = None
    members: dict[str, Program] = field(default_factory=dict)
    _deployable: Deployable | None = None

    @classmethod
    def in_memory(cls, deployable: Deployable) -> Program:
        """A program for a Deployable that has no bundle."""
        members = {n: cls.in_memory(d) for n, d in deployable.members.items()}
        return cls(deployable.manifest, None, members, deployable)

    @property
    def kind(self) -> ProgramKind:
        """The program's kind (``runtime.kinds``)."""
        return kind_of(self.manifest)

    @property
    def name(self) -> str:
        """A name for messages: the bundle folder, or the architecture of an in-memory program."""
        return str(self.folder) if self.folder is not None else self.manifest.architecture

    def has_artifact(self, name: str) -> bool:
        """True when the bundle lists file ``name``."""
        return self.folder is not None and name in self.manifest.artifacts

    def artifact(self, name: str) -> bytes:
        """The bytes of bundle file ``name`` (BundleError when the bundle has none)."""
        if not self.has_artifact(name):
            raise BundleError(f"{self.name}: the bundle has no {name}")
        assert self.folder is not None
        return (self.folder / name).read_bytes()

    def config(self) -> dict[str, Any]:
        """config.json of the bundle (or of the in-memory program)."""
        if self._deployable is not None:
            return self._deployable.config
        data = self.artifact(CONFIG)
        if len(data) > MAX_CONFIG_BYTES:
            raise BundleError(f"{self.name}: {CONFIG} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            config = json.loads(data)
        except (ValueError, RecursionError) as exc:  # bad JSON, huge integers, deep nesting
            raise BundleError(f"{self.name}/{CONFIG}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise BundleError(f"{self.name}/{CONFIG}: expected a JSON object")
        return config

    def deployable(self) -> Deployable:
        """The torch program, rebuilt from the bundle on first use."""
        if self._deployable is None:
            self._deployable = self._build()
        return self._deployable

    def _build(self) -> Deployable:
        from safetensors import SafetensorError
        from safetensors.torch import load as load_tensors

        assert self.folder is not None
        try:
            tensors = load_tensors(self.artifact(WEIGHTS)) if self.has_artifact(WEIGHTS) else {}
        except SafetensorError as exc:
            raise BundleError(f"{self.name}/{WEIGHTS}: not readable safetensors ({exc})") from exc
        finite = not self.kind.infinite_weights  # our own architectures hold no infinity
        for name, tensor in tensors.items():
            if tensor.is_floating_point():
                nan = tensor.isnan()
                bad = nan | tensor.isinf() if finite else nan
                refuse_nan_or_inf(f"{self.name}/{WEIGHTS}", name, bad.numpy(), nan.numpy())
        config = self.config()
        try:
            module = self.kind.build_module(self.manifest, config, tensors, self.folder)
        except BundleError as exc:  # named with the bundle, which the kinds do not all know
            if str(exc).startswith(str(self.name)):
                raise
            raise BundleError(f"{self.name}: {exc}") from exc
        except ConversionError as exc:  # a refused artifact (model.pt2): the reader named it
            raise BundleError(str(exc)) from exc
        except Exception as exc:  # a malformed config surfaces as many exception types
            reason = " ".join(str(exc).split())  # one line: torch's state-dict errors take many
            if len(reason) > MAX_REASON:
                reason = reason[: MAX_REASON - 3] + "..."
            raise BundleError(
                f"{self.name}: config.json and {WEIGHTS} do not rebuild a "
                f"{self.manifest.architecture} ({type(exc).__name__}: {reason})"
            ) from exc
        members = {n: m.deployable() for n, m in self.members.items()}
        return Deployable(module, self.manifest, config, members)

    def initial_state(self) -> dict[str, np.ndarray]:
        """The fresh state of one sample, as numpy arrays (batched tensors without their batch
        axis), from ``initial_state.safetensors`` (no torch needed) or the in-memory module."""
        if not self.manifest.state:
            return {}
        if self.has_artifact(INITIAL_STATE):
            values = read_numpy_tensors(
                self.artifact(INITIAL_STATE), f"{self.name}/{INITIAL_STATE}"
            )
        else:
            values = initial_state_of(self.deployable())
        missing = [s.name for s in self.manifest.state if s.name not in values]
        if missing:
            raise BundleError(f"{self.name}: {INITIAL_STATE} lacks state {missing[0]!r}")
        if self.has_artifact(INITIAL_STATE):
            problem = self.kind.fresh_state_problem(self, values)
            if problem is not None:
                raise BundleError(f"{self.name}/{INITIAL_STATE}: {problem}")
        return values


def initial_state_of(deployable: Deployable) -> dict[str, np.ndarray]:
    """Per-sample initial state of an in-memory program (batched tensors lose their batch)."""
    return kind_of(deployable.manifest).initial_state(deployable)


def read_numpy_tensors(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file as numpy arrays (no torch, no pickle); BundleError for
    an unreadable file or a float tensor holding NaN."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise BundleError(f"{where}: not readable safetensors ({exc})") from exc
    for name, array in tensors.items():
        if array.dtype.kind == "f":
            refuse_nan_or_inf(where, name, np.isnan(array))
    return tensors


def refuse_nan_or_inf(
    where: str, name: str, bad: np.ndarray, nan: np.ndarray | None = None
) -> None:
    """BundleError naming the first flagged value of tensor ``name`` of file ``where`` (``bad``:
    its NaN mask, or its NaN-or-infinity mask with ``nan`` the NaN one), if any: weights and
    state are numbers. (Infinity is refused only where the kind says so: a user's network may
    hold -inf in an attention mask.)"""
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if nan is None or nan[index] else "infinity"
        raise BundleError(f"{where}: tensor {name!r} holds {what} at index {index}")
