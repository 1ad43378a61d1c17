"""LM training recipe: a short run lowers the loss, runs are reproducible for a seed, and the
held-out BPC counts every predicted character once, whatever the window or context."""

import math

import numpy as np
import pytest
import torch

from ganglion.models.recipes import lm_training
from ganglion.models.recipes.lm_training import (
    count_chars,
    first_chars,
    heldout_bpc,
    lm_loss,
    train_lm,
)
from ganglion.models.recipes.text import Corpus, encode_text, load_corpus
from ganglion.models.sequence.rwkv import RWKV, RWKVConfig

TINY = RWKVConfig(d_model=32, n_layers=1)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these tiny per-token ops run several times slower on two threads
    when the other core is busy (OpenMP workers spin), so the module runs on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model() -> RWKV:
    torch.manual_seed(0)
    return RWKV(TINY)


def _uniform_model() -> RWKV:
    """Equal logits for every byte: exactly 8 bits per predicted byte."""
    model = _model()
    with torch.no_grad():
        model.head.weight.zero_()
    return model


def _corpus(text: str) -> Corpus:
    data = encode_text(text).astype(np.uint8)
    return Corpus("test", data, data, "", len(text))


@pytest.fixture(scope="module")
def prose() -> Corpus:
    return load_corpus("prose")


def test_a_short_run_lowers_the_loss_on_a_fixed_batch(prose):
    model = _model()
    batch = torch.from_numpy(prose.train[:1025].astype(np.int64)).reshape(1, -1)
    with torch.no_grad():
        before = float(lm_loss(model, batch))
    seen = []
    report = train_lm(
        model,
        prose,
        steps=12,
        batch=4,
        length=32,
        lr=1e-2,
        progress=lambda s, _: seen.append(s),
        eval_chars=0,
    )
    with torch.no_grad():
        after = float(lm_loss(model, batch))
    assert after < before - 0.5, (before, after)  # 5.55 nats (uniform) → well below
    assert seen == list(range(1, 13))
    assert report.tokens_seen == 12 * 4 * 32 and report.heldout_bpc is None


def test_runs_with_the_same_seed_are_identical(prose):
    weights = []
    for _ in range(2):
        model = _model()
        train_lm(model, prose, steps=3, batch=2, length=16, lr=1e-2, seed=5, eval_chars=0)
        weights.append(model.state_dict())
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_uniform_predictions_score_eight_bits_per_ascii_char():
    corpus = _corpus("the quick brown fox jumps over the lazy dog. " * 12)
    assert heldout_bpc(_uniform_model(), corpus) == pytest.approx(8.0, rel=1e-6)


def test_multibyte_characters_carry_all_their_bytes():
    text = "né€" * 30  # 1 + 2 + 3 bytes for 3 characters
    corpus = _corpus(text)
    bytes_predicted = len(text.encode()) - 1
    chars_predicted = len(text) - 1  # the first character is ASCII, one byte, not predicted
    expected = 8.0 * bytes_predicted / chars_predicted
    assert heldout_bpc(_uniform_model(), corpus) == pytest.approx(expected, rel=1e-6)


def test_streaming_windows_carry_the_state(monkeypatch, prose):
    model = _model()
    train_lm(model, prose, steps=4, batch=2, length=16, lr=1e-2, eval_chars=0)
    one_pass = heldout_bpc(model, prose, max_chars=300)
    monkeypatch.setattr(lm_training, "EVAL_WINDOW", 37)  # 300 chars in 9 windows
    assert heldout_bpc(model, prose, max_chars=300) == pytest.approx(one_pass, rel=1e-5)


def test_a_context_limited_model_scores_every_character_once(monkeypatch):
    model = _uniform_model()
    monkeypatch.setattr(model, "context", 10)  # sliding windows of 10, stride 5
    corpus = _corpus("abcdefghij" * 7 + "xyz")
    assert heldout_bpc(model, corpus) == pytest.approx(8.0, rel=1e-6)


def test_first_chars_cuts_on_a_character_boundary():
    data = encode_text("aé€b").astype(np.uint8)
    assert bytes(first_chars(data, 2)).decode() == "aé"
    assert count_chars(data) == 4 and len(first_chars(data, 99)) == len(data)


def test_bad_sizes_raise_value_error(prose):
    model = _model()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_lm(model, prose, steps=0)
    model.context = 8
    with pytest.raises(ValueError, match="exceeds the model's context 8"):
        train_lm(model, prose, steps=1, length=16)
    with pytest.raises(ValueError, match="at least 2 held-out bytes"):
        heldout_bpc(model, prose, max_chars=1)


@torch.no_grad()
def test_uniform_loss_is_log_vocab():
    batch = torch.arange(17).reshape(1, -1)
    assert float(lm_loss(_uniform_model(), batch)) == pytest.approx(math.log(256), rel=1e-6)
