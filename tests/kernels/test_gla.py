"""GLA kernels (chunkwise and fused recurrent) and the chunkwise PyTorch reference against the
loop reference; chunk against repeated recurrent steps."""

import pytest
import torch
import torch.nn.functional as F

from ganglion.kernels.gla import gla_chunk, gla_recurrent_step
from ganglion.kernels.gla.reference import gla_chunk_reference, gla_recurrent_reference
from ganglion.kernels.gla.triton import (
    DIAG_EXP_LIMIT,
    StateLaunch,
    chunk_gla_triton,
    default_state_launch,
    fused_recurrent_gla_triton,
)
from ganglion.kernels.testing import kernel_test_device

DEVICE = kernel_test_device()  # "cuda" when the suite runs compiled (TRITON_INTERPRET=0)
# bf16 on the GPU only: the interpreter runs on numpy, which has no bf16 matmul.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])

# [B, T, H, K, V, chunk]: T not a multiple of the chunk, K/V not multiples of 16 or 64,
# K = 80 spans two K blocks, chunk 32 exercises the off-diagonal sub-chunks.
SHAPES = [
    (1, 1, 1, 16, 16, 16),
    (1, 37, 2, 20, 24, 16),
    (2, 45, 1, 32, 16, 32),
    (2, 19, 2, 80, 8, 16),
]
IDS = "B{}-T{}-H{}-K{}-V{}-C{}"


def _args(b, t, h, dk, dv, dtype, gate_scale=2.0):
    gen = torch.Generator().manual_seed(b * 1000 + t * 10 + h + dk + dv)
    q = torch.randn(b, t, h, dk, generator=gen).to(dtype)
    k = torch.randn(b, t, h, dk, generator=gen).to(dtype)
    v = torch.randn(b, t, h, dv, generator=gen).to(dtype)
    g = F.logsigmoid(torch.randn(b, t, h, dk, generator=gen) * gate_scale).to(dtype)
    h0 = torch.randn(b, h, dk, dv, generator=gen)
    return tuple(x.to(DEVICE) for x in (q, k, v, g, h0))


@pytest.mark.parametrize("warm", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: IDS.format(*s))
def test_chunk_gla_kernel_matches_reference(shape, dtype, warm, assert_close):
    *dims, chunk = shape
    q, k, v, g, h0 = _args(*dims, dtype)
    h0 = h0 if warm else None
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = chunk_gla_triton(q, k, v, g, None, h0, True, chunk)
    assert o.dtype == dtype
    assert_close("o", ref_o, o, dtype)
    assert_close("final state", ref_state, state, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: IDS.format(*s))
def test_fused_recurrent_gla_kernel_matches_reference(shape, dtype, assert_close):
    q, k, v, g, h0 = _args(*shape[:5], dtype)
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, 0.3, h0)
    o, state = fused_recurrent_gla_triton(q, k, v, g, 0.3, h0, True)
    assert_close("o", ref_o, o, dtype)
    assert_close("final state", ref_state, state, dtype)


def test_chunk_gla_is_stable_under_strong_decay(assert_close):
    q, k, v, g, h0 = _args(1, 64, 1, 16, 16, torch.float32, gate_scale=20.0)
    assert g.min() < -20  # a chunk's gate product is far below fp32's range
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = chunk_gla_triton(q, k, v, g, None, h0, True, 64)
    assert_close("o", ref_o, o, torch.float32)
    assert_close("final state", ref_state, state, torch.float32)


# [B, T, H, K, V, chunk] and the inter-chunk launch: one pass with small tiles; 10 chunks in
# 3 segments (4, 4, 2) with K and V split in two tiles each; more segments than chunks (one
# chunk each, the last partial); a sequence shorter than a chunk (one segment whatever is asked).
LAUNCH_CASES = [
    ((1, 150, 1, 20, 24, 16), StateLaunch(16, 16, 1)),
    ((1, 150, 1, 20, 24, 16), StateLaunch(16, 16, 3)),
    ((2, 70, 1, 16, 40, 32), StateLaunch(16, 32, 64)),
    ((1, 9, 2, 16, 16, 16), StateLaunch(16, 16, 4)),
]
LAUNCH_IDS = [IDS.format(*s) + f"-S{launch.segments}" for s, launch in LAUNCH_CASES]


@pytest.mark.parametrize("warm", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "launch"), LAUNCH_CASES, ids=LAUNCH_IDS)
def test_chunk_gla_segments_match_reference(shape, launch, dtype, warm, assert_close):
    *dims, chunk = shape
    q, k, v, g, h0 = _args(*dims, dtype)
    h0 = h0 if warm else None
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = chunk_gla_triton(q, k, v, g, None, h0, True, chunk, launch=launch)
    assert_close("o", ref_o, o, dtype)
    assert_close("final state", ref_state, state, dtype)


@pytest.mark.parametrize("segments", [1, 3], ids=["one-pass", "segments"])
def test_chunk_gla_segments_are_stable_under_strong_decay(segments, assert_close):
    q, k, v, g, h0 = _args(1, 96, 1, 16, 16, torch.float32, gate_scale=20.0)
    assert g.unflatten(1, (6, 16)).sum(2).min() < -88  # exp(-G) of a chunk would overflow fp32
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    launch = StateLaunch(16, 16, segments)
    o, state = chunk_gla_triton(q, k, v, g, None, h0, True, 16, launch=launch)
    assert_close("o", ref_o, o, torch.float32)
    assert_close("final state", ref_state, state, torch.float32)


def test_chunk_gla_scores_mix_matmul_and_log_space_diagonal(assert_close):
    # K = 80 spans two K tiles of 64: gentle gates in the first (the diagonal block is a
    # matmul), strong ones in the second (it is computed element-wise in log space)
    q, k, v, g, h0 = _args(1, 32, 1, 80, 16, torch.float32)
    strong = _args(1, 32, 1, 80, 16, torch.float32, gate_scale=20.0)[3]
    g = torch.cat([g[..., :64], strong[..., 64:]], -1)
    spans = -g.unflatten(1, (2, 16))[:, :, 1:].sum(2)  # [B, blocks, H, K] span of each block
    assert spans[..., :64].max() <= DIAG_EXP_LIMIT.value < spans[..., 64:].max()
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = chunk_gla_triton(q, k, v, g, None, h0, True, 32)
    assert_close("o", ref_o, o, torch.float32)
    assert_close("final state", ref_state, state, torch.float32)


def test_default_state_launch_segments_only_small_grids():
    sms = 132  # H200; heads B*H = 8 or 128, K = 64, V = 128 as in benchmarks/kernels.py
    # T = 16384 in chunks of 64, B = 1: one pass would be 16 programs walking 256 chunks
    assert default_state_launch(8, 256, 64, 128, sms) == StateLaunch(64, 64, 16)
    # 128 chunks of one head: 32 segments of 4 chunks, then tiles halved to 4 programs each
    assert default_state_launch(1, 128, 64, 64, sms) == StateLaunch(32, 32, 32)
    # B = 16: 256 programs already fill the GPU, one pass
    assert default_state_launch(128, 256, 64, 128, sms) == StateLaunch(64, 64, 1)
    # T = 4096, B = 1: a walk of 64 chunks is short enough for one pass
    assert default_state_launch(8, 64, 64, 128, sms) == StateLaunch(64, 64, 1)
    # tiles shrink to the head dims: one pass
    assert default_state_launch(1, 3, 16, 16, sms) == StateLaunch(16, 16, 1)


def test_state_launch_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected bv a power of two >= 16"):
        StateLaunch(16, 8)
    with pytest.raises(ValueError, match="expected segments >= 1"):
        StateLaunch(16, 16, 0)


@pytest.mark.parametrize("use_kernel", [False, True], ids=["reference", "kernel"])
def test_gla_chunk_equals_repeated_steps(use_kernel, assert_close):
    q, k, v, g, state = _args(2, 21, 2, 16, 8, torch.float32)
    o, final = gla_chunk(q, k, v, g, None, state, True, 16, use_kernel=use_kernel)
    for t in range(q.shape[1]):
        o_t, state = gla_recurrent_step(
            q[:, t], k[:, t], v[:, t], g[:, t], state, use_kernel=use_kernel
        )
        assert_close(f"o[{t}]", o[:, t], o_t, torch.float32)
    assert_close("final state", final, state, torch.float32)


def test_gla_chunk_returns_state_only_when_asked():
    q, k, v, g, _ = _args(1, 5, 1, 16, 16, torch.float32)
    assert gla_chunk(q, k, v, g)[1] is None
    assert chunk_gla_triton(q, k, v, g)[1] is None


def test_gla_rejects_bad_arguments():
    q, k, v, g, h0 = _args(1, 5, 2, 16, 8, torch.float32)
    with pytest.raises(ValueError, match="expected k of shape"):
        gla_chunk(q, k[:, :4], v, g)
    with pytest.raises(ValueError, match="expected state of shape"):
        gla_chunk(q, k, v, g, initial_state=h0[:, :1])
    with pytest.raises(ValueError, match="expected chunk_size"):
        chunk_gla_triton(q, k, v, g, chunk_size=24)
    with pytest.raises(ValueError, match=r"expected q_t \[B, H, K\]"):
        gla_recurrent_step(q, k[:, 0], v[:, 0], g[:, 0], h0)


# [B, T, H, K, V, chunk] for the chunkwise reference: one chunk, several, a partial last chunk,
# chunks of several 8-token sub-chunks, and a chunk size that is not a multiple of 8.
REFERENCE_SHAPES = SHAPES + [(2, 130, 2, 16, 12, 64), (1, 33, 1, 4, 4, 7), (1, 40, 3, 8, 8, 16)]


@pytest.mark.parametrize("warm", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", REFERENCE_SHAPES, ids=lambda s: IDS.format(*s))
def test_chunk_reference_matches_loop_reference(shape, dtype, warm, assert_close):
    *dims, chunk = shape
    q, k, v, g, h0 = _args(*dims, dtype)
    h0 = h0 if warm else None
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = gla_chunk_reference(q, k, v, g, None, h0, True, chunk)
    assert o.dtype == dtype
    assert_close("o", ref_o, o, dtype)
    assert_close("final state", ref_state, state, dtype)


def test_chunk_reference_is_stable_under_strong_decay(assert_close):
    q, k, v, g, h0 = _args(1, 64, 1, 16, 16, torch.float32, gate_scale=20.0)
    assert g.sum(1).min() < -200  # exp(-G) of a chunk would overflow fp32
    q.requires_grad_(True)
    ref_o, ref_state = gla_recurrent_reference(q, k, v, g, None, h0)
    o, state = gla_chunk_reference(q, k, v, g, None, h0, True, 64)
    assert_close("o", ref_o, o, torch.float32)
    assert_close("final state", ref_state, state, torch.float32)
    (grad,) = torch.autograd.grad(o.sum(), q)
    assert grad.isfinite().all()


def test_chunk_reference_gradients_match_loop_reference(assert_close):
    inputs = [x.requires_grad_(True) for x in _args(2, 37, 2, 8, 8, torch.float32)]
    q, k, v, g, h0 = inputs
    weights = torch.randn(2, 37, 2, 8, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    grads = []
    for fn in (gla_recurrent_reference, lambda *a: gla_chunk_reference(*a, True, 16)):
        o, state = fn(q, k, v, g, None, h0)
        grads.append(torch.autograd.grad((o * weights).sum() + state.sum(), inputs))
    for name, ref, got in zip("q k v g h0".split(), *grads, strict=True):
        assert_close(f"d{name}", ref, got, torch.float32)


def test_chunk_reference_rejects_a_zero_chunk():
    q, k, v, g, _ = _args(1, 5, 1, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="expected chunk_size >= 1"):
        gla_chunk_reference(q, k, v, g, chunk_size=0)
