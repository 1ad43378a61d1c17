"""The kernel switch: Triton on CUDA unless disabled, the reference otherwise."""

from types import SimpleNamespace

import pytest
import torch

from ganglion.kernels.dispatch import use_triton
from ganglion.kernels.gla import gla_chunk
from ganglion.kernels.lif import lif_scan
from ganglion.kernels.switch import kernels_enabled
from ganglion.kernels.wkv import wkv_scan

CUDA = SimpleNamespace(is_cuda=True)
CPU = SimpleNamespace(is_cuda=False)


def test_kernels_are_used_for_cuda_tensors_by_default(monkeypatch):
    monkeypatch.delenv("GANGLION_KERNELS", raising=False)
    assert kernels_enabled()
    assert use_triton(None, CUDA, CUDA)
    assert not use_triton(None, CUDA, CPU)


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_env_switch_turns_kernels_off(monkeypatch, value):
    monkeypatch.setenv("GANGLION_KERNELS", value)
    assert not kernels_enabled()
    assert not use_triton(None, CUDA)


def test_explicit_choice_wins(monkeypatch):
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    assert use_triton(True, CPU)
    assert not use_triton(False, CUDA)


class KernelCalled(Exception):
    """Raised by the stand-in kernels below."""


def _kernel(*args, **kwargs):
    raise KernelCalled


def _run_ops() -> None:
    n = torch.ones(3)
    spikes, _ = lif_scan(torch.ones(2, 1, 3), torch.zeros(1, 3), n * 0.5, n, n * 0, n * 0)
    assert torch.equal(spikes, torch.tensor([[[0.0] * 3], [[1.0] * 3]]))
    y, _ = wkv_scan(-n, n, torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    assert torch.allclose(y, torch.ones(1, 2, 3))
    o, _ = gla_chunk(*(torch.ones(1, 4, 1, 16) for _ in range(4)))
    assert o.shape == (1, 4, 1, 16)


@pytest.fixture
def ops_on_fake_cuda(monkeypatch):
    """Each op sees its tensors as CUDA tensors, and its kernel is a stand-in."""
    import ganglion.kernels.gla as gla
    import ganglion.kernels.gla.triton as gla_triton
    import ganglion.kernels.lif as lif
    import ganglion.kernels.lif.triton as lif_triton
    import ganglion.kernels.wkv as wkv
    import ganglion.kernels.wkv.triton as wkv_triton

    def as_cuda(use_kernel, *tensors):
        return use_triton(use_kernel, *(CUDA for _ in tensors))

    for op in (lif, wkv, gla):
        monkeypatch.setattr(op, "use_triton", as_cuda)
    monkeypatch.setattr(lif_triton, "lif_scan_triton", _kernel)
    monkeypatch.setattr(wkv_triton, "wkv_scan_triton", _kernel)
    monkeypatch.setattr(gla_triton, "chunk_gla_triton", _kernel)


@pytest.mark.usefixtures("ops_on_fake_cuda")
def test_disabled_kernels_fall_back_to_reference(monkeypatch):
    monkeypatch.setenv("GANGLION_KERNELS", "1")
    with pytest.raises(KernelCalled):
        _run_ops()
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    _run_ops()


def test_reference_kernels_turns_compiled_paths_off_inside_only(monkeypatch):
    from ganglion.kernels.switch import reference_kernels

    monkeypatch.delenv("GANGLION_KERNELS", raising=False)
    with reference_kernels():
        assert not kernels_enabled()
    assert kernels_enabled()
