"""ViG and ViT: output shapes, input checks, config round trip, ViG's bidirectional mixer
against two causal loop references, and a few training steps lowering the loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganglion.kernels.gla.reference import gla_recurrent_reference
from ganglion.models.errors import ShapeError
from ganglion.models.recipes.digits import DigitsData, load_digits
from ganglion.models.recipes.vision_training import train_vision
from ganglion.models.vision import VISION_ARCHITECTURES, vision_model_class
from ganglion.models.vision.vig import ViG, ViGConfig

ARCHITECTURES = sorted(VISION_ARCHITECTURES)
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2}


def _model(architecture: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = vision_model_class(architecture)
    return cls(cls.config_class(**{**TINY, **overrides}))


def _images(batch: int, side: int = 8) -> torch.Tensor:
    return torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(2))


def test_registry_names_each_class_by_its_architecture():
    for name in ARCHITECTURES:
        assert vision_model_class(name).architecture == name


@pytest.mark.parametrize("upsample, patch, tokens", [(1, 2, 16), (2, 2, 64), (2, 4, 16)])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_logits_have_one_row_per_image(architecture, upsample, patch, tokens):
    model = _model(architecture, upsample=upsample, patch_size=patch)
    assert model.pos_embed.shape[1] == tokens
    logits = model(_images(3))
    assert logits.shape == (3, 10) and logits.dtype == torch.float32


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_images_of_another_size_or_dtype_are_rejected(architecture):
    with pytest.raises(ShapeError, match=r"images must be \[B, 1, 8, 8\], got \[2, 1, 16, 16\]"):
        _model(architecture)(_images(2, side=16))
    with pytest.raises(ShapeError, match="images must be float32, got torch.float64"):
        _model(architecture)(_images(2).double())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@torch.no_grad()
def test_from_config_and_state_dict_reproduce_outputs(architecture):
    model = _model(architecture).eval()
    rebuilt = vision_model_class(architecture).from_config(model.to_config())
    rebuilt.load_state_dict(model.state_dict())
    images = _images(4)
    assert torch.equal(rebuilt.eval()(images), model(images))


def test_from_config_rejects_another_architecture():
    config = _model("vit").to_config()
    with pytest.raises(ValueError, match="not 'vig'"):
        ViG.from_config(config)


@torch.no_grad()
def test_vig_attention_is_the_mean_of_a_forward_and_a_backward_scan():
    mixer = ViG(ViGConfig(**TINY, expand_k=0.5)).blocks[0].mixer
    local = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3))
    heads = lambda x: x.unflatten(-1, (2, -1))  # noqa: E731
    q, k, v = (heads(p(local)) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    gates = F.logsigmoid(mixer.gk_up(mixer.gk_down(local))) / 16
    g_fwd, g_bwd = (heads(g) for g in gates.chunk(2, -1))
    forward, _ = gla_recurrent_reference(q, k, v, g_fwd)
    flip = lambda x: x.flip(1)  # noqa: E731
    backward, _ = gla_recurrent_reference(flip(q), flip(k), flip(v), flip(g_bwd))
    expected = (forward + flip(backward)) / 2
    torch.testing.assert_close(mixer.attention(local), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_vig_mixer_carries_information_both_ways_beyond_the_convolution():
    mixer = ViG(ViGConfig(**TINY)).blocks[0].mixer
    x = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(4))
    for changed, far in ((0, 15), (15, 0)):  # opposite corners of the 4x4 grid
        y = x.clone()
        y[0, changed] += 1.0
        assert not torch.allclose(mixer(x, (4, 4))[0, far], mixer(y, (4, 4))[0, far])
        mixer_local = mixer.local_mixing(x, (4, 4))[0, far]
        assert torch.equal(mixer_local, mixer.local_mixing(y, (4, 4))[0, far])


def _subset(data: DigitsData, n: int) -> DigitsData:
    return DigitsData(data.x_train[:n], data.y_train[:n], data.x_test[:64], data.y_test[:64])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_few_training_steps_lower_the_loss(architecture):
    data = _subset(load_digits(image=True), 512)
    model = _model(architecture)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)

    def loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(model.eval()(x), y).item()

    before = loss()
    report = train_vision(model, data, epochs=4, seed=0, lr=1e-2, batch=32)  # 64 steps
    assert loss() < before - 0.3
    assert report.architecture == architecture and report.epochs == 4
    assert np.isfinite(report.final_loss) and 0.0 <= report.test_accuracy <= 1.0
