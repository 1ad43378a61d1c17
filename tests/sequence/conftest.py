"""Shared checks of the sequence-model tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

ATOL = RTOL = 1e-5
WKV_ATOL, WKV_RTOL = 1e-4, 1e-5  # the WKV state as a e^p and b e^p: one state, many (a, b, p)


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _close_wkv(ref: dict, got: dict, layer: str) -> None:
    """Layer ``layer``'s WKV states mean the same ``a e^p`` and ``b e^p``."""
    p_ref, p_got = ref[f"{layer}.wkv_p"], got[f"{layer}.wkv_p"]
    common = torch.maximum(p_ref, p_got)
    for part in ("a", "b"):
        name = f"{layer}.wkv_{part}"
        torch.testing.assert_close(
            got[name] * torch.exp(p_got - common),
            ref[name] * torch.exp(p_ref - common),
            atol=WKV_ATOL,
            rtol=WKV_RTOL,
            msg=lambda m, name=name: f"{name} e^p: {m}",
        )


def _close_states(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys()
    for name in ref:
        layer, _, part = name.partition(".")
        if part == "wkv_p":
            _close_wkv(ref, got, layer)
        elif part not in ("wkv_a", "wkv_b"):
            _close(ref[name], got[name], name)


@pytest.fixture(scope="session")
def same_states() -> Callable[[dict, dict], None]:
    """``same_states(ref, got)``: RWKV-style states equal within 1e-5, the WKV parts compared
    as ``a e^p`` and ``b e^p`` (the representation the scan may rescale)."""
    return _close_states


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=noise))
    return model


@pytest.fixture(scope="session")
def perturb() -> Callable[[torch.nn.Module], torch.nn.Module]:
    """``perturb(model)``: every weight moved by seeded noise (0.3 N(0, 1)), in place; fresh
    blocks are near the identity, and greedy decoding from them would repeat one token."""
    return _perturb
