"""Bundles on disk: a folder (or .tar of one) holding manifest.json, config.json,
weights.safetensors and, for spiking programs, graph.nir plus the ONNX step graph
(model.onnx) and sequence graph (model.sequence.onnx). Every artifact's SHA-256 is in the
manifest and verified at load: a missing, corrupt or tampered file is a BundleError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganglion.converters.nir_graph import write_nir
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError
from ganglion.models.manifest import Manifest
from ganglion.models.registry import build_module
from ganglion.runtime.onnx_export import onnx_artifact_writers

MANIFEST, CONFIG, WEIGHTS, GRAPH_NIR = (
    "manifest.json",
    "config.json",
    "weights.safetensors",
    "graph.nir",
)

# Extra artifacts by program kind: name -> writer(deployable, path). Backends' exporters add theirs.
ArtifactWriter = Callable[[Deployable, Path], None]
ARTIFACT_WRITERS: dict[str, dict[str, ArtifactWriter]] = {
    "spiking": {
        GRAPH_NIR: lambda d, p: write_nir(d.module.graph, p, d.manifest.time.dt),
        **onnx_artifact_writers(),  # model.onnx (step graph), model.sequence.onnx
    },
}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _module_tensors(deployable: Deployable) -> dict[str, torch.Tensor]:
    module = deployable.module
    if hasattr(module, "graph"):
        return module.graph.state_tensors()
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def save_bundle(deployable: Deployable, path: str | Path) -> Path:
    """Write a bundle folder (or a .tar when ``path`` ends in .tar); returns the path."""
    path = Path(path)
    if path.suffix == ".tar":
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_bundle(deployable, Path(tmp) / path.stem)
            with tarfile.open(path, "w") as tar:
                for f in sorted(folder.iterdir()):
                    tar.add(f, arcname=f.name)
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(json.dumps(deployable.config, indent=1))
    save_file(_module_tensors(deployable), str(path / WEIGHTS))
    for name, writer in ARTIFACT_WRITERS.get(deployable.manifest.kind, {}).items():
        writer(deployable, path / name)
    manifest = deployable.manifest
    manifest.artifacts = {
        f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file() and f.name != MANIFEST
    }
    (path / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1))
    return path


def add_artifact(bundle: str | Path, name: str, writer: Callable[[Path], None]) -> None:
    """Write one more artifact into an existing bundle folder and record its checksum."""
    folder = Path(bundle)
    manifest = read_manifest(folder)
    writer(folder / name)
    manifest.artifacts[name] = sha256_file(folder / name)
    (folder / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1))


def read_manifest(folder: Path) -> Manifest:
    """Parse manifest.json of a bundle folder."""
    if not (folder / MANIFEST).is_file():
        raise BundleError(f"{folder}: not a bundle (no {MANIFEST})")
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{folder / MANIFEST}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{folder / MANIFEST}: expected a JSON object")
    return Manifest.from_dict(data)


def verify_bundle(folder: Path) -> Manifest:
    """Check every artifact against its recorded SHA-256; returns the manifest."""
    manifest = read_manifest(folder)
    for required in (CONFIG, WEIGHTS):
        if required not in manifest.artifacts:
            raise BundleError(f"{folder}: the manifest lists no {required}")
    for name, expected in manifest.artifacts.items():
        f = folder / name
        if Path(name).name != name:
            raise BundleError(f"{folder}: artifact name {name!r} is not a plain file name")
        if not f.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        if sha256_file(f) != expected:
            raise BundleError(f"{folder}: {name} does not match its SHA-256 (corrupt or tampered)")
    return manifest


def _extract_tar(path: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="ganglion-bundle-"))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from exc
    return target


def resolve_bundle(path: str | Path) -> Path:
    """The bundle folder for a folder or .tar path (a .tar is extracted to a temp folder)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    return _extract_tar(path) if path.is_file() else path


def load_bundle(path: str | Path) -> Deployable:
    """Verify and load a bundle into a Deployable (module rebuilt from config + weights)."""
    folder = resolve_bundle(path)
    manifest = verify_bundle(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        tensors = load_file(str(folder / WEIGHTS))
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise BundleError(f"{folder}: cannot read config or weights ({exc})") from exc
    module = build_module(config, tensors, manifest)
    return Deployable(module, manifest, config)
