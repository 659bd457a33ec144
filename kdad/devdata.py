"""Development data: the only data that studies choosing a setting may read.

A benchmark is only as honest as the data its settings were chosen on. Every study that picks an
epoch count, a budget, λ, a batch size or any other option (``benchmarks/dev_search.py``,
``benchmarks/baseline_budgets.py``, ``benchmarks/textures_difficulty.py``) loads its data through
:func:`dev_tasks`, which can only return development data:

- semantic sets (``fashion_mnist``, ``mnist5k``, ...): a fixed held-out part of the *training*
  split. For class ``c``: the class's training images are permuted with seed ``1000 + c``; the
  last sixth (1,000 of Fashion-MNIST's 6,000) is the normal validation set, the rest trains; as
  many training images of the other classes, drawn with the same generator, are the anomalous
  validation set. The test split is dropped before anything else sees the prepared dataset.
- ``textures_dev``: the development part of the generated textures, cut from a region of every
  photograph (and a set of coins) that no reported draw of ``textures`` ever uses; its own
  train/test split is development data.

Reported datasets with a test split of their own that overlaps what is reported (``textures``,
``mvtec_ad``, ...) and unknown names are refused with :class:`DevDataError`; there is no argument
that returns a test split. ``tests/test_devdata.py`` checks both, and that the benchmark scripts
import no other data loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdad.data.base import DatasetError

#: semantic sets whose development data is a held-out part of their training split
SEMANTIC_DEV = ("fashion_mnist", "mnist5k", "mnist", "cifar10", "oct")
#: generated sets whose development part shares no pixel with the reported one
GENERATED_DEV = {"textures_dev": "textures"}
VAL_FRACTION = 6  # a sixth of each class's training images is held out (1,000 of 6,000)
DEV_SEED = 1000


class DevDataError(DatasetError):
    """A study asked for data that is not development data."""


@dataclass
class DevTask:
    """One one-class development task: train on ``train`` (uint8 [N, C, H, W]), validate on ``val``
    with ``labels`` (1 = anomalous); defect sets add ``masks`` [M, H, W], ``level`` and ``defect``."""

    dataset: str
    category: str
    train: np.ndarray
    val: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    level: np.ndarray | None = None
    defect: np.ndarray | None = None


def known() -> list[str]:
    return sorted([*SEMANTIC_DEV, *GENERATED_DEV])


def _check(name: str) -> None:
    if name in GENERATED_DEV or name in SEMANTIC_DEV:
        return
    reported = {v: k for k, v in GENERATED_DEV.items()}
    hint = f"; its development part is {reported[name]!r}" if name in reported else ""
    raise DevDataError(f"{name!r} has no development data that is disjoint from what is reported{hint}. "
                       f"Studies that choose settings may read only: {', '.join(known())}")


def image_size(name: str) -> int:
    """The input size the benchmark uses for ``name`` (its dataset's registered size)."""
    from kdad.data import get_dataset

    _check(name)
    return get_dataset(name).image_size


def _train_split(name: str, root: Path, image_size: int | None, seed: int):
    """The prepared training split of a semantic set and its category names; the test split is
    dropped here, before any caller can see it."""
    from kdad.data import PrepareRequest, get_dataset

    spec = get_dataset(name)
    ds = spec.prepare(PrepareRequest(Path(root), image_size or spec.image_size, seed=seed))
    train, categories = ds.train, list(ds.categories)
    del ds
    return train, categories


def held_out(labels: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, normal validation, anomalous validation) of class ``c`` within a
    training split with class ``labels``; fixed by :data:`DEV_SEED` + ``c``."""
    rng = np.random.default_rng(DEV_SEED + c)
    own = rng.permutation(np.flatnonzero(labels == c))
    n_val = max(1, len(own) // VAL_FRACTION)
    if len(own) - n_val < 1:
        raise DevDataError(f"class {c} has {len(own)} training images: too few to hold out a validation set")
    others = rng.choice(np.flatnonzero(labels != c), size=n_val, replace=False)
    return own[:len(own) - n_val], own[len(own) - n_val:], others


def _index(categories: list[str], wanted: Sequence[str | int] | None) -> list[int]:
    if not wanted:
        return list(range(len(categories)))
    out = []
    for w in wanted:
        if isinstance(w, str) and w in categories:
            out.append(categories.index(w))
        elif str(w).isdigit() and int(w) < len(categories):
            out.append(int(w))
        else:
            raise DevDataError(f"unknown category {w!r}; known: {', '.join(categories)}")
    return out


def textures_dev_folder(root: Path, seed: int, categories: Sequence[str]) -> Path:
    """Generate (or find) the development part of the textures for ``categories``: its folder."""
    from kdad.data import textures as tex

    return tex.generate_textures(tex.textures_dir(root, seed, tex.TILE, categories, part="dev"), seed=seed,
                                 part="dev", categories=list(categories))


def dev_tasks(name: str, root: str | Path, categories: Sequence[str | int] | None = None, *,
              image_size: int | None = None, seed: int = 0) -> Iterator[DevTask]:
    """The one-class development tasks of ``name`` for ``categories`` (names or indices; all when
    empty). ``seed`` draws a generated set's part (``textures_dev``); semantic hold-outs are fixed."""
    _check(name)
    root = Path(root)
    if name in SEMANTIC_DEV:
        train, names = _train_split(name, root, image_size, seed)
        for c in _index(names, categories):
            fit, normal, other = held_out(train.category, c)
            labels = np.r_[np.zeros(len(normal)), np.ones(len(other))].astype(int)
            yield DevTask(name, names[c], train.images[fit], train.images[np.r_[normal, other]], labels)
        return
    from kdad.data import textures as tex
    from kdad.data.mvtec import load_mvtec_folder

    cats = [tex.TEXTURE_CATEGORIES[c] for c in _index(list(tex.TEXTURE_CATEGORIES), categories)]
    folder = textures_dev_folder(root, seed, cats)
    ds = load_mvtec_folder(folder, cats, image_size or tex.TILE, name=name, mask_size=tex.TILE, channels=3)
    level = tex.read_levels(folder, cats)
    for i, c in enumerate(ds.categories):
        tr, va = ds.train.category == i, ds.test.category == i
        yield DevTask(name, c, ds.train.images[tr], ds.test.images[va], ds.test.anomalous[va].astype(int),
                      ds.test.masks[va], level[va], ds.test.defect[va])
