"""On-disk cache of TensorRT engines, keyed by what makes an engine valid.

An engine is only valid for the ONNX graph, TensorRT version, GPU, precision, batch
profile, DLA core (and, for int8, calibration data) it was built for. Each engine
``<digest>.engine`` sits beside ``<digest>.json`` holding its full key and the engine's
SHA-256; an engine is loaded only when both match exactly. A stale, foreign or corrupt
engine is rebuilt, never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str  # "fp32" | "fp16" | "int8"
    batch_profile: tuple[int, int, int]  # (min, opt, max) batch of the optimization profile
    dla_core: int | None = None
    calibration_sha256: str | None = None  # int8: the calibration data (or cache) used

    def digest(self) -> str:
        """Hex SHA-256 of the key (the engine's file name)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, object]:
        """JSON form (the sidecar file's ``key``)."""
        data = dataclasses.asdict(self)
        data["batch_profile"] = list(self.batch_profile)
        return data


def default_cache_dir() -> Path:
    """``$GANGLION_ENGINE_CACHE``, else ``~/.cache/ganglion/engines``."""
    env = os.environ.get("GANGLION_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ganglion" / "engines"


class EngineCache:
    """A folder of engines and their sidecar keys."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """(engine file, sidecar JSON) of ``key``."""
        digest = key.digest()
        return self.folder / f"{digest}.engine", self.folder / f"{digest}.json"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine of ``key``, or None when absent, stale, foreign or corrupt."""
        engine_path, meta_path = self.paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            engine = engine_path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.to_dict():
            return None
        if meta.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
            return None
        return engine

    def store(self, key: EngineKey, engine: bytes) -> None:
        """Write ``engine`` and its sidecar (engine first, sidecar last, each atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        engine_path, meta_path = self.paths(key)
        meta = {"key": key.to_dict(), "engine_sha256": hashlib.sha256(engine).hexdigest()}
        for path, data in ((engine_path, engine), (meta_path, json.dumps(meta).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(engine, built): the cached engine when valid, else ``build()``'s, stored."""
        engine = self.load(key)
        if engine is not None:
            return engine, False
        engine = build()
        self.store(key, engine)
        return engine, True
