"""Datasets: a registry of :class:`DatasetSpec`, each able to prepare itself into a
:class:`~kdad.data.base.PreparedDataset` file that training reads.

Modules register their datasets on import; :func:`get_dataset` imports them all first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdad.data.base import DatasetError, ImageSet, PreparedDataset
from kdad.registry import Registry


@dataclass(frozen=True)
class PrepareRequest:
    """What a dataset's ``prepare`` function gets.

    root: the data root where downloads and extracted copies live (``resources/data`` by default).
    image_size: side of the square model input the images are resized to.
    source: an optional local path (file or folder) given in the config; when set it is used
        instead of any download.
    seed: the seed a generated dataset (``DatasetSpec.seeded``) is drawn from; real datasets ignore it.
    categories: the categories the config asks for (None: all); a set whose categories are the
        user's own (``DatasetSpec.open_categories``) reads exactly these.
    """

    root: Path
    image_size: int
    source: Path | None = None
    seed: int = 0
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset and how to prepare it.

    kind: "semantic" (classes; the protocol picks which are anomalous) or "defect".
    categories: class names (semantic) or object/texture categories (defect), in label order.
    image_size: the model input side the paper uses for it (see docs/method.md).
    channels: 1 or 3, as stored.
    has_masks: whether the test split carries pixel masks.
    pooled: True when the dataset has no official train/test split (HeadCT, BrainMRI): every image
        is stored in ``test`` and the protocol draws the split from the run's seed.
    normal_class: for a semantic set whose paper protocol has one fixed normal class (OCT: NORMAL),
        that class; the one-class protocol then has that single task.
    seeded: the dataset is generated from ``PrepareRequest.seed`` (textures): each run's seed draws
        its own copy, so seeds measure data variance too.
    open_categories: the categories are whatever the user's data holds (an MVTec-format folder of
        one's own): the config must list them, and nothing checks them against a fixed list.
    resize_on_load: for a set whose model input is much larger than its images (CIFAR-10: 32 px
        stored, 224 px input), ``f(images, image_size)`` that turns stored images into model inputs;
        the prepared file then keeps the small originals and the workflow resizes what a job reads.
    """

    name: str
    kind: str
    categories: tuple[str, ...]
    image_size: int
    channels: int
    has_masks: bool
    prepare: Callable[[PrepareRequest], PreparedDataset]
    pooled: bool = False
    description: str = ""
    normal_class: str | None = None
    seeded: bool = False
    open_categories: bool = False
    resize_on_load: Callable[[object, int], object] | None = None


DATASETS: Registry[DatasetSpec] = Registry("dataset")

# every module that registers datasets; imported lazily so `import kdad` stays light
_MODULES = ("kdad.data.classic", "kdad.data.textures", "kdad.data.mvtec", "kdad.data.extra")


def _import_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def get_dataset(name: str) -> DatasetSpec:
    _import_all()
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    _import_all()
    return DATASETS.names()


def register(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


__all__ = ["DATASETS", "DatasetError", "DatasetSpec", "ImageSet", "PrepareRequest", "PreparedDataset",
           "dataset_names", "get_dataset", "register"]
