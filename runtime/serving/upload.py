"""``UploadBundle``: receive a bundle archive, prove it, install it.

1. Receive: the header first, checked before the node accepts it (so a refused upload costs
   no data); then the archive's bytes into a temporary file, counted against the node's
   limit as they arrive (RESOURCE_EXHAUSTED the moment it is passed) and hashed; the size
   and SHA-256 must match the header's.
2. Prove: unpack with ``bundle_archive.extracted_bundle`` (members with ``..``, absolute names,
   links or devices are refused; sizes bounded), verify every checksum (``open_bundle``),
   check the signature against the node's trusted keys when it has them (PERMISSION_DENIED
   otherwise), then open a session and warm it up: latency and energy measured here.
3. Install: copy the folder into the repository atomically (``runtime.atomic``), with its
   signature beside it; the warmed-up model is kept loaded when the header asks.
Nothing is installed unless every step passes, and temporary files never outlive the call.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ganglion.device import EnergyMeter
from ganglion.models.errors import GanglionError
from ganglion.runtime.atomic import atomic_file, atomic_folder
from ganglion.runtime.bundle import open_bundle
from ganglion.runtime.bundle_archive import TEMP_PREFIX, TarLimits, extracted_bundle
from ganglion.runtime.serving.repository import open_model
from ganglion.runtime.serving.served_model import ServedModel
from ganglion.runtime.serving.settings import NodeSettings, check_model_name
from ganglion.runtime.serving.signing import (
    MAX_SIGNATURE_BYTES,
    SignatureError,
    signature_path,
    verify_signed,
)
from ganglion.runtime.serving.status import NodeError


@dataclass(frozen=True)
class ReceivedArchive:
    """An archive received whole: its header, where it lies, its size and SHA-256."""

    header: Any  # control_pb2.UploadHeader
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Installed:
    """An installed bundle: the model (None unless kept loaded) and what the reply reports."""

    model: ServedModel | None
    kind: str
    backend: str
    signed_by: str
    measurement: Any  # served_model.Measurement


def _exhausted(limit: int) -> NodeError:
    return NodeError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"bundle upload exceeds this node's limit of {limit} bytes (--max-upload-mb)",
    )


def check_header(header: Any, settings: NodeSettings, given: set[str]) -> None:
    """Refuse a header before any data arrives: bad name, too large, name taken, bad hash."""
    check_model_name(header.name)
    if settings.repository is None:
        raise NodeError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "this node takes no uploads (start it with --repository DIR)",
        )
    if header.size > settings.max_upload_bytes:
        raise _exhausted(settings.max_upload_bytes)
    if len(header.sha256) != 64 or any(c not in "0123456789abcdef" for c in header.sha256):
        raise NodeError(grpc.StatusCode.INVALID_ARGUMENT, "header.sha256 must be 64 hex digits")
    if len(header.signature) > MAX_SIGNATURE_BYTES:
        raise NodeError(grpc.StatusCode.INVALID_ARGUMENT, "the signature is too large")
    if header.name in given:
        raise NodeError(
            grpc.StatusCode.ALREADY_EXISTS, f"{header.name!r} names a bundle given at start"
        )
    if (settings.repository / header.name).exists() and not header.replace:
        raise NodeError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"a model named {header.name!r} is installed; replace it with deploy --replace",
        )


async def first_header(chunks: AsyncIterator[Any]) -> Any:
    """The header an upload stream opens with (INVALID_ARGUMENT otherwise)."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise NodeError(grpc.StatusCode.INVALID_ARGUMENT, "empty upload (no header)") from None
    if first.WhichOneof("part") != "header":
        raise NodeError(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a header")
    return first.header


@contextlib.asynccontextmanager
async def received_archive(
    header: Any, chunks: AsyncIterator[Any], settings: NodeSettings
) -> AsyncIterator[ReceivedArchive]:
    """Receive the archive's bytes that follow an accepted header into a temporary file,
    removed when the block ends."""
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(prefix="ganglion-upload-", suffix=".tar")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                if chunk.WhichOneof("part") != "data":
                    raise NodeError(grpc.StatusCode.INVALID_ARGUMENT, "only one header is allowed")
                size += len(chunk.data)
                if size > settings.max_upload_bytes:
                    raise _exhausted(settings.max_upload_bytes)
                if size > header.size:
                    raise NodeError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"more than the {header.size} bytes the header announced",
                    )
                digest.update(chunk.data)
                out.write(chunk.data)
        if size != header.size:
            raise NodeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"received {size} bytes, the header announced {header.size}",
            )
        if digest.hexdigest() != header.sha256:
            raise NodeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the archive's SHA-256 does not match the header's (corrupted in transit)",
            )
        yield ReceivedArchive(header, path, size, header.sha256)
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _renamed_errors(archive: Path, label: str) -> Iterator[None]:
    """Say the upload's name instead of its temporary file and folder in error messages."""
    unpacked = re.compile(re.escape(tempfile.gettempdir()) + "/" + TEMP_PREFIX + r"[^/:\s]+")
    try:
        yield
    except GanglionError as exc:
        exc.args = (unpacked.sub(label, str(exc).replace(str(archive), label)),)
        raise


def install_upload(
    received: ReceivedArchive, settings: NodeSettings, meter: EnergyMeter
) -> Installed:
    """Prove and install a received archive (steps 2 and 3 of the module docstring);
    blocking: run it in a thread."""
    header, root = received.header, settings.repository
    assert root is not None
    limits = TarLimits(
        max_member_bytes=settings.max_upload_bytes, max_total_bytes=settings.max_upload_bytes
    )
    renamed = _renamed_errors(received.path, f"upload {header.name!r}")
    with renamed, extracted_bundle(received.path, limits) as folder:
        with open_bundle(folder):
            pass
        signed_by = _check_signature(folder, header, settings)
        model = open_model(folder, header.name, settings, meter)
        try:
            with atomic_folder(root / header.name, force=header.replace) as work:
                shutil.copytree(folder, work)
            _install_signature(root / header.name, header.signature)
        except BaseException:
            model.close()
            raise
    installed = Installed(
        model if header.load else None,
        model.kind,
        model.backend,
        signed_by,
        model.measurement,
    )
    if not header.load:
        model.close()
    return installed


def _check_signature(folder: Path, header: Any, settings: NodeSettings) -> str:
    """The trusted key file that verifies the upload ("" when the node trusts any bundle)."""
    if settings.trusted_keys is None:
        return ""
    if not header.signature:
        raise NodeError(
            grpc.StatusCode.PERMISSION_DENIED,
            "this node accepts only signed bundles (ganglion sign BUNDLE --key KEY.pem)",
        )
    with tempfile.TemporaryDirectory(prefix="ganglion-signature-") as tmp:
        signature = Path(tmp) / "bundle.sig"
        signature.write_bytes(header.signature)
        try:
            return verify_signed(folder, signature, settings.trusted_keys).name
        except SignatureError as exc:
            raise NodeError(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from exc


def _install_signature(bundle: Path, signature: bytes) -> None:
    """Write (or, for an unsigned replacement, remove) the signature beside ``bundle``."""
    target = signature_path(bundle)
    if not signature:
        target.unlink(missing_ok=True)
        return
    with atomic_file(target, force=True) as tmp:
        tmp.write_bytes(signature)
