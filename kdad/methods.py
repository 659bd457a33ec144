"""The method registry: MKD, its ablation variants and every baseline behind one interface.

A *Detector* is any object with

    fit(images, *, seed, hints=None) -> self         images: uint8 tensor [N, 1|3, H, W], normal only
    score(images, *, hints=None) -> np.ndarray [N]   higher = more anomalous
    anomaly_map(images, *, hints=None) -> np.ndarray [N, H, W]   only when ``spec.localizes``

``hints`` are the frozen expert's activations for exactly those images (the cached float16 ones);
methods that do not use the expert ignore them, methods that do must produce the same result
without them (they then run the expert themselves).

A method is registered with its config dataclass (the schema of its YAML block: unknown keys are
errors) and a ``build(config) -> Detector`` function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from kdad.config import from_dict
from kdad.registry import Registry


class Detector(Protocol):
    def fit(self, images: torch.Tensor, *, seed: int, hints=None) -> Any: ...
    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray: ...


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: type                       # dataclass; its fields are the method's YAML keys
    build: Callable[[Any], Detector]
    localizes: bool = False            # has anomaly_map
    expert_field: str | None = None    # name of the config field holding the expert, if it uses one
    description: str = ""


METHODS: Registry[MethodSpec] = Registry("method")

# modules whose import registers methods (baselines/ is a package of its own)
_MODULES = ("kdad.mkd_method", "baselines")


def _import_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def register_method(spec: MethodSpec) -> MethodSpec:
    return METHODS.register(spec.name, spec)


def get_method(name: str) -> MethodSpec:
    _import_all()
    return METHODS.get(name)


def method_names() -> list[str]:
    _import_all()
    return METHODS.names()


def build_method(name: str, options: dict | None = None, *, where: str = ""):
    """(spec, config, detector) for registry ``name`` with YAML ``options`` (strictly validated)."""
    spec = get_method(name)
    config = from_dict(spec.config, options, where=where or f"method {name}")
    return spec, config, spec.build(config)
