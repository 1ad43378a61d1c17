"""Text corpora that ship with Python itself, as bytes, with a fixed held-out split.

- ``prose``: English prose, the help topics of ``pydoc_data.topics`` (about 0.47 MB).
- ``code``: Python source, the top-level ``.py`` files of the running interpreter's standard
  library, read in sorted order and capped at ``CODE_BYTES``.

Byte-level: token ids are the UTF-8 bytes (vocabulary 256). The last ``HELDOUT_FRACTION`` of
each corpus is held out; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPORA = ("prose", "code")
VOCAB_SIZE = 256
HELDOUT_FRACTION = 0.1
CODE_BYTES = 2_000_000  # cap: enough for minutes of CPU training, reproducible per Python


@dataclass(frozen=True)
class Corpus:
    """One corpus as byte ids: ``train`` and ``heldout`` uint8 arrays, plus what it is."""

    name: str
    train: np.ndarray  # [N] uint8
    heldout: np.ndarray  # [M] uint8
    sha256: str  # of the whole text, so a manifest says exactly what was trained on
    heldout_chars: int  # characters (not bytes) in the held-out text, for bits per character


def _prose_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _code_text() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= CODE_BYTES:
            break
    return "\n".join(parts)[:CODE_BYTES]


def load_corpus(name: str) -> Corpus:
    """The corpus ``name`` ("prose" or "code") split into train and held-out bytes."""
    if name not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")
    text = _prose_text() if name == "prose" else _code_text()
    cut = int(len(text) * (1 - HELDOUT_FRACTION))
    train, heldout = text[:cut], text[cut:]
    return Corpus(
        name=name,
        train=np.frombuffer(train.encode(), dtype=np.uint8).copy(),
        heldout=np.frombuffer(heldout.encode(), dtype=np.uint8).copy(),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        heldout_chars=len(heldout),
    )


def encode_text(text: str) -> np.ndarray:
    """Token ids (int64) of ``text``: its UTF-8 bytes."""
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)


def decode_ids(ids: np.ndarray | list[int]) -> str:
    """Text of byte ids; an incomplete UTF-8 sequence becomes U+FFFD."""
    return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")


def random_windows(
    data: np.ndarray, batch: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """``batch`` random windows of ``length + 1`` ids (inputs and next-token targets), int64."""
    if len(data) <= length + 1:
        raise ValueError(f"corpus of {len(data)} bytes is shorter than a window of {length + 1}")
    starts = rng.integers(0, len(data) - length - 1, size=batch)
    return np.stack([data[s : s + length + 1] for s in starts]).astype(np.int64)


def bits_per_char(total_nll_nats: float, chars: int) -> float:
    """Bits per character from a summed negative log-likelihood in nats."""
    return total_nll_nats / math.log(2) / max(chars, 1)
