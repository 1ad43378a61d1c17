"""Generation above the Session contract: prompt ids in, tokens out one at a time.

Works on every backend (it calls only ``init_state``, ``prefill`` and ``step``): the prompt
is prefilled (the model's parallel form where the backend has it; in calls of at most the
manifest's ``time.chunk`` tokens when it declares one), then each token is sampled
from the last logits and stepped in, in constant memory for recurrent models. Sampling is
greedy (``temperature=0``) or temperature with optional top-k and top-p (nucleus) filtering,
seeded, with numpy, so greedy decoding gives identical tokens on every backend. Logits that
are not finite (NaN or infinite weights or state) stop generation with GenerationError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ganglion.models.errors import GanglionError, OptionError
from ganglion.models.manifest import SequenceTime
from ganglion.runtime.session import Session


class GenerationError(GanglionError):
    """A program or request that generation cannot serve."""


class SamplingError(GenerationError, OptionError):
    """A sampling option out of range (the command line exits 2, as for any such flag)."""


MAX_NEW_TOKENS = 1 << 20  # tokens one generation makes at most


@dataclass
class Sampling:
    """How the next token is chosen, and when to stop."""

    max_tokens: int = 64  # tokens to generate (the prompt not counted)
    temperature: float = 0.0  # 0: greedy (argmax)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probability reaches p
    seed: int = 0
    stop_tokens: Sequence[int] = field(default_factory=tuple)  # generation ends after one

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_NEW_TOKENS:
            raise SamplingError(
                f"max_tokens must be in [1, {MAX_NEW_TOKENS}], got {self.max_tokens}"
            )
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise SamplingError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise SamplingError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.seed < 1 << 63:
            raise SamplingError(f"seed must be in [0, 2**63), got {self.seed}")


def next_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """One token from next-token logits [V]."""
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    shifted = logits.astype(np.float64) - float(np.max(logits))  # the best token at 0
    with np.errstate(over="ignore"):  # a tiny temperature sends the others to -inf: weight 0
        scaled = shifted / sampling.temperature
    order = np.argsort(-scaled, kind="stable")
    if sampling.top_k is not None:
        order = order[: sampling.top_k]
    kept = scaled[order]
    probs = np.exp(kept - kept.max())
    probs /= probs.sum()
    if sampling.top_p is not None:
        cut = int(np.searchsorted(np.cumsum(probs), sampling.top_p)) + 1
        order, probs = order[:cut], probs[:cut] / probs[:cut].sum()
    return int(order[rng.choice(len(order), p=probs)])


def _check_finite(logits: np.ndarray, position: int) -> None:
    """GenerationError unless every logit is finite: NaN or infinity (non-finite weights or
    state) would otherwise decode as token 0 or fail inside the sampler."""
    if not np.isfinite(logits).all():
        raise GenerationError(
            f"the model's logits after {position} tokens are not finite (NaN or infinity): "
            "its weights or state hold non-finite values"
        )


def generate(session: Session, prompt: Sequence[int], sampling: Sampling) -> Iterator[int]:
    """Tokens generated after ``prompt`` (a non-empty list of ids), one at a time."""
    time = session.manifest.time
    if not (isinstance(time, SequenceTime) and time.autoregressive):
        raise GenerationError(
            f"generation needs an autoregressive sequence program, this is {session.manifest.kind}"
        )
    ids = np.asarray(list(prompt), dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise GenerationError("the prompt must hold at least one token")
    limit = time.context or None
    if limit is not None and ids.size >= limit:
        raise GenerationError(f"the prompt has {ids.size} tokens; this model's context is {limit}")
    rng = np.random.default_rng(sampling.seed)
    state = session.init_state(1)
    chunk = time.chunk or ids.size
    for start in range(0, ids.size, chunk):
        outputs, state = session.prefill({"ids": ids[None, start : start + chunk]}, state)
    logits = np.array(outputs["logits"][0, -1])
    length = ids.size
    for _ in range(sampling.max_tokens):
        _check_finite(logits, length)
        token = next_token(logits, sampling, rng)
        yield token
        length += 1
        if token in sampling.stop_tokens or (limit is not None and length >= limit):
            return
        outputs, state = session.step({"ids": np.array([token], dtype=np.int64)}, state)
        logits = np.array(outputs["logits"][0])
