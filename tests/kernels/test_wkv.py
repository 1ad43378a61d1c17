"""WKV kernels against the token-by-token reference; scan against repeated steps; the chunked
forms (reference and kernel) against the token-by-token reference."""

from functools import partial

import pytest
import torch

from ganglion.kernels.testing import kernel_test_device
from ganglion.kernels.wkv import wkv_initial_state, wkv_scan, wkv_step
from ganglion.kernels.wkv.reference import wkv_chunk_reference, wkv_scan_reference
from ganglion.kernels.wkv.triton import wkv_scan_triton
from ganglion.kernels.wkv.triton_chunk import ChunkLaunch, wkv_chunk_triton

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


# ---- chunked forms -----------------------------------------------------------------------------

CHUNK_CASES = [(2, 32, 5, 8), (2, 37, 5, 8), (1, 5, 3, 8), (1, 9, 4, 1)]  # [B, T, C], chunk size
# Tiny launch shapes for the interpreter: rows past T, several blocks and channel blocks, segments.
LAUNCHES = {
    "one-block": ((1, 5, 3), ChunkLaunch(block=4, chunk=2, groups=4, num_warps=1)),
    "blocks": ((2, 13, 19), ChunkLaunch(block=16, chunk=2, groups=4, num_warps=1)),
    "segments": ((1, 23, 5), ChunkLaunch(block=8, chunk=2, groups=2, num_warps=1, segments=3)),
    # The GPU's shape: segment sums over 8 rows across 2 warps. Compiled on an H200 with this
    # launch at T=1024, C=768, summing the rows with tl.reduce (whose order is the compiler's)
    # gave output errors of 0.11-0.13; the interpreter cannot show it, a GPU run can.
    "segments-8-rows": (
        (1, 300, 40),
        ChunkLaunch(block=32, chunk=16, groups=8, num_warps=2, segments=2),
    ),
}


def _extreme_args(b: int, t: int, c: int) -> tuple[torch.Tensor, ...]:
    """Decays from -1e-4 to -400 per token, keys far past where ``exp`` overflows fp32."""
    g = torch.Generator().manual_seed(b * 1000 + t * 100 + c)
    w = -torch.exp(torch.linspace(-9.0, 6.0, c))
    u = torch.randn(c, generator=g)
    k = torch.randn(b, t, c, generator=g) * 100.0
    v = torch.randn(b, t, c, generator=g)
    return tuple(x.to(DEVICE) for x in (w, u, k, v))


def _assert_same_wkv(assert_close, ref, out, dtype: torch.dtype) -> None:
    (ref_y, ref_state), (y, state) = ref, out
    assert y.dtype == ref_y.dtype
    assert_close("y", ref_y, y, dtype)
    for name, r, o in zip("abp", ref_state, state, strict=True):
        assert_close(f"state {name}", r, o, torch.float32)


@pytest.mark.parametrize("regime", ["typical", "extreme"])
@pytest.mark.parametrize("warm", [False, True], ids=["empty-state", "warm-state"])
@pytest.mark.parametrize("case", CHUNK_CASES, ids=lambda s: "B{}-T{}-C{}-chunk{}".format(*s))
def test_wkv_chunk_reference_matches_scan_reference(case, warm, regime, assert_close):
    b, t, c, chunk_size = case
    args = _extreme_args(b, t, c) if regime == "extreme" else _args(b, t, c, torch.float32)
    if regime == "extreme":
        assert args[2].abs().max() > 88.0  # exp(k) alone would be inf in fp32
    state = _warm_state(b, c) if warm else None
    out = wkv_chunk_reference(*args, state, chunk_size=chunk_size)
    _assert_same_wkv(assert_close, wkv_scan_reference(*args, state), out, torch.float32)


def test_wkv_chunk_reference_gradients_equal_the_scans(assert_close):
    g = torch.Generator().manual_seed(3)
    time_decay, u = (torch.randn(6, generator=g).to(DEVICE).requires_grad_() for _ in range(2))
    k, v = (torch.randn(2, 13, 6, generator=g).to(DEVICE).requires_grad_() for _ in range(2))
    weights = [torch.randn(2, 13, 6, generator=g).to(DEVICE)]
    weights += [torch.randn(2, 6, generator=g).to(DEVICE) for _ in range(3)]
    grads = []
    for scan in (wkv_scan_reference, partial(wkv_chunk_reference, chunk_size=4)):
        y, state = scan(-torch.exp(time_decay), u, k, v)
        loss = sum((x * wt).sum() for x, wt in zip((y, *state), weights, strict=True))
        grads.append(torch.autograd.grad(loss, (time_decay, u, k, v)))
    for name, r, o in zip(["time_decay", "u", "k", "v"], *grads, strict=True):
        assert_close(f"d loss / d {name}", r, o, torch.float32)


@pytest.mark.parametrize("warm", [False, True], ids=["empty-state", "warm-state"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape, launch", LAUNCHES.values(), ids=LAUNCHES.keys())
def test_wkv_chunk_kernel_matches_reference(shape, launch, dtype, warm, assert_close):
    args = _args(*shape, dtype)
    state = _warm_state(shape[0], shape[2]) if warm else None
    given = None if state is None else tuple(s.clone() for s in state)
    out = wkv_chunk_triton(*args, state, launch=launch)
    _assert_same_wkv(assert_close, wkv_scan_reference(*args, state), out, dtype)
    assert given is None or all(torch.equal(s, g) for s, g in zip(state, given, strict=True))


def test_wkv_chunk_kernel_default_launch_matches_reference(assert_close):
    args = _args(2, 40, 8, torch.float32)
    state = _warm_state(2, 8)
    out = wkv_chunk_triton(*args, state)
    _assert_same_wkv(assert_close, wkv_scan_reference(*args, state), out, torch.float32)


@pytest.mark.parametrize(
    "shape, launch", [LAUNCHES["blocks"], LAUNCHES["segments"]], ids=["blocks", "segments"]
)
def test_wkv_chunk_kernel_handles_extreme_decays_and_keys(shape, launch, assert_close):
    args = _extreme_args(*shape)
    state = _warm_state(shape[0], shape[2])
    out = wkv_chunk_triton(*args, state, launch=launch)
    _assert_same_wkv(assert_close, wkv_scan_reference(*args, state), out, torch.float32)


@pytest.mark.parametrize(
    "chunked", [wkv_chunk_reference, wkv_chunk_triton], ids=["reference", "kernel"]
)
def test_wkv_chunk_forms_pass_the_state_through_an_empty_sequence(chunked):
    w, u, k, v = _args(2, 0, 3, torch.float32)
    state = _warm_state(2, 3)
    y, out = chunked(w, u, k, v, state)
    assert y.shape == (2, 0, 3)
    assert all(torch.equal(s, o) for s, o in zip(state, out, strict=True))


@pytest.mark.parametrize(
    "use_kernel, short, chunked",
    [(False, "wkv_scan_reference", "wkv_chunk_reference"),
     (True, "wkv_scan_triton", "wkv_chunk_triton")],
    ids=["reference", "kernel"],
)  # fmt: skip
def test_wkv_scan_takes_the_chunked_form_for_long_sequences(
    use_kernel, short, chunked, monkeypatch
):
    import ganglion.kernels.wkv as wkv
    import ganglion.kernels.wkv.triton as wkv_triton
    import ganglion.kernels.wkv.triton_chunk as wkv_triton_chunk

    called = []
    for module, name in [
        (wkv, "wkv_scan_reference"),
        (wkv, "wkv_chunk_reference"),
        (wkv_triton, "wkv_scan_triton"),
        (wkv_triton_chunk, "wkv_chunk_triton"),
    ]:
        monkeypatch.setattr(module, name, lambda *a, name=name: called.append(name))  # fmt: skip
    threshold = wkv.KERNEL_CHUNKED_FROM_T if use_kernel else wkv.REFERENCE_CHUNKED_FROM_T
    for length in (1, threshold - 1, threshold):
        wkv_scan(*_args(1, length, 2, torch.float32), use_kernel=use_kernel)
    assert called == [short, short, chunked]


def test_wkv_chunk_forms_reject_bad_arguments():
    w, u, k, v = _args(1, 4, 3, torch.float32)
    with pytest.raises(ValueError, match="expected chunk_size >= 1, got 0"):
        wkv_chunk_reference(w, u, k, v, chunk_size=0)
    with pytest.raises(ValueError, match="expected v of shape"):
        wkv_chunk_triton(w, u, k, v[:, :2])
    with pytest.raises(ValueError, match="expected groups a power of two >= 1, got 3"):
        ChunkLaunch(block=4, chunk=2, groups=3, num_warps=1)
    with pytest.raises(ValueError, match="expected segments >= 1, got 0"):
        ChunkLaunch(block=4, chunk=2, groups=2, num_warps=1, segments=0)
