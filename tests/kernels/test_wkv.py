"""WKV kernel against its reference; scan against repeated steps."""

import pytest
import torch

from ganglion.kernels.testing import kernel_test_device
from ganglion.kernels.wkv import wkv_initial_state, wkv_scan, wkv_step
from ganglion.kernels.wkv.reference import wkv_scan_reference
from ganglion.kernels.wkv.triton import wkv_scan_triton

DEVICE = kernel_test_device()  # "cuda" when the suite runs compiled (TRITON_INTERPRET=0)

SHAPES = [(1, 1, 1), (1, 17, 37), (3, 9, 130)]  # [B, T, C]; 130 spans three channel blocks


def _args(b: int, t: int, c: int, dtype: torch.dtype, k_scale: float = 3.0):
    g = torch.Generator().manual_seed(b * 1000 + t * 100 + c)
    w = -torch.exp(torch.randn(c, generator=g))
    u = torch.randn(c, generator=g)
    k = (torch.randn(b, t, c, generator=g) * k_scale).to(dtype)
    v = torch.randn(b, t, c, generator=g).to(dtype)
    return tuple(x.to(DEVICE) for x in (w, u, k, v))


def _warm_state(b: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    state = torch.randn(b, c, generator=g), torch.rand(b, c, generator=g) + 0.5, torch.randn(b, c)
    return tuple(x.to(DEVICE) for x in state)


@pytest.mark.parametrize("warm", [False, True], ids=["empty-state", "warm-state"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-C{}".format(*s))
def test_wkv_scan_kernel_matches_reference(shape, dtype, warm, assert_close):
    w, u, k, v = _args(*shape, dtype)
    state = _warm_state(shape[0], shape[2]) if warm else None
    ref_y, ref_state = wkv_scan_reference(w, u, k, v, state)
    y, out_state = wkv_scan_triton(w, u, k, v, state)
    assert y.dtype == dtype
    assert_close("y", ref_y, y, dtype)
    for name, r, o in zip("abp", ref_state, out_state, strict=True):
        assert_close(f"state {name}", r, o, torch.float32)


@pytest.mark.parametrize("use_kernel", [False, True], ids=["reference", "kernel"])
def test_wkv_stays_finite_with_large_keys(use_kernel):
    w, u, k, v = _args(2, 12, 19, torch.float32, k_scale=60.0)
    y, state = wkv_scan(w, u, k, v, use_kernel=use_kernel)
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in state)


@pytest.mark.parametrize("use_kernel", [False, True], ids=["reference", "kernel"])
def test_wkv_scan_equals_repeated_steps(use_kernel, assert_close):
    w, u, k, v = _args(2, 11, 21, torch.float32)
    y, final = wkv_scan(w, u, k, v, use_kernel=use_kernel)
    state = wkv_initial_state(2, 21, DEVICE)
    for t in range(k.shape[1]):
        y_t, state = wkv_step(w, u, k[:, t], v[:, t], state, use_kernel=use_kernel)
        assert_close(f"y[{t}]", y[:, t], y_t, torch.float32)
    for name, r, o in zip("abp", final, state, strict=True):
        assert_close(f"state {name}", r, o, torch.float32)


def test_wkv_scan_resumes_from_state(assert_close):
    w, u, k, v = _args(2, 14, 9, torch.float32)
    y, final = wkv_scan_triton(w, u, k, v)
    y1, mid = wkv_scan_triton(w, u, k[:, :5], v[:, :5])
    y2, end = wkv_scan_triton(w, u, k[:, 5:], v[:, 5:], mid)
    assert_close("y", y, torch.cat([y1, y2], dim=1), torch.float32)
    for name, r, o in zip("abp", final, end, strict=True):
        assert_close(f"state {name}", r, o, torch.float32)


def test_wkv_rejects_bad_shapes():
    w, u, k, v = _args(2, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="expected v of shape"):
        wkv_scan(w, u, k, v[:, :2])
    with pytest.raises(ValueError, match="expected w of shape"):
        wkv_scan(w[:3], u, k, v)
    with pytest.raises(ValueError, match="expected state a of shape"):
        wkv_step(w, u, k[:, 0], v[:, 0], wkv_initial_state(1, 4))
