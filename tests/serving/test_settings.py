"""What ``ganglion serve --backend auto`` tries, in order, where."""

from __future__ import annotations

import importlib.util

import pytest

from ganglion.runtime.serving import settings as node_settings
from ganglion.runtime.serving.settings import AUTO_BACKENDS, NodeSettings


@pytest.mark.parametrize("installed", [True, False])
def test_auto_tries_tensorrt_first_only_on_a_cuda_node_that_has_it(monkeypatch, installed) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args):  # noqa: ANN202
        if name == "tensorrt":
            return real("json") if installed else None
        return real(name, *args)

    monkeypatch.setattr(node_settings.importlib.util, "find_spec", find_spec)
    on_gpu = NodeSettings(backend="auto", backend_device="cuda").backends
    assert on_gpu == (("tensorrt", *AUTO_BACKENDS) if installed else AUTO_BACKENDS)
    assert NodeSettings(backend="auto", backend_device="cpu").backends == AUTO_BACKENDS
    assert NodeSettings(backend="torch", backend_device="cuda").backends == ("torch",)


@pytest.mark.parametrize("flag", ["--max-sequence-state-mb", "--max-message-mb"])
@pytest.mark.parametrize("given", ["0", "-3"])
def test_sizes_in_mb_are_refused_as_given(flag: str, given: str, one_line_error) -> None:
    from ganglion.runtime.cli import invoke

    code, _, err = invoke("serve", "--port", "0", flag, given)
    one_line_error(code, err, f"{flag} must be at least 1, got {given}")
    assert code == 2  # an option out of range, as every command exits for one


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--backend", "nope"), ("--backend must be one of", "onnxruntime")),
        (("--port", "70000"), ("--port must be in [0, 65535], got 70000",)),
        (("--port", "0", "--tls-cert", "c.pem"), ("--tls-cert and --tls-key go together",)),
    ],
)
def test_options_out_of_range_exit_2_and_missing_files_exit_1(
    tmp_path, args: tuple[str, ...], words: tuple[str, ...], one_line_error
) -> None:
    from ganglion.runtime.cli import invoke

    code, _, err = invoke("serve", *args)
    one_line_error(code, err, *words)
    assert code == 2
    code, _, err = invoke("serve", "--port", "0", str(tmp_path / "absent"))
    one_line_error(code, err, "absent: no such bundle")
    assert code == 1


@pytest.mark.parametrize(
    ("host", "address"),
    [("::1", "[::1]:8001"), ("[::1]", "[::1]:8001"), ("127.0.0.1", "127.0.0.1:8001")],
)
def test_an_ipv6_host_is_bracketed_once_however_it_is_written(host: str, address: str) -> None:
    from ganglion.runtime.serving.settings import grpc_address, is_loopback

    assert grpc_address(host, 8001) == address
    assert is_loopback(host) and not is_loopback("0.0.0.0") and not is_loopback("::")
