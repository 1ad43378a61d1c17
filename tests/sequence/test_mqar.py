"""MQAR generator: Zoology's invariants (distinct keys and values from their halves of the
vocabulary, pairs first, each key queried once later at a power-law gap, only answers
labelled), seeding, argument checks; and the trainer's report on a tiny run."""

import numpy as np
import pytest
import torch

from ganglion.models.recipes.mqar import (
    IGNORE,
    gap_probabilities,
    make_mqar,
    mqar_accuracy,
    train_mqar,
)
from ganglion.models.sequence.gpt import GPT, GPTConfig

N, SEQ, PAIRS, VOCAB = 300, 64, 4, 256


@pytest.fixture(scope="module")
def data():
    return make_mqar(N, SEQ, PAIRS, VOCAB, seed=0)


def test_shapes_and_dtypes(data):
    assert data.inputs.shape == data.labels.shape == (N, SEQ)
    assert data.inputs.dtype == data.labels.dtype == np.int64
    assert data.inputs.min() >= 0 and data.inputs.max() < VOCAB


def test_pairs_open_each_example_with_distinct_keys_and_values_from_their_halves(data):
    keys, values = data.inputs[:, 0 : 2 * PAIRS : 2], data.inputs[:, 1 : 2 * PAIRS : 2]
    assert keys.min() >= 1 and keys.max() < VOCAB // 2
    assert values.min() >= VOCAB // 2 and values.max() < VOCAB
    for row_keys, row_values in zip(keys, values, strict=True):
        assert len(set(row_keys)) == PAIRS and len(set(row_values)) == PAIRS


def test_each_key_is_queried_once_after_the_pairs_and_labelled_with_its_value(data):
    for inputs, labels in zip(data.inputs, data.labels, strict=True):
        pairs = dict(zip(inputs[0 : 2 * PAIRS : 2], inputs[1 : 2 * PAIRS : 2], strict=True))
        answered = np.flatnonzero(labels != IGNORE)
        assert len(answered) == PAIRS
        assert answered.min() >= 2 * PAIRS and ((answered - 2 * PAIRS) % 2 == 0).all()
        assert sorted(inputs[answered]) == sorted(pairs)  # every key, once
        assert all(labels[p] == pairs[inputs[p]] for p in answered)
    assert set(np.unique(data.labels)) - {IGNORE} <= set(range(VOCAB // 2, VOCAB))


def _gaps(power_a: float) -> np.ndarray:
    labels = make_mqar(2000, SEQ, PAIRS, VOCAB, seed=1, power_a=power_a).labels
    return (np.argwhere(labels != IGNORE)[:, 1] - 2 * PAIRS) // 2


def test_gaps_follow_a_power_law():
    slots = (SEQ - 2 * PAIRS) // 2
    skewed, uniform = _gaps(0.01), _gaps(1.0)
    assert skewed.min() >= 0 and skewed.max() < slots
    counts = np.bincount(skewed, minlength=slots)
    assert counts[0] > 3 * counts[slots // 2] > 0  # short gaps dominate, long ones occur
    assert abs(uniform.mean() - (slots - 1) / 2) < 0.5  # power_a = 1 is uniform
    assert skewed.mean() < uniform.mean() - 3
    p = gap_probabilities(slots, 0.01)
    assert np.isclose(p.sum(), 1) and (np.diff(p) < 0).all()


def test_filler_is_zero_unless_random_non_queries():
    plain = make_mqar(50, SEQ, PAIRS, VOCAB, seed=0, random_non_queries=False)
    filler = plain.labels[:, 2 * PAIRS :] == IGNORE
    assert (plain.inputs[:, 2 * PAIRS :][filler] == 0).all()


def test_examples_are_determined_by_the_seed(data):
    again = make_mqar(N, SEQ, PAIRS, VOCAB, seed=0)
    other = make_mqar(N, SEQ, PAIRS, VOCAB, seed=1)
    assert np.array_equal(again.inputs, data.inputs) and np.array_equal(again.labels, data.labels)
    assert not np.array_equal(other.inputs, data.inputs)


def test_settings_that_cannot_hold_the_pairs_are_rejected():
    with pytest.raises(ValueError, match="cannot hold 20 pairs"):
        make_mqar(10, 64, 20, VOCAB)
    with pytest.raises(ValueError, match="too few keys or values for 4 pairs"):
        make_mqar(10, 64, 4, 8)


def test_train_mqar_reports_a_scored_run():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, context=32))
    train = make_mqar(64, 32, 2, 64, seed=0)
    test = make_mqar(32, 32, 2, 64, seed=1)
    steps = []
    report = train_mqar(
        model, train, test, steps=3, batch=8, seed=0, progress=lambda s, _: steps.append(s)
    )
    assert steps == [1, 2, 3]
    assert report.architecture == "gpt" and report.steps == 3
    assert np.isfinite(report.final_loss) and 0.0 <= report.accuracy <= 1.0


class RecallOracle(torch.nn.Module):
    """Predicts, at every position, the value paired with the current token in the first
    ``2 * pairs`` tokens (the perfect associative recall MQAR asks for)."""

    def __init__(self, pairs: int, vocab: int, shuffle: bool = False) -> None:
        super().__init__()
        self.pairs, self.vocab, self.shuffle = pairs, vocab, shuffle
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, state=None):
        keys, values = ids[:, 0 : 2 * self.pairs : 2], ids[:, 1 : 2 * self.pairs : 2]
        if self.shuffle:
            values = values.roll(1, dims=1)
        match = ids[:, :, None] == keys[:, None, :]  # [B, T, P]
        answer = (match * values[:, None, :]).sum(-1)
        return torch.nn.functional.one_hot(answer, self.vocab).float(), state


def test_accuracy_is_one_for_perfect_recall_and_zero_for_mismatched_pairs(data):
    assert mqar_accuracy(RecallOracle(PAIRS, VOCAB), data) == 1.0
    assert mqar_accuracy(RecallOracle(PAIRS, VOCAB, shuffle=True), data) == 0.0
