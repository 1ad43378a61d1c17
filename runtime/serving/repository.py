"""The models a node knows: bundles given at start and bundles installed in its repository
folder, and which of them are loaded (a ``ServedModel`` each).

Loading opens a Session on the first backend that can run the bundle (``--backend auto``:
ONNX Runtime, then torch) and warms it up, in a thread, before the model takes requests;
reloading swaps the new model in and retires the old one once its queued requests are done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from ganglion.device import EnergyMeter
from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.bundle import MANIFEST
from ganglion.runtime.serving.served_model import ServedModel
from ganglion.runtime.serving.settings import NodeSettings, SettingsError, check_model_name
from ganglion.runtime.serving.status import NodeError, check_version, unknown_model
from ganglion.runtime.session import load

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


def model_name_of(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the folder, or the archive without .tar...)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec.rstrip("/")).name
        for suffix in ARCHIVE_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return check_model_name(name), Path(path)


def open_model(path: Path, name: str, settings: NodeSettings, meter: EnergyMeter) -> ServedModel:
    """A warmed-up model for the bundle at ``path``; blocking (run it in a thread)."""
    reasons = []
    for backend in settings.backends:
        try:
            # Lava forks its processes; beside gRPC's threads it runs in a worker of its own
            isolated = {"isolated": True} if backend == "lava" else {}
            session = load(path, backend=backend, device=settings.backend_device, **isolated)
        except BackendUnavailable as exc:
            reasons.append(f"{backend}: {exc}")
            continue
        model = ServedModel(name, session, backend, settings)
        try:
            model.warm_up(meter, path)
        except BaseException:
            model.close()
            raise
        return model
    raise BackendUnavailable(f"model {name!r} cannot run here ({'; '.join(reasons)})")


class ModelRepository:
    """Known bundles by name and the loaded models; mutations are serialized."""

    def __init__(self, settings: NodeSettings, meter: EnergyMeter) -> None:
        self.settings = settings
        self.meter = meter
        self.models: dict[str, ServedModel] = {}
        self.reasons: dict[str, str] = {}  # name -> why it is not loaded
        self.given: dict[str, Path] = {}
        self.lock = asyncio.Lock()
        for spec in settings.bundles:
            name, path = model_name_of(str(spec))
            if name in self.given:
                raise SettingsError(f"two bundles are named {name!r}; use NAME=PATH")
            if not path.exists():
                raise SettingsError(f"{path}: no such bundle")
            self.given[name] = path

    def sources(self) -> dict[str, Path]:
        """Every known bundle by name: those given at start, then the repository's folders."""
        found = dict(self.given)
        root = self.settings.repository
        if root is not None and root.is_dir():
            for folder in sorted(root.iterdir()):
                if folder.is_dir() and (folder / MANIFEST).is_file() and folder.name not in found:
                    try:
                        found[check_model_name(folder.name)] = folder
                    except SettingsError:
                        continue
        return found

    def get(self, name: str, version: str = "") -> ServedModel:
        """The loaded model ``name`` (NOT_FOUND, as Triton words it, when there is none)."""
        model = self.models.get(name)
        if model is None:
            raise unknown_model(name)
        check_version(name, version)
        return model

    async def load(self, name: str) -> ServedModel:
        """(Re)load ``name`` from its bundle; the old model, if any, retires."""
        path = self.sources().get(name)
        if path is None:
            raise NodeError(grpc.StatusCode.NOT_FOUND, f"no bundle named {name!r} on this node")
        try:
            model = await asyncio.to_thread(open_model, path, name, self.settings, self.meter)
        except Exception as exc:
            self.reasons[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise
        self.add(model)
        return model

    def add(self, model: ServedModel) -> None:
        """Serve ``model`` under its name, retiring the model it replaces."""
        old = self.models.pop(model.name, None)
        self.models[model.name] = model
        self.reasons.pop(model.name, None)
        if old is not None:
            old.close()

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` (NOT_FOUND when it is not loaded)."""
        model = self.models.pop(name, None)
        if model is None:
            raise unknown_model(name)
        self.reasons[name] = "unloaded"
        model.close()

    async def load_all(self) -> dict[str, str]:
        """Load every known bundle at start. A bundle given at start that fails stops the
        node; one in the repository that fails is left unloaded: returns name -> why."""
        failed = {}
        for name in self.sources():
            try:
                await self.load(name)
            except Exception:
                if name in self.given:
                    raise
                failed[name] = self.reasons[name]
        return failed

    def index(self) -> list[tuple[str, str, str]]:
        """(name, state, reason) of every known or loaded model, by name."""
        names = sorted(set(self.sources()) | set(self.models))
        return [
            (n, "READY", "")
            if n in self.models
            else (n, "UNAVAILABLE", self.reasons.get(n, "not loaded"))
            for n in names
        ]

    def sweep_sequences(self) -> int:
        """Forget idle sequences of every model; how many were forgotten."""
        return sum(m.sequences.expire() for m in list(self.models.values()))

    def close(self) -> None:
        """Retire every model."""
        for model in self.models.values():
            model.close()
        self.models.clear()
