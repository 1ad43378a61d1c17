"""What a node is started with (``ganglion serve``'s options), checked once."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from ganglion.models.errors import GanglionError, OptionError, file_problem
from ganglion.runtime.serving.kserve_tensors import MAX_MESSAGE_BYTES

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
BACKEND_CHOICES = ("auto", "onnxruntime", "torch", "tensorrt", "lava")
AUTO_BACKENDS = ("onnxruntime", "torch")  # tried in order by "auto"
# on a CUDA node where the tensorrt package is installed, "auto" builds an engine there first
MiB = 1 << 20


class SettingsError(GanglionError):
    """A node setting it cannot use: a missing bundle or file, a name, an address it cannot
    listen on (an option out of range is an ``OptionError``: the command line exits 2)."""


def grpc_address(host: str, port: int) -> str:
    """HOST:PORT as gRPC takes it: an IPv6 host in brackets, written with or without them
    (``--host ::1`` and ``--host [::1]`` both listen on [::1])."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address (or localhost): a server there is reachable
    from this machine only. 0.0.0.0 and :: are not (gRPC listens on every address, IPv4 and
    IPv6, for either)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def package_version() -> str:
    """Ganglion's installed version (what ServerMetadata reports), "0" when not installed."""
    from importlib import metadata

    try:
        return metadata.version("ganglion")
    except metadata.PackageNotFoundError:
        return "0"


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name, else GanglionError saying what is allowed."""
    if not MODEL_NAME.match(name):
        raise SettingsError(
            f"model name {name!r} must be 1-64 of A-Z a-z 0-9 _ . - and not start with . or -"
        )
    return name


@dataclass
class NodeSettings:
    """A node's configuration; ``check()`` raises OptionError naming an option out of range,
    SettingsError naming a file it cannot use."""

    bundles: list[Path] = field(default_factory=list)  # loaded at start, named after the path
    host: str = "127.0.0.1"
    port: int = 8001  # Triton's gRPC port; 0 picks a free one
    device: str = "auto"  # device profile for telemetry ("auto": what detect() finds)
    backend: str = "auto"
    backend_device: str = "cpu"  # where sessions run: cpu | cuda
    repository: Path | None = None  # where uploads are installed (None: uploads refused)
    max_concurrency: int = 64  # requests admitted at once, node-wide
    max_sequences: int = 256  # live sequences per model
    max_sequence_state_bytes: int = 1024 * MiB  # their states together, per model
    sequence_idle_s: float = 60.0
    max_message_bytes: int = 64 * MiB  # one gRPC message, either way
    max_upload_bytes: int = 1024 * MiB  # one bundle archive, and its files unpacked
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # given: clients must present a certificate it signed
    token_file: Path | None = None
    trusted_keys: Path | None = None  # folder of EC public keys (.pem): uploads must be signed
    simulate_energy: bool = False  # use the device profile's power even where a meter reads
    root: str = "/"  # filesystem root for detection and meters (tests use fixture trees)

    def check(self) -> NodeSettings:
        """Validate every option; returns self."""
        if self.backend not in BACKEND_CHOICES:
            raise OptionError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}")
        if not 0 <= self.port <= 65535:
            raise OptionError(f"--port must be in [0, 65535], got {self.port}")
        for option, value in (
            ("--max-concurrency", self.max_concurrency),
            ("--max-sequences", self.max_sequences),
            ("--max-sequence-state-mb", self.max_sequence_state_bytes),
            ("--max-message-mb", self.max_message_bytes),
            ("--max-upload-mb", self.max_upload_bytes),
        ):
            if value < 1:
                given = value // MiB if option.endswith("-mb") else value  # as the user wrote it
                raise OptionError(f"{option} must be at least 1, got {given}")
        if self.max_message_bytes > MAX_MESSAGE_BYTES:
            raise OptionError("--max-message-mb must be below 2048 (gRPC's int32 limit)")
        if not self.sequence_idle_s > 0:
            raise OptionError(f"--sequence-idle-s must be positive, got {self.sequence_idle_s}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise OptionError("--tls-cert and --tls-key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise OptionError("--tls-ca (client certificates) needs --tls-cert and --tls-key")
        for option, path in (
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--tls-ca", self.tls_ca),
            ("--token-file", self.token_file),
        ):
            if path is not None and (problem := file_problem(path)) is not None:
                raise SettingsError(f"{option} {path}: {problem}")
        if self.trusted_keys is not None and not self.trusted_keys.is_dir():
            raise SettingsError(f"--trusted-keys {self.trusted_keys}: not a folder")
        return self

    @property
    def tls(self) -> bool:
        """True when the node serves TLS."""
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        """True when the node listens on a loopback address only."""
        return is_loopback(self.host)

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends tried in order when loading a model."""
        if self.backend != "auto":
            return (self.backend,)
        if self.backend_device.startswith("cuda") and importlib.util.find_spec("tensorrt"):
            return ("tensorrt", *AUTO_BACKENDS)
        return AUTO_BACKENDS
