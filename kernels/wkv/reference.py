"""Plain PyTorch WKV (SpikeGPT / RWKV-4): the ground truth for ``triton.py`` and
``triton_chunk.py``.

``y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same without v)``, computed as a
scan over ``(a, b, p)``: ``a`` and ``b`` are numerator and denominator scaled by ``e^{-p}``,
``p`` the running max exponent, so no ``exp`` ever overflows (derivation in README.md).
``wkv_scan_reference`` is the spec, one token at a time; ``wkv_chunk_reference`` is the same
function in chunks (fewer, larger tensor operations: the faster form for long sequences).
"""

import torch
import torch.nn.functional as F

from ganglion.kernels.checks import (
    FLOAT_DTYPES,
    expect_dtype,
    expect_ndim,
    expect_same_device,
    expect_shape,
)
from ganglion.kernels.empty_states import EMPTY_WKV_P

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
P_INIT = EMPTY_WKV_P
CHUNK_SIZE = 32  # tokens per chunk of wkv_chunk_reference (fastest on CPU at T = 1024)


def wkv_initial_state(batch: int, channels: int, device: torch.device | str = "cpu") -> State:
    """Empty WKV state ``(a, b, p)``, each ``[B, C]`` fp32: ``a = b = 0``, ``p = -1e38``."""
    a = torch.zeros(batch, channels, dtype=torch.float32, device=device)
    return a, a.clone(), torch.full_like(a, P_INIT)


def check_wkv_args(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Validate ``w, u`` ``[C]`` and ``k, v`` ``[B, T, C]``."""
    expect_ndim("k", k, 3, "[B, T, C]")
    expect_dtype("k", k, FLOAT_DTYPES)
    expect_shape("v", v, k.shape)
    expect_dtype("v", v, FLOAT_DTYPES)
    for name, p in (("w", w), ("u", u)):
        expect_shape(name, p, (k.shape[2],))
        expect_dtype(name, p, FLOAT_DTYPES)
    expect_same_device(w=w, u=u, k=k, v=v)


def check_wkv_state(state: State, batch: int, channels: int) -> None:
    """Validate a state tuple ``(a, b, p)``, each ``[B, C]`` fp32."""
    if len(state) != 3:
        raise ValueError(f"expected state (a, b, p), got a tuple of {len(state)}")
    for name, s in zip("abp", state, strict=True):
        expect_shape(f"state {name}", s, (batch, channels))
        expect_dtype(f"state {name}", s, (torch.float32,))


def wkv_step_reference(
    w: torch.Tensor, u: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, state: State
) -> tuple[torch.Tensor, State]:
    """One WKV token.

    Args:
        w: per-channel log decay ``[C]`` (``-exp(time_decay)``, negative).
        u: per-channel bonus for the current token ``[C]`` (``time_first``).
        k_t, v_t: key and value ``[B, C]``.
        state: ``(a, b, p)``, each ``[B, C]`` fp32.

    Returns:
        ``y_t`` ``[B, C]`` in ``v_t``'s dtype and the new state.
    """
    a, b, p = state
    k, v, w, u = k_t.float(), v_t.float(), w.float(), u.float()
    q = torch.maximum(p, u + k)
    e1, e2 = torch.exp(p - q), torch.exp(u + k - q)
    y = (e1 * a + e2 * v) / (e1 * b + e2)
    q = torch.maximum(p + w, k)
    e1, e2 = torch.exp(p + w - q), torch.exp(k - q)
    return y.to(v_t.dtype), (e1 * a + e2 * v, e1 * b + e2, q)


def wkv_scan_reference(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence, one ``wkv_step_reference`` per token.

    Args:
        w, u: per-channel decay and bonus ``[C]``.
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` for an empty state.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state.
    """
    check_wkv_args(w, u, k, v)
    batch, _, channels = k.shape
    state = wkv_initial_state(batch, channels, k.device) if state is None else state
    check_wkv_state(state, batch, channels)
    ys = []
    for t in range(k.shape[1]):
        y_t, state = wkv_step_reference(w, u, k[:, t], v[:, t], state)
        ys.append(y_t)
    y = torch.stack(ys, dim=1) if ys else torch.empty_like(v)
    return y, state


def wkv_chunk_reference(
    w: torch.Tensor,
    u: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[torch.Tensor, State]:
    """WKV over a whole sequence in chunks of ``chunk_size`` tokens (``wkv_scan_reference``'s
    contract; differentiable).

    Each chunk's own tokens are summed up as a state in closed form (``_chunk_sums``), the
    states entering the chunks are passed along one merge per chunk, and then every chunk
    walks its tokens at once, each from its entering state: ``chunk_size + T / chunk_size``
    sequential steps instead of ``T`` (derivation in README.md).

    Args:
        w, u: per-channel decay (``-exp(time_decay)``) and bonus ``[C]``.
        k, v: keys and values ``[B, T, C]`` (fp32/fp16/bf16).
        state: ``(a, b, p)`` each ``[B, C]`` fp32, or ``None`` for an empty state.
        chunk_size: tokens per chunk, ``>= 1``.

    Returns:
        ``y`` ``[B, T, C]`` in ``v``'s dtype and the final state.
    """
    check_wkv_args(w, u, k, v)
    if chunk_size < 1:
        raise ValueError(f"expected chunk_size >= 1, got {chunk_size}")
    batch, length, channels = k.shape
    state = wkv_initial_state(batch, channels, k.device) if state is None else state
    check_wkv_state(state, batch, channels)
    if length == 0:
        return torch.empty_like(v), state
    size = min(chunk_size, length)
    chunks = -(-length // size)
    # [B, N, L, C] fp32; the zeros padding the last chunk only reach outputs that are dropped
    k_c, v_c = (
        F.pad(x.float(), (0, 0, 0, chunks * size - length)).unflatten(1, (chunks, size))
        for x in (k, v)
    )
    w, u = w.float(), u.float()
    counts = [size] * (chunks - 1) + [length - (chunks - 1) * size]
    sums = _chunk_sums(w, k_c, v_c, counts)  # (a, b, p) each [B, N, C]
    entering = []
    for n, count in enumerate(counts):
        entering.append(state)
        state = _merge(state, tuple(s[:, n] for s in sums), count * w)
    walk = tuple(torch.stack(s, dim=1) for s in zip(*entering, strict=True))  # [B, N, C] each
    ys = []
    for j in range(size):
        y_j, walk = wkv_step_reference(w, u, k_c[:, :, j], v_c[:, :, j], walk)
        ys.append(y_j)
    y = torch.stack(ys, dim=2).flatten(1, 2)[:, :length]
    return y.to(v.dtype), state


def _chunk_sums(w: torch.Tensor, k_c: torch.Tensor, v_c: torch.Tensor, counts: list[int]) -> State:
    """Each chunk's own tokens as a state from empty, ``(a, b, p)`` each ``[B, N, C]``.

    With ``n`` tokens in the chunk, token ``i`` enters the state after the chunk with exponent
    ``x_i = (n-1-i) w + k_i``: ``p = max_i x_i``, ``a = sum_i e^{x_i - p} v_i``,
    ``b = sum_i e^{x_i - p}``, so every ``exp`` is of a number ``<= 0``.
    """
    n = torch.tensor(counts, dtype=torch.float32, device=k_c.device)[:, None, None]  # [N, 1, 1]
    i = torch.arange(k_c.shape[2], dtype=torch.float32, device=k_c.device)[:, None]  # [L, 1]
    x = torch.where(i < n, k_c + (n - 1 - i) * w, float("-inf"))  # [B, N, L, C]
    p = x.amax(dim=2)
    e = torch.exp(x - p[:, :, None])
    return (e * v_c).sum(dim=2), e.sum(dim=2), p


def _merge(state: State, later: State, decay: torch.Tensor) -> State:
    """``state`` decayed by ``decay`` (``tokens * w``) plus ``later``, the state of the tokens
    that followed, in the same scaled form."""
    (a, b, p), (a_l, b_l, p_l) = state, later
    p = p + decay
    q = torch.maximum(p, p_l)
    e1, e2 = torch.exp(p - q), torch.exp(p_l - q)
    return e1 * a + e2 * a_l, e1 * b + e2 * b_l, q
