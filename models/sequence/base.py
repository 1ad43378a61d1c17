"""The interface every token-sequence model implements (RWKV, SpikeGPT, GLA, GAM, GPT).

Two faces with identical results (tests prove it for every architecture):
- ``forward(ids, state)``: the parallel form over a whole sequence (training and prefill),
  starting from ``state`` (``None``: a fresh state) and returning the state after the last token;
- ``step(ids_t, state)``: the recurrent form, one token per sequence with explicit state.

State is a dict of named tensors whose names, per-sample shapes and dtypes ``state_specs``
declares (batch is axis 0, written -1; any other -1 is a dimension that grows, such as a
Transformer's KV cache). The runtime stores these specs in the manifest and the initial
values in the bundle, so ONNX Runtime and TensorRT sessions build a fresh state without torch.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from ganglion.models.manifest import TensorSpec

State = dict[str, torch.Tensor]


class SequenceModel(nn.Module):
    """A causal token model with a parallel and a recurrent face."""

    architecture: str  # registry name, e.g. "rwkv"
    vocab_size: int
    context: int | None = None  # longest sequence the model accepts; None: unbounded

    @abstractmethod
    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids [B, T] int64 -> (logits [B, T, V] float32, state after token T-1)."""

    @abstractmethod
    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids [B] int64 -> (logits [B, V] float32, new state). Must not modify ``state``."""

    @abstractmethod
    def init_state(self, batch: int) -> State:
        """A fresh state for ``batch`` sequences, on the model's device."""

    @abstractmethod
    def state_specs(self) -> list[TensorSpec]:
        """Name, shape (-1 for batch and growing dims) and dtype of every state tensor."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-able hyper-parameters that ``from_config`` rebuilds the model from."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceModel:
        """The model (freshly initialized) described by ``to_config``'s output."""


def inputs_checkable() -> bool:
    """False while tracing or exporting, where data-dependent checks cannot run."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def check_ids(ids: torch.Tensor, vocab_size: int, ndim: int) -> None:
    """Raise ValueError unless ``ids`` are integers of rank ``ndim`` within the vocabulary."""
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token ids must be int64, got {ids.dtype}")
    if ids.ndim != ndim:
        layout = "[B, T]" if ndim == 2 else "[B]"
        raise ValueError(f"token ids must be {layout}, got shape {list(ids.shape)}")
    if not inputs_checkable():  # values are symbolic while exporting
        return
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"token ids must be in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}"
        )
