"""RWKV language model: the parallel face (wkv_scan) equals the recurrent face (wkv_step) in
logits and final state, on both sides of the chunked WKV path (T >= REFERENCE_CHUNKED_FROM_T),
prefill splits, state immutability, config round trip, bad input.

fp32 tolerance: logits and the other states agree within atol = rtol = 1e-5 (observed a few
1e-6: the batched and per-token matmuls round differently). The WKV state ``(a, b, p)`` stands
for ``a e^p`` and ``b e^p``, which other pairs represent as well, so it is compared as those
(both scaled by ``e^-max(p, p')`` against overflow) within atol 1e-4, rtol 1e-5: ``a`` is a
signed sum over the whole sequence that the chunked form adds in another order (observed up to
5e-6 at T = 97 here, 1.9e-5 in test_spikegpt's models).
"""

import pytest
import torch

from ganglion.kernels import wkv
from ganglion.kernels.wkv.reference import CHUNK_SIZE, P_INIT
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.rwkv import RWKV, RWKVConfig

ATOL = RTOL = 1e-5
TINY = RWKVConfig(vocab_size=64, d_model=32, n_layers=2)
CHUNKED = wkv.REFERENCE_CHUNKED_FROM_T  # 64: wkv_scan's CPU path is chunked from here on
LENGTHS = [1, 7, 16, 33, CHUNKED, CHUNKED + CHUNK_SIZE + 1]  # 97: not a multiple of a chunk


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these tiny per-token ops run several times slower on two threads
    when the other core is busy (OpenMP workers spin), so the module runs on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(config: RWKVConfig = TINY) -> RWKV:
    """A tiny RWKV with every weight perturbed: the initialization zeroes several projections
    (a fresh block is close to the identity), so noise makes every path count."""
    torch.manual_seed(0)
    model = RWKV(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _ids(batch: int, length: int, vocab: int = TINY.vocab_size) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _repeated_steps(model: RWKV, ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    logits = []
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        logits.append(out)
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("length", LENGTHS, ids=lambda t: f"T{t}")
@torch.no_grad()
def test_forward_equals_repeated_step(length, monkeypatch, same_states):
    model = _model()
    ids = _ids(2, length)
    chunked, chunk_form = [], wkv.wkv_chunk_reference

    def counted_chunk_form(*args):
        chunked.append(args[2].shape[1])
        return chunk_form(*args)

    monkeypatch.setattr(wkv, "wkv_chunk_reference", counted_chunk_form)
    logits, state = model(ids)
    assert bool(chunked) == (length >= CHUNKED)  # the lengths cover both WKV paths
    step_logits, step_state = _repeated_steps(model, ids, model.init_state(2))
    assert logits.shape == (2, length, TINY.vocab_size) and logits.dtype == torch.float32
    _close(logits, step_logits, "logits")
    same_states(state, step_state)


@torch.no_grad()
def test_prefill_in_two_parts_equals_one_part(same_states):
    model = _model()
    ids = _ids(2, 33)
    logits, state = model(ids)
    first, mid = model(ids[:, :12])
    second, split_state = model(ids[:, 12:], mid)  # the parallel form from a non-initial state
    _close(logits, torch.cat([first, second], 1), "logits")
    same_states(state, split_state)


@torch.no_grad()
def test_steps_after_a_prefill_equal_one_forward(same_states):
    model = _model()
    ids = _ids(2, 20)
    logits, state = model(ids)
    _, mid = model(ids[:, :9])
    step_logits, step_state = _repeated_steps(model, ids[:, 9:], mid)
    _close(logits[:, 9:], step_logits, "logits")
    same_states(state, step_state)


@torch.no_grad()
def test_later_tokens_do_not_change_earlier_logits():
    model = _model()
    ids = _ids(1, 16)
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % TINY.vocab_size
    a, _ = model(ids)
    b, _ = model(changed)
    _close(a[:, :10], b[:, :10], "logits before the change")
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@torch.no_grad()
def test_step_and_forward_do_not_modify_their_input_state():
    model = _model()
    _, state = model(_ids(2, 5))
    kept = {k: v.clone() for k, v in state.items()}
    model.step(_ids(2, 1)[:, 0], state)
    model(_ids(2, 4), state)
    for name in kept:
        assert torch.equal(kept[name], state[name]), name


@torch.no_grad()
def test_from_config_and_state_dict_reproduce_outputs(same_states):
    model = _model(RWKVConfig(vocab_size=64, d_model=32, n_layers=2, ffn_mult=2, tie_head=True))
    config = model.to_config()
    rebuilt = sequence_model_class(config["architecture"]).from_config(config)
    assert isinstance(rebuilt, RWKV)
    rebuilt.load_state_dict(model.state_dict())
    ids = _ids(2, 9)
    a, state_a = model(ids)
    b, state_b = rebuilt.eval()(ids)
    assert torch.equal(a, b)
    same_states(state_a, state_b)


def test_tied_head_has_no_head_weight():
    untied = RWKV(TINY)
    tied = RWKV(RWKVConfig(vocab_size=64, d_model=32, n_layers=2, tie_head=True))
    assert "head.weight" in untied.state_dict() and "head.weight" not in tied.state_dict()
    count = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters())
    assert count == TINY.vocab_size * TINY.d_model


def test_state_specs_describe_init_state():
    model = _model()
    state = model.init_state(3)
    specs = model.state_specs()
    assert [s.name for s in specs] == list(state)
    assert {s.name for s in specs} == {
        f"l{i}.{n}"
        for i in range(TINY.n_layers)
        for n in ("att_shift", "ffn_shift", "wkv_a", "wkv_b", "wkv_p")
    }
    for spec in specs:
        assert spec.shape == [-1, TINY.d_model] and spec.dtype == "float32"
        assert state[spec.name].shape == (3, TINY.d_model)
    assert torch.all(state["l1.wkv_p"] == P_INIT) and torch.all(state["l0.wkv_b"] == 0)


def test_fresh_model_predicts_without_nans():
    model = RWKV(TINY)
    logits, _ = model(_ids(2, 8))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "ids, face",
    [
        (torch.tensor([[1, 64]]), "forward"),  # out of the vocabulary
        (torch.tensor([[-1, 2]]), "forward"),
        (torch.tensor([[1.0, 2.0]]), "forward"),  # float dtype
        (torch.tensor([1, 2]), "forward"),  # [B] where [B, T] is expected
        (torch.tensor([[1, 2]]), "step"),  # [B, T] where [B] is expected
        (torch.tensor([70]), "step"),
    ],
    ids=["above-vocab", "negative", "float", "rank1-forward", "rank2-step", "step-above-vocab"],
)
def test_bad_ids_raise_value_error(ids, face):
    model = _model()
    with pytest.raises(ValueError, match="token ids"):
        if face == "forward":
            model(ids)
        else:
            model.step(ids, model.init_state(ids.shape[0]))


def test_a_state_for_another_batch_or_model_is_rejected():
    model = _model()
    with pytest.raises(ValueError, match="state l0.att_shift must be float32 \\[1, 32\\]"):
        model(_ids(1, 3), model.init_state(2))
    state = model.init_state(1)
    del state["l1.wkv_p"]
    with pytest.raises(ValueError, match="missing \\['l1.wkv_p'\\]"):
        model.step(_ids(1, 1)[:, 0], state)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"n_layer": 2}, "unknown RWKVConfig keys \\['n_layer'\\]"),
        ({"architecture": "spikegpt"}, "config is for 'spikegpt', not 'rwkv'"),
    ],
    ids=["zero-width", "unknown-key", "other-architecture"],
)
def test_bad_config_raises_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        RWKV.from_config(config)
