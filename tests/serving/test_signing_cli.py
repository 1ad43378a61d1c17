"""``ganglion sign`` and ``inspect --trusted-keys`` as a script uses them: a signature never
replaces the key or the bundle, and a signature that does not verify is a failed command."""

from __future__ import annotations

import shutil
from pathlib import Path

from ganglion.runtime.cli import invoke


def test_sign_never_replaces_the_key_or_the_bundle(
    bundles: dict[str, Path], signing_keys: dict[str, Path], tmp_path: Path, one_line_error
) -> None:
    bundle = Path(shutil.copytree(bundles["dense"], tmp_path / "b"))
    key = Path(shutil.copy(signing_keys["trusted"], tmp_path / "k.pem"))
    before = key.read_bytes()
    for target in (key, bundle, bundle / "manifest.json"):
        code, _, err = invoke("sign", str(bundle), "--key", str(key), "--signature", str(target))
        assert code != 0 and ("is read by this command" in err or "inside the bundle" in err)
    assert key.read_bytes() == before and (bundle / "manifest.json").is_file()
    code, _, err = invoke("sign", str(bundle), "--key", str(key))
    assert code == 0, err


def test_inspect_fails_when_the_signature_does_not_verify(
    bundles: dict[str, Path], signing_keys: dict[str, Path], tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(bundles["dense"], tmp_path / "b"))
    trusted = str(signing_keys["trusted_dir"])
    for key, verifies in (("trusted", True), ("stranger", False)):
        assert invoke("sign", str(bundle), "--key", str(signing_keys[key]), "--force")[0] == 0
        code, out, _ = invoke("inspect", str(bundle), "--trusted-keys", trusted)
        assert (code == 0) == verifies, out
        assert ("does NOT verify" in out) != verifies
    code, _, _ = invoke("inspect", str(bundle))  # nothing asked to verify: it only reports
    assert code == 0


def _pem(key: object, password: bytes | None = None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_sign_names_the_key_file_and_what_is_wrong_with_it(
    bundles: dict[str, Path], tmp_path: Path, one_line_error
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from ganglion.runtime.serving.signing import MAX_KEY_BYTES, signature_path

    bundle = Path(shutil.copytree(bundles["dense"], tmp_path / "b"))
    cases = {
        "ed.pem": (_pem(ed25519.Ed25519PrivateKey.generate()), "of type Ed25519"),
        "rsa.pem": (_pem(rsa.generate_private_key(65537, 2048)), "of type RSA"),
        "locked.pem": (_pem(ec.generate_private_key(ec.SECP256R1()), b"pw"), "not an unencrypted"),
        "junk.pem": (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an"),
        "huge.pem": (b"A" * (MAX_KEY_BYTES + 1), "larger than"),
    }
    for name, (data, words) in cases.items():
        key = tmp_path / name
        key.write_bytes(data)
        code, _, err = invoke("sign", str(bundle), "--key", str(key))
        one_line_error(code, err, str(key), words)
    assert not signature_path(bundle).exists()


def test_sign_replaces_an_existing_file_only_with_force(
    bundles: dict[str, Path], signing_keys: dict[str, Path], tmp_path: Path, one_line_error
) -> None:
    bundle = Path(shutil.copytree(bundles["dense"], tmp_path / "b"))
    key = str(signing_keys["trusted"])
    mine = tmp_path / "mine.npy"
    mine.write_bytes(b"a user's data")
    code, _, err = invoke("sign", str(bundle), "--key", key, "--signature", str(mine))
    one_line_error(code, err, str(mine), "already exists", "--force")
    assert mine.read_bytes() == b"a user's data"
    assert invoke("sign", str(bundle), "--key", key)[0] == 0
    code, _, err = invoke("sign", str(bundle), "--key", key)  # an old signature: the same rule
    one_line_error(code, err, "already exists")
    code, _, err = invoke("sign", str(bundle), "--key", key, "--signature", str(mine), "--force")
    assert code == 0, err
    assert mine.read_bytes() != b"a user's data"


def test_a_hostile_signature_file_neither_reaches_the_terminal_nor_crashes(
    bundles: dict[str, Path], signing_keys: dict[str, Path], tmp_path: Path, one_line_error
) -> None:
    """The key hint is the file's own text: its escape sequences are shown, not obeyed; a
    signature nested 100,000 deep is refused as one, naming the file."""
    import json

    from ganglion.runtime.serving.signing import signature_path

    bundle = Path(shutil.copytree(bundles["dense"], tmp_path / "b"))
    assert invoke("sign", str(bundle), "--key", str(signing_keys["stranger"]))[0] == 0
    sig = signature_path(bundle)
    signed = json.loads(sig.read_text())
    signed["verificationMaterial"]["publicKey"]["hint"] = "\x1b]0;pwned\x07\x1b[2J"
    sig.write_text(json.dumps(signed))
    trusted = str(signing_keys["trusted_dir"])
    code, _, err = invoke("inspect", str(bundle), "--trusted-keys", trusted)
    one_line_error(code, err, "does not verify with --trusted-keys")
    assert "\x1b" not in err and "\x07" not in err
    sig.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = invoke("inspect", str(bundle), "--trusted-keys", trusted)
    one_line_error(code, err, f"{sig}: not a model-signing signature")
