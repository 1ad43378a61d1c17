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
