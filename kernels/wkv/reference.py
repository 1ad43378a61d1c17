"""Plain PyTorch WKV (SpikeGPT / RWKV-4): the ground truth for ``triton.py``.

``y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same without v)``, computed as a
scan over ``(a, b, p)``: ``a`` and ``b`` are numerator and denominator scaled by ``e^{-p}``,
``p`` the running max exponent, so no ``exp`` ever overflows (derivation in README.md).
"""

import torch

from ganglion.kernels.checks import (
    FLOAT_DTYPES,
    expect_dtype,
    expect_ndim,
    expect_same_device,
    expect_shape,
)

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
P_INIT = -1e38


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
