"""Nodes as real processes on 127.0.0.1, the small bundles they serve, TLS certificates and
signing keys made here with ``cryptography``.

``running_node`` starts ``python -m ganglion.runtime.cli serve ...`` on a free port, waits for
``grpc.health.v1`` to say SERVING and always ends the process (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime.bundle import save_bundle

START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class NodeProcess:
    """A node started by a test: its address and its log file."""

    address: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        """What the node printed so far."""
        return self.log.read_text(errors="replace")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextlib.contextmanager
def running_node(
    args: list[str], folder: Path, credentials: grpc.ChannelCredentials | None = None
) -> Iterator[NodeProcess]:
    """``ganglion serve ARGS`` as a separate process on a free loopback port."""
    port = free_port()
    log = folder / f"node-{port}.log"
    command = [sys.executable, "-m", "ganglion.runtime.cli", "serve", *args, "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    node = NodeProcess(f"127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _serving(node.address, credentials):
            if process.poll() is not None:
                pytest.fail(f"node exited with {process.returncode}:\n{node.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"node not SERVING after {START_TIMEOUT_S} s:\n{node.log_text()}")
            time.sleep(0.2)
        yield node
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def launch_node():
    """``running_node(args, folder, credentials)``: a node process for a ``with`` block."""
    return running_node


# ---- bundles -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small bundles: ``snn`` (spiking, stateful steps), ``rwkv`` (token model with
    random weights, so its state matters) and ``dense`` (stateless, from torch.export)."""
    root = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    calib = np.random.default_rng(0).uniform(0, 1, (32, 8)).astype(np.float32)
    options = SpikingOptions(timesteps=4, encoding="direct", decoding="count")
    save_bundle(convert_spiking(mlp, calib, None, options), root / "snn")
    rwkv = sequence_model_class("rwkv").from_config(
        {"vocab_size": 32, "d_model": 16, "n_layers": 1}
    )
    with torch.no_grad():
        for parameter in rwkv.parameters():
            parameter.normal_(0.0, 0.5)
    save_bundle(sequence_deployable(rwkv), root / "rwkv")
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(mlp, (torch.zeros(2, 8),), dynamic_shapes=({0: batch},))
    save_bundle(convert_dense(exported), root / "dense")
    return {name: root / name for name in ("snn", "rwkv", "dense")}


# ---- certificates and keys ---------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    server: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and the server and client certificates it signed (PEM files)."""
    root = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("ganglion test CA", ca_key, None, server=False)
    files = {"ca": root / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"ganglion {role}", key, ("ganglion test CA", ca_key), role == "server")
        files[f"{role}_cert"] = root / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = _write_key(key, root / f"{role}.key")
    return files


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """EC signing keys: ``trusted`` and ``stranger`` private keys and a folder holding only
    the trusted one's public key."""
    root = tmp_path_factory.mktemp("keys")
    trusted_dir = root / "trusted"
    trusted_dir.mkdir()
    out = {"trusted_dir": trusted_dir}
    for who in ("trusted", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        out[who] = _write_key(key, root / f"{who}.key")
        if who == "trusted":
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            (trusted_dir / "release.pem").write_bytes(public)
    return out


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Iterator[Any]:
    """A tritonclient gRPC client of the module's ``node``."""
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(node.address) as c:
        yield c
