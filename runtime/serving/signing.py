"""Signed bundles with OpenSSF ``model-signing`` (its offline elliptic-key signer).

A signature covers the SHA-256 of every file in the bundle folder (an in-toto statement in a
Sigstore bundle, v0.3 JSON) and lives *beside* the bundle: ``NAME.sig`` next to the folder
``NAME/`` or the archive ``NAME.tar`` (a file inside the folder would be an extra file, which
our loader refuses). A tar bundle is signed and verified over its unpacked folder, so a folder
and its tar carry the same signature. Keys are EC (P-256/384/521) PEM files; the signer is
named by the SHA-256 of its public key in PEM form (the signature's key hint).

``model_signing`` is imported only here, when a bundle is signed or checked.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganglion.models.errors import GanglionError, first_line
from ganglion.runtime.atomic import atomic_file, check_target
from ganglion.runtime.bundle_archive import extracted_bundle

SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 1 << 20
MAX_KEY_BYTES = 64 << 10
MAX_REASON_CHARS = 300  # an error's quoted reason is cut here


class SignatureError(GanglionError):
    """A signature that is missing, malformed, or does not match a trusted key and the files."""


@dataclass(frozen=True)
class SignatureInfo:
    """What a signature says: the signer's key fingerprint and the files it covers."""

    path: Path
    key_fingerprint: str  # SHA-256 of the signer's public key, PEM form ("" when absent)
    files: dict[str, str]  # file name -> SHA-256 the signature covers

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "signature": str(self.path),
            "key_sha256": self.key_fingerprint,
            "files": self.files,
        }


def signature_path(bundle: str | Path) -> Path:
    """Where the signature of ``bundle`` (folder or .tar) lives: beside it, ``NAME.sig``."""
    bundle = Path(bundle)
    return bundle.with_name(bundle.name.rstrip("/") + SIGNATURE_SUFFIX)


@contextlib.contextmanager
def bundle_folder(bundle: Path) -> Iterator[Path]:
    """The folder of a bundle: itself, or a tar's unpacked copy for the ``with`` block."""
    if bundle.is_dir():
        yield bundle
        return
    with extracted_bundle(bundle) as folder:
        yield folder


def key_fingerprint(public_pem: bytes) -> str:
    """SHA-256 of an EC public key in PEM SubjectPublicKeyInfo form (model-signing's hint)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError as exc:
        raise SignatureError(f"not a PEM public key ({exc})") from exc
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def sign_bundle(
    bundle: str | Path, key: str | Path, out: str | Path | None = None, force: bool = False
) -> Path:
    """Sign ``bundle``'s files with the EC private key ``key`` (PEM, unencrypted); writes the
    signature atomically to ``out`` (default: beside the bundle) and returns its path. An
    existing file there (an old signature too) is replaced only with ``force``; the bundle, the
    key and anything inside a bundle never."""
    import model_signing

    bundle, key = Path(bundle), Path(key)
    target = Path(out) if out is not None else signature_path(bundle)
    check_target(target, force, reads=(bundle, key))
    _check_signing_key(key)
    with bundle_folder(bundle) as folder, atomic_file(target, force) as tmp:
        try:
            config = model_signing.signing.Config().use_elliptic_key_signer(private_key=key)
            config.sign(folder, tmp)
        except Exception as exc:  # model-signing raises ValueError/TypeError for bad keys
            raise SignatureError(f"{key}: cannot sign with this key ({_line(exc)})") from exc
    return target


def _check_signing_key(key: Path) -> None:
    """SignatureError, naming the file, unless ``key`` holds an unencrypted EC private key in
    PEM (the key model-signing's offline signer takes), read only up to ``MAX_KEY_BYTES``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not key.is_file():
        raise SignatureError(f"{key}: no such key file")
    if key.stat().st_size > MAX_KEY_BYTES:
        raise SignatureError(f"{key}: larger than {MAX_KEY_BYTES} bytes, not a key")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: encrypted
        raise SignatureError(f"{key}: not an unencrypted PEM private key ({_line(exc)})") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        kind = type(private).__name__.removeprefix("_").replace("PrivateKey", "")
        raise SignatureError(
            f"{key}: a private key of type {kind or 'non-EC'}; signing takes an elliptic-curve "
            "(EC) one"
        )


def read_signature(path: str | Path) -> SignatureInfo:
    """Parse a signature file (size-bounded); SignatureError when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise SignatureError(f"{path}: no such signature file")
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{path}: larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        bundle = json.loads(path.read_bytes())
        hint = bundle.get("verificationMaterial", {}).get("publicKey", {}).get("hint", "")
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
        statement = json.loads(payload)
        resources = statement["predicate"]["resources"]
        files = {str(r["name"]): str(r["digest"]) for r in resources}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise SignatureError(f"{path}: not a model-signing signature ({_line(exc)})") from exc
    return SignatureInfo(path, str(hint), files)


def trusted_keys(folder: Path) -> dict[str, Path]:
    """The public keys (``*.pem``) of a trusted-keys folder by fingerprint."""
    keys = {}
    for pem in sorted(folder.glob("*.pem")):
        if pem.is_file() and pem.stat().st_size <= MAX_KEY_BYTES:
            with contextlib.suppress(SignatureError):
                keys[key_fingerprint(pem.read_bytes())] = pem
    return keys


def verify_signed(folder: Path, signature: Path, keys_folder: Path) -> Path:
    """The trusted key (a ``.pem`` in ``keys_folder``) whose signature over ``folder``'s files
    verifies; SignatureError when none does."""
    import model_signing

    info = read_signature(signature)
    keys = trusted_keys(keys_folder)
    if not keys:
        raise SignatureError(f"{keys_folder}: holds no EC public key (.pem)")
    key = keys.get(info.key_fingerprint)
    if key is None:
        raise SignatureError(
            f"signed by key {info.key_fingerprint[:16] or '(no hint)'}, which is not trusted"
        )
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(
            folder, signature
        )
    except Exception as exc:  # ValueError: hash mismatch, extra files, key mismatch
        raise SignatureError(f"signature does not verify with {key.name}: {_line(exc)}") from exc
    return key


def describe_signature(bundle: str | Path, keys_folder: Path | None = None) -> dict[str, Any]:
    """Who signed ``bundle`` (for ``ganglion inspect``): ``signed`` False when no signature
    lies beside it; else the key fingerprint, the files covered and, given trusted keys,
    ``verified_by`` (the key file) or ``error`` (why it does not verify)."""
    bundle = Path(bundle)
    path = signature_path(bundle)
    if not path.exists():
        return {"signed": False, "signature": str(path)}
    out: dict[str, Any] = {"signed": True, **read_signature(path).to_dict()}
    if keys_folder is not None:
        try:
            with bundle_folder(bundle) as folder:
                out["verified_by"] = str(verify_signed(folder, path, keys_folder))
        except GanglionError as exc:
            out["error"] = _line(exc)
    return out


def _line(exc: BaseException) -> str:
    """An exception's first line, at most ``MAX_REASON_CHARS`` long (a hash mismatch over many
    files is one very long line)."""
    return first_line(exc, MAX_REASON_CHARS)
