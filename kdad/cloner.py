"""The cloner: a VGG-style network whose max-pool outputs have the expert's hint shapes.

Built from the expert's hint declaration. The official code's "cfg B" for VGG16 is

    16,16,M | 16,128,M | 16,16,256,M | 16,16,512,M | 16,16,512,M      (343,984 parameters)

i.e. five stride-2 blocks; a block whose output stride carries a hint ends in a conv with the
hint's channel count, all other convs are 16 wide. Convs have no bias; a conv directly followed by a
pool has ReLU only, every other conv BatchNorm + ReLU; Xavier-uniform init. ``size="equal"`` uses
the expert's own widths (the paper's "equal size" ablation).

The hint outputs: VGG16's hints are max-pools of ReLUs (never negative), and so are the cloner's
(``head="relu"``, the paper's network exactly). An expert whose hints are signed (EfficientNet's
stage outputs end in a linear projection) needs a cloner that can produce negative values where
the expert does: with ``head="linear"`` the conv that feeds a hint pool has no ReLU, so the pooled
hint is a max over a linear map and takes either sign. ``head="auto"`` picks linear exactly when
the expert declares a signed hint; ``relu`` on such an expert is kept as a declared ablation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdad.experts import Expert, Hint

BLOCK_DEPTH = (2, 2, 3, 3, 3)  # convs per stride-2 block, as VGG16
COMPACT_WIDTH = 16


def cloner_config(hints: tuple[Hint, ...], size: str = "compact",
                  block_widths: tuple[tuple[int, ...], ...] = ()) -> list[int | str]:
    """Layer list (ints = conv widths, "M" = max-pool) whose pools match ``hints``' shapes."""
    by_stride = {h.stride: h.channels for h in hints}
    last = max(by_stride)
    n_blocks = last.bit_length() - 1
    if 2 ** n_blocks != last or any(s & (s - 1) for s in by_stride) or n_blocks > len(BLOCK_DEPTH):
        raise ValueError(f"hint strides must be powers of two up to 32, got {sorted(by_stride)}")
    cfg: list[int | str] = []
    for b in range(n_blocks):
        stride = 2 ** (b + 1)
        if size == "compact":
            widths = [COMPACT_WIDTH] * BLOCK_DEPTH[b]
            if stride in by_stride:
                widths[-1] = by_stride[stride]
        elif size == "equal":
            if not block_widths:
                raise ValueError("size='equal' needs the expert's block widths")
            widths = list(block_widths[b])
            if stride in by_stride and widths[-1] != by_stride[stride]:
                raise ValueError(f"expert block {b} ends with {widths[-1]} channels, hint has {by_stride[stride]}")
        else:
            raise ValueError(f"cloner size must be 'compact' or 'equal', got {size!r}")
        cfg += widths + ["M"]
    return cfg


HEADS = ("auto", "relu", "linear")


class Cloner(nn.Module):
    def __init__(self, cfg: list[int | str], hint_strides: tuple[int, ...], head: str = "relu") -> None:
        super().__init__()
        if head not in ("relu", "linear"):
            raise ValueError(f"cloner head must be 'relu' or 'linear', got {head!r}")
        layers: list[nn.Module] = []
        channels, stride = 3, 1
        self.tap: list[int] = []  # indices of the pool layers whose outputs are hints
        for i, item in enumerate(cfg):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                stride *= 2
                if stride in hint_strides:
                    self.tap.append(len(layers) - 1)
                continue
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1, bias=False))
            before_pool = i + 1 < len(cfg) and cfg[i + 1] == "M"
            if not before_pool:
                layers.append(nn.BatchNorm2d(int(item)))
            if not (head == "linear" and before_pool and stride * 2 in hint_strides):
                layers.append(nn.ReLU(inplace=False))
            channels = int(item)
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
        self.to(memory_format=torch.channels_last)  # faster on CPU; see Expert.freeze

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.taps(x.contiguous(memory_format=torch.channels_last))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The hint outputs for ``x`` in whatever memory layout it comes (``forward`` makes it channels-last)."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.tap:
                out.append(x)
        return out


def resolve_head(expert: Expert, head: str = "auto") -> str:
    if head not in HEADS:
        raise ValueError(f"cloner head must be one of {HEADS}, got {head!r}")
    if head == "auto":
        return "linear" if any(h.signed for h in expert.hints) else "relu"
    return head


def build_cloner(expert: Expert, size: str = "compact", head: str = "auto") -> Cloner:
    cfg = cloner_config(expert.hints, size, expert.block_widths)
    return Cloner(cfg, tuple(h.stride for h in expert.hints), resolve_head(expert, head))
