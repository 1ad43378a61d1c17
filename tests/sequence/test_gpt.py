"""GPT baseline: the KV-cache step equals the parallel forward, prefill splits, state
immutability, config round trip, causality and the context limit.

fp32 tolerance: logits and caches agree within atol = rtol = 1e-5 (observed ~1e-7)."""

import pytest
import torch

from ganglion.models.errors import ShapeError
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.gpt import GPT, GPTConfig

ATOL = RTOL = 1e-5
TINY = GPTConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, context=48)


def _model(config: GPTConfig = TINY) -> GPT:
    torch.manual_seed(0)
    return GPT(config).eval()


def _ids(batch: int, length: int, vocab: int = TINY.vocab_size) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _repeated_steps(model: GPT, ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    logits = []
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        logits.append(out)
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("length", [1, 15, 16, 17, 40], ids=lambda t: f"T{t}")
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
    assert state["l0.k"].shape[2] == length and state["t"].tolist() == [length, length]


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
def test_later_tokens_do_not_change_earlier_logits():
    model = _model()
    ids = _ids(1, 20)
    changed = ids.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % TINY.vocab_size
    a, b = model(ids)[0], model(changed)[0]
    _close(a[:, :12], b[:, :12], "logits before the change")
    assert not torch.allclose(a[:, 12:], b[:, 12:])


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
    rebuilt = sequence_model_class("gpt").from_config(model.to_config())
    rebuilt.load_state_dict(model.state_dict())
    ids = _ids(2, 20)
    assert torch.equal(rebuilt.eval()(ids)[0], model(ids)[0])


def test_state_specs_describe_init_state():
    model = _model()
    state = model.init_state(3)
    specs = model.state_specs()
    assert [s.name for s in specs] == list(state) == ["l0.k", "l0.v", "l1.k", "l1.v", "t"]
    for spec in specs:
        shape = [3 if i == 0 else 0 if d == -1 else d for i, d in enumerate(spec.shape)]
        assert list(state[spec.name].shape) == shape, spec.name
        assert str(state[spec.name].dtype) == f"torch.{spec.dtype}"
    assert specs[0].shape == [-1, 2, -1, 16]  # [B, H, L (grows), D]


@torch.no_grad()
def test_tokens_beyond_the_context_are_rejected():
    model = _model()
    with pytest.raises(ShapeError, match="49 tokens exceed the model's context of 48"):
        model(_ids(1, 49))
    _, state = model(_ids(1, 48))
    with pytest.raises(ShapeError, match="context of 48"):
        model.step(_ids(1, 1)[:, 0], state)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_every_backend_refuses_tokens_past_the_context_alike(backend, perturb):
    """The session checks the step counter against the context before any backend runs, so
    ONNX Runtime answers as torch does (it used to fail deep inside ORT with a long message)."""
    import numpy as np

    from ganglion.models.sequence.program import sequence_deployable
    from ganglion.runtime.session import load

    torch.manual_seed(0)
    session = load(sequence_deployable(perturb(_model())), backend)
    ids = np.ones((2, 40), np.int64)
    _, state = session.prefill(ids, session.init_state(2))
    with pytest.raises(ShapeError, match="49 tokens exceed the model's context of 48"):
        session.prefill(np.ones((2, 9), np.int64), state)
    _, state = session.prefill(np.ones((2, 8), np.int64), state)
    with pytest.raises(ShapeError, match="49 tokens exceed the model's context of 48"):
        session.step(np.ones(2, np.int64), state)
    with pytest.raises(ShapeError, match=r"must be \[2, 2, any, 16\], got \[3, 2, 0, 16\]"):
        session.prefill(ids, session.init_state(3))


def test_generate_says_when_it_stops_at_the_models_context(tmp_path) -> None:
    """Asked for more tokens than the context holds, generation stopped early and said only
    how many tokens it made."""
    from ganglion.models.sequence.program import sequence_deployable
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.cli import invoke

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, d_model=16, n_layers=1, n_heads=2, context=24))
    bundle = save_bundle(sequence_deployable(model.eval()), tmp_path / "gpt")
    code, _, err = invoke("generate", str(bundle), "--prompt", "hi", "--max-tokens", "100")
    assert code == 0, err
    assert "[22 tokens in" in err and "stopped at the model's context of 24 tokens" in err
    code, _, err = invoke("generate", str(bundle), "--prompt", "hi", "--max-tokens", "5")
    assert code == 0 and "[5 tokens in" in err and "stopped" not in err
