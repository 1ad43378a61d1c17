"""GLA language model: the chunkwise parallel face equals the recurrent face (across chunk
boundaries), prefill splits, state immutability, config round trip, fla's layer conventions.

fp32 tolerance: logits and states agree within atol = rtol = 1e-5 (observed ~1e-6: the chunked
and token-by-token sums round differently)."""

import pytest
import torch

from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.gla import GLALM, GLAConfig

ATOL = RTOL = 1e-5
CHUNK = 16
TINY = GLAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, chunk_size=CHUNK)


def _model(config: GLAConfig = TINY) -> GLALM:
    torch.manual_seed(0)
    return GLALM(config).eval()


def _ids(batch: int, length: int, vocab: int = TINY.vocab_size) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _repeated_steps(model: GLALM, ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
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


@torch.no_grad()
def test_prefill_in_two_parts_equals_one_part():
    model = _model()
    ids = _ids(2, 40)
    logits, state = model(ids)
    first, mid = model(ids[:, :17])  # the cut falls inside the second chunk
    second, split_state = model(ids[:, 17:], mid)
    _close(logits, torch.cat([first, second], 1), "logits")
    for name in state:
        _close(state[name], split_state[name], name)


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
    cls = sequence_model_class("gla")
    rebuilt = cls.from_config(model.to_config())
    rebuilt.load_state_dict(model.state_dict())
    ids = _ids(2, 20)
    assert torch.equal(rebuilt.eval()(ids)[0], model(ids)[0])


def test_from_config_rejects_other_architectures_and_unknown_keys():
    config = _model().to_config()
    with pytest.raises(ValueError, match="not 'gla'"):
        GLALM.from_config({**config, "architecture": "gpt"})
    with pytest.raises(ValueError, match=r"unknown GLAConfig keys \['heads'\]"):
        GLALM.from_config({**config, "heads": 3})


def test_state_specs_describe_init_state():
    model = _model()
    state = model.init_state(3)
    specs = model.state_specs()
    assert [s.name for s in specs] == list(state) == ["l0.S", "l1.S"]
    for spec in specs:
        assert spec.shape[0] == -1 and list(state[spec.name].shape) == [3, *spec.shape[1:]]
        assert str(state[spec.name].dtype) == f"torch.{spec.dtype}"


def test_layer_follows_fla_conventions():
    config = GLAConfig(d_model=64, n_heads=4)
    layer = GLALM(config).blocks[0].mixer
    assert layer.q_proj.out_features == layer.k_proj.out_features == 32  # d_k = d / 2
    assert layer.v_proj.out_features == layer.g_proj.out_features == 64  # d_v = d
    assert layer.gk_down.out_features == 16 and layer.gk_up.out_features == 32  # rank 16
    assert GLALM(config).state_specs()[0].shape == [-1, 4, 8, 16]  # [B, H, d_k/H, d_v/H]
    q, k, v, g = layer._heads(torch.randn(2, 5, 64) * 10)
    assert g.shape == q.shape == (2, 5, 4, 8) and v.shape == (2, 5, 4, 16)
    assert g.max() <= 0  # a log forget gate: the state never grows by decay


def test_config_rejects_a_chunk_the_kernel_cannot_run():
    with pytest.raises(ValueError, match="chunk_size must be a power of two >= 16"):
        GLAConfig(chunk_size=24)
