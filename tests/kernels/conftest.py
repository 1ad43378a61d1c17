"""Kernel tests run the Triton kernels on CPU tensors through the Triton interpreter.

``TRITON_INTERPRET`` is read when a ``@triton.jit`` function is defined, so it is set here,
before the test modules import the kernel files, and kernel files that another test already
imported are re-imported under it.
"""

import importlib
import os
import sys
from collections.abc import Callable

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "0":  # "0": compiled, on a GPU (kernels/testing.py)
    os.environ["TRITON_INTERPRET"] = "1"
_loaded = [
    m
    for m in sys.modules
    if m.startswith("ganglion.kernels.") and m.rsplit(".", 1)[-1].startswith("triton")
]
for _name in _loaded:
    importlib.reload(sys.modules[_name])

TOLERANCES = {  # input dtype -> (atol, rtol), compared in fp32
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 2e-2),  # 8 mantissa bits: outputs rounded to 2^-8 of their size
}


@pytest.fixture
def assert_close() -> Callable[..., None]:
    """``assert_close(what, ref, out, dtype)``: ``out`` matches ``ref`` within the tolerance of
    the inputs' ``dtype`` and holds no NaN (a skipped write leaves the NaN fill visible)."""

    def check(what: str, ref: torch.Tensor, out: torch.Tensor, dtype: torch.dtype) -> None:
        assert out.shape == ref.shape, f"{what}: shape {list(out.shape)} != {list(ref.shape)}"
        assert not out.isnan().any(), f"{what}: NaN in output (unwritten buffer?)"
        atol, rtol = TOLERANCES[dtype]
        torch.testing.assert_close(
            out.float(), ref.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}"
        )

    return check


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """New buffers start as NaN (floats) or 7 (ints) so a kernel that skips a write fails."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan") if t.is_floating_point() else 7) if t.numel() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: fill(empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: fill(empty_like(*a, **kw)))
