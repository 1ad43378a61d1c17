"""A guarded node as a separate process: mutual TLS (certificates made here), a bearer token,
signed uploads only; hostile, oversized and corrupted uploads are refused with the right
status, nothing is installed, and the node stays up after each."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from ganglion.runtime import load
from ganglion.runtime.cli.app import main
from ganglion.runtime.serving.client import NodeCallError, NodeClient
from ganglion.runtime.serving.protos import control_pb2
from ganglion.runtime.serving.security import channel_credentials
from ganglion.runtime.serving.signing import describe_signature

if TYPE_CHECKING:
    from tests.serving.conftest import NodeProcess

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded(
    bundles: dict[str, Path],
    tls_files: dict[str, Path],
    signing_keys: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    launch_node,
) -> Iterator[tuple[NodeProcess, Path]]:
    """The node and its repository folder."""
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "token").write_text(TOKEN + "\n")
    repository = folder / "repository"
    args = [str(bundles["snn"]), "--repository", str(repository), "--max-upload-mb", "1"]
    args += ["--tls-cert", str(tls_files["server_cert"]), "--tls-key", str(tls_files["server_key"])]
    args += ["--tls-ca", str(tls_files["ca"]), "--token-file", str(folder / "token")]
    args += ["--trusted-keys", str(signing_keys["trusted_dir"]), "--simulate-energy"]
    credentials = channel_credentials(
        tls_files["ca"], tls_files["client_cert"], tls_files["client_key"]
    )
    with launch_node(args, folder, credentials) as node:
        yield node, repository


def _triton(node: NodeProcess, tls: dict[str, Path]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        node.address,
        ssl=True,
        root_certificates=str(tls["ca"]),
        private_key=str(tls["client_key"]),
        certificate_chain=str(tls["client_cert"]),
    )


def _client(node: NodeProcess, tls: dict[str, Path], token: str | None = TOKEN) -> NodeClient:
    return NodeClient(
        node.address,
        token,
        tls_ca=tls["ca"],
        tls_cert=tls["client_cert"],
        tls_key=tls["client_key"],
        timeout_s=60,
    )


AUTH = {"authorization": f"Bearer {TOKEN}"}


def _still_up(node: NodeProcess, tls: dict[str, Path]) -> None:
    with _triton(node, tls) as client:
        assert client.is_server_live(headers=AUTH)


def test_tritonclient_infers_over_mutual_tls_with_the_token(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path], bundles: dict[str, Path]
) -> None:
    node, _ = guarded
    x = np.random.default_rng(0).random((2, 8), dtype=np.float32)
    tensor = triton.InferInput("input", [2, 8], "FP32")
    tensor.set_data_from_numpy(x)
    with _triton(node, tls_files) as client:
        assert client.is_server_ready(headers=AUTH)
        got = client.infer("snn", [tensor], headers=AUTH).as_numpy("output")
    with load(bundles["snn"], backend="onnxruntime") as session:
        np.testing.assert_array_equal(got, session.run(x))


@pytest.mark.parametrize(
    "headers, words",
    [
        ({}, "missing bearer token"),
        ({"authorization": "Bearer guess"}, "wrong bearer token"),
        ({"authorization": f"Basic {TOKEN}"}, "wrong bearer token"),  # another scheme
        ({"authorization": TOKEN}, "wrong bearer token"),
    ],
    ids=["missing", "wrong", "basic", "bare"],
)
def test_calls_without_the_token_are_unauthenticated(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path], headers: dict, words: str
) -> None:
    node, _ = guarded
    with _triton(node, tls_files) as client, pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("snn", headers=headers)
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    assert words in caught.value.message()
    _still_up(node, tls_files)


def test_the_bearer_scheme_is_case_insensitive(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path]
) -> None:
    """RFC 6750 (HTTP's auth-scheme): "bearer" and "BEARER" name the same scheme."""
    node, _ = guarded
    with _triton(node, tls_files) as client:
        for scheme in ("bearer", "BEARER"):
            assert client.is_model_ready("snn", headers={"authorization": f"{scheme} {TOKEN}"})


def test_health_answers_without_the_token(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path]
) -> None:
    async def ask() -> str:
        async with _client(guarded[0], tls_files, token=None) as node:
            return await node.health()

    assert asyncio.run(ask()) == "SERVING"


@pytest.mark.parametrize("how", ["plaintext", "no-client-certificate"])
def test_clients_without_tls_credentials_cannot_connect(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path], how: str
) -> None:
    node, _ = guarded

    async def ask() -> bool:
        if how == "plaintext":
            client = NodeClient(node.address, TOKEN, timeout_s=3)
        else:
            client = NodeClient(node.address, TOKEN, tls_ca=tls_files["ca"], timeout_s=3)
        async with client:
            return await client.live()

    with pytest.raises(NodeCallError) as caught:
        asyncio.run(ask())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    _still_up(node, tls_files)


def _cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def _tls_args(tls: dict[str, Path], token_file: Path) -> list[object]:
    return [
        "--tls-ca",
        tls["ca"],
        "--tls-cert",
        tls["client_cert"],
        "--tls-key",
        tls["client_key"],
        "--token-file",
        token_file,
    ]


def test_signed_bundle_deploys_measured_and_serves(
    guarded: tuple[NodeProcess, Path],
    tls_files: dict[str, Path],
    signing_keys: dict[str, Path],
    bundles: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node, repository = guarded
    bundle = shutil.copytree(bundles["dense"], tmp_path / "mlp")
    code, out, err = _cli(["sign", bundle, "--key", signing_keys["trusted"]], capsys)
    assert code == 0, err
    assert (tmp_path / "mlp.sig").is_file() and "files signed by key" in out
    token_file = repository.parent / "token"
    args = ["deploy", bundle, "--to", node.address, "--load", "--json"]
    code, out, err = _cli(args + _tls_args(tls_files, token_file), capsys)
    assert code == 0, err
    reply = json.loads(out)
    assert reply["name"] == "mlp" and reply["loaded"] and reply["signedBy"] == "release.pem"
    assert reply["kind"] == "dense" and reply["backend"] == "onnxruntime"
    assert reply["measurement"]["energyKind"] == "simulated"
    assert reply["measurement"]["energyPerInferenceJ"] > 0 and reply["measurement"]["runs"] >= 5
    info = describe_signature(repository / "mlp", signing_keys["trusted_dir"])
    assert info["verified_by"].endswith("release.pem") and "model.onnx" in info["files"]
    x = np.random.default_rng(2).random((3, 8), dtype=np.float32)

    async def ask() -> dict[str, np.ndarray]:
        async with _client(node, tls_files) as client:
            return await client.infer("mlp", {"input": x})

    with load(bundles["dense"], backend="onnxruntime") as session:
        np.testing.assert_array_equal(asyncio.run(ask())["output"], session.run(x))


def _upload(node: NodeProcess, tls: dict[str, Path], bundle: Path, name: str, **kw: Any) -> Any:
    async def send() -> Any:
        async with _client(node, tls) as client:
            return await client.upload(bundle, name, **kw)

    return asyncio.run(send())


def _refused_upload(
    guarded: tuple[NodeProcess, Path], tls: dict[str, Path], bundle: Path, name: str, **kw: Any
) -> NodeCallError:
    node, repository = guarded
    with pytest.raises(NodeCallError) as caught:
        _upload(node, tls, bundle, name, **kw)
    assert not (repository / name).exists()
    _still_up(node, tls)
    return caught.value


def test_unsigned_and_wrongly_signed_uploads_are_permission_denied(
    guarded: tuple[NodeProcess, Path],
    tls_files: dict[str, Path],
    signing_keys: dict[str, Path],
    bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    bundle = shutil.copytree(bundles["snn"], tmp_path / "snn-copy")
    unsigned = _refused_upload(guarded, tls_files, bundle, "unsigned")
    assert unsigned.code == grpc.StatusCode.PERMISSION_DENIED and "only signed" in unsigned.details
    stranger = tmp_path / "stranger.sig"
    assert main_sign(bundle, signing_keys["stranger"], stranger) == 0
    refused = _refused_upload(guarded, tls_files, bundle, "stranger", signature=stranger)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED and "not trusted" in refused.details
    other = tmp_path / "other.sig"
    assert main_sign(bundles["rwkv"], signing_keys["trusted"], other) == 0
    refused = _refused_upload(guarded, tls_files, bundle, "mismatch", signature=other)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not verify" in refused.details


def main_sign(bundle: Path, key: Path, out: Path) -> int:
    """``ganglion sign`` in-process; its exit code."""
    with pytest.raises(SystemExit) as done:
        main(["sign", str(bundle), "--key", str(key), "--signature", str(out)])
    return int(done.value.code or 0)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def test_path_traversal_and_links_in_uploads_are_refused(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path], tmp_path: Path
) -> None:
    _, repository = guarded
    traversal = _tar(tmp_path / "up.tar", [_file("manifest.json", b"{}"), _file("../escape", b"x")])
    refused = _refused_upload(guarded, tls_files, traversal, "escape")
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "parent-relative" in refused.details and "upload 'escape'" in refused.details
    assert not (repository.parent / "escape").exists()
    link = tarfile.TarInfo("manifest.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    linked = _tar(tmp_path / "link.tar", [(link, None)])
    refused = _refused_upload(guarded, tls_files, linked, "linked")
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "only files and folders" in refused.details


def test_tampered_bundle_is_refused(
    guarded: tuple[NodeProcess, Path],
    tls_files: dict[str, Path],
    bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    bundle = shutil.copytree(bundles["snn"], tmp_path / "tampered")
    (bundle / "config.json").write_text('{"tampered": true}')
    refused = _refused_upload(guarded, tls_files, bundle, "tampered")
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.json does not match its SHA-256" in refused.details


def test_oversized_upload_is_resource_exhausted_naming_the_limit(
    guarded: tuple[NodeProcess, Path], tls_files: dict[str, Path], tmp_path: Path
) -> None:
    big = _tar(tmp_path / "big.tar", [_file("weights.bin", bytes(2 << 20))])
    refused = _refused_upload(guarded, tls_files, big, "big")
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(1 << 20) in refused.details


def _raw_upload(
    node: NodeProcess, tls: dict[str, Path], header: Any, data: bytes, folder: Path
) -> None:
    archive = folder / "raw.bin"
    archive.write_bytes(data)

    async def send() -> None:
        async with _client(node, tls) as client:
            await client.upload_archive(header, archive)

    asyncio.run(send())


@pytest.mark.parametrize(
    "announced, digest, words",
    [
        (10, None, "more than the 10 bytes the header announced"),
        (100, None, "received 64 bytes, the header announced 100"),
        (64, "0" * 64, "SHA-256 does not match"),
        (64, "xyz", "64 hex digits"),
    ],
    ids=["longer", "shorter", "sha256", "bad-digest"],
)
def test_uploads_that_disagree_with_their_header_are_refused(
    guarded: tuple[NodeProcess, Path],
    tls_files: dict[str, Path],
    announced: int,
    digest: str | None,
    words: str,
    tmp_path: Path,
) -> None:
    node, repository = guarded
    data = bytes(range(64))
    header = control_pb2.UploadHeader(
        name="liar", size=announced, sha256=digest or hashlib.sha256(data).hexdigest()
    )
    with pytest.raises(NodeCallError) as caught:
        _raw_upload(node, tls_files, header, data, tmp_path)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details
    assert not (repository / "liar").exists()
    _still_up(node, tls_files)


def test_installed_name_needs_replace(
    guarded: tuple[NodeProcess, Path],
    tls_files: dict[str, Path],
    signing_keys: dict[str, Path],
    bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    node, repository = guarded
    bundle = shutil.copytree(bundles["snn"], tmp_path / "twice")
    assert main_sign(bundle, signing_keys["trusted"], tmp_path / "twice.sig") == 0
    first = _upload(node, tls_files, bundle, "twice")
    assert not first.loaded and (repository / "twice" / "manifest.json").is_file()
    with pytest.raises(NodeCallError) as caught:
        _upload(node, tls_files, bundle, "twice")
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    again = _upload(node, tls_files, bundle, "twice", replace=True, load=True)
    assert again.loaded and again.signed_by == "release.pem"
    refused = _refused_upload(guarded, tls_files, bundle, "snn")
    assert refused.code == grpc.StatusCode.ALREADY_EXISTS and "given at start" in refused.details
