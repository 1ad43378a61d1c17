"""GAM language model: the recurrent face (a window of k - 1 inputs per layer) equals the
parallel convolution, prefill splits, state immutability, config round trip, the published
receptive field, and the context limit.

fp32 tolerance: logits and states agree within atol = rtol = 1e-5 (observed ~1e-7)."""

import pytest
import torch

from ganglion.models.errors import ShapeError
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.gam import GAMLM, GAMConfig

ATOL = RTOL = 1e-5
TINY = GAMConfig(vocab_size=64, d_model=32, n_layers=2, slots=16, kernel_size=3, context=48)


def _model(config: GAMConfig = TINY) -> GAMLM:
    torch.manual_seed(0)
    return GAMLM(config).eval()


def _ids(batch: int, length: int, vocab: int = TINY.vocab_size) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _repeated_steps(model: GAMLM, ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    logits = []
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        logits.append(out)
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 40], ids=lambda t: f"T{t}")
@torch.no_grad()
def test_forward_equals_repeated_step(length):
    model = _model()
    ids = _ids(2, length)
    logits, state = model(ids)
    step_logits, step_state = _repeated_steps(model, ids, model.init_state(2))
    _close(logits, step_logits, "logits")
    assert state.keys() == step_state.keys()
    for name in state:
        _close(state[name], step_state[name], name)


@pytest.mark.parametrize("kernel_size", [1, 4])
@torch.no_grad()
def test_forward_equals_repeated_step_for_other_kernel_sizes(kernel_size):
    model = _model(
        GAMConfig(vocab_size=64, d_model=16, n_layers=2, slots=8, kernel_size=kernel_size)
    )
    ids = _ids(2, 9)
    logits, state = model(ids)
    step_logits, step_state = _repeated_steps(model, ids, model.init_state(2))
    _close(logits, step_logits, "logits")
    assert state["l1.conv"].shape == (2, kernel_size - 1, 16)


@torch.no_grad()
def test_prefill_in_two_parts_equals_one_part():
    model = _model()
    ids = _ids(2, 40)
    logits, state = model(ids)
    first, mid = model(ids[:, :17])
    second, split_state = model(ids[:, 17:], mid)
    _close(logits, torch.cat([first, second], 1), "logits")
    for name in state:
        _close(state[name], split_state[name], name)


@torch.no_grad()
def test_a_token_reaches_only_layers_times_k_minus_1_later_positions():
    model = _model()  # 2 layers, k = 3: a token influences itself and the next 4 positions
    ids = _ids(1, 20)
    changed = ids.clone()
    changed[0, 8] = (changed[0, 8] + 1) % TINY.vocab_size
    diff = (model(ids)[0] - model(changed)[0]).abs().amax(-1)[0]  # [T]
    assert (diff[:8] == 0).all()  # causal
    assert (diff[8:13] > 0).all()  # receptive field: layers * (k - 1) + 1 = 5
    assert (diff[13:] == 0).all()  # no path beyond it: the memory reads only the token itself


@torch.no_grad()
def test_step_does_not_modify_its_input_state():
    model = _model()
    _, state = model(_ids(2, 5))
    before = {name: t.clone() for name, t in state.items()}
    model.step(_ids(2, 1)[:, 0], state)
    for name, t in state.items():
        assert torch.equal(t, before[name]), name


@torch.no_grad()
def test_from_config_and_state_dict_reproduce_outputs():
    model = _model()
    rebuilt = sequence_model_class("gam").from_config(model.to_config())
    rebuilt.load_state_dict(model.state_dict())
    ids = _ids(2, 20)
    assert torch.equal(rebuilt.eval()(ids)[0], model(ids)[0])


def test_state_specs_describe_init_state():
    model = _model()
    state = model.init_state(3)
    specs = model.state_specs()
    assert [s.name for s in specs] == list(state) == ["l0.conv", "l1.conv", "t"]
    for spec in specs:
        assert spec.shape[0] == -1 and list(state[spec.name].shape) == [3, *spec.shape[1:]]
        assert str(state[spec.name].dtype) == f"torch.{spec.dtype}"
    assert specs[0].shape == [-1, 2, 32]  # [B, k - 1, d]


@torch.no_grad()
def test_tokens_beyond_the_context_are_rejected():
    model = _model()
    with pytest.raises(ShapeError, match="49 tokens exceed the model's context of 48"):
        model(_ids(1, 49))
    _, state = model(_ids(1, 48))
    with pytest.raises(ShapeError, match="context of 48"):
        model.step(_ids(1, 1)[:, 0], state)
