"""Evaluation protocols: which images train a model and which test it, with which labels.

- ``one-class`` (the paper): one class/category is normal. Semantic sets train on that class of the
  train split and test on the whole test split, every other class anomalous (a set with a declared
  ``normal_class``, e.g. OCT, has that single task). Defect sets train on the category's good images
  and test on its test images. Pooled sets (HeadCT, BrainMRI) have no official split: 10 normal
  images drawn with the run's seed plus every anomalous one form the test set, the remaining
  normal images the training set (the paper's protocol; seeds repeat the draw).
- ``multi-class`` (kdad's addition): semantic sets are leave-one-class-out (nine classes normal,
  the held-out class anomalous); defect sets train ONE model on the good images of all categories
  (category ``all``) and evaluate it per category.

The test split is never used to choose anything: a :class:`Task` only says which rows to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdad.data import DatasetSpec
from kdad.data.base import PreparedDataset

PROTOCOLS = ("one-class", "multi-class")
POOLED_TEST_NORMALS = 10


class ProtocolError(ValueError):
    pass


@dataclass
class Task:
    """Rows of the prepared dataset: ``train`` from ``train_split``; each evaluation is
    (category name, test split, test rows, 0/1 labels)."""

    train_split: str
    train: np.ndarray
    evaluations: list[tuple[str, str, np.ndarray, np.ndarray]]


def task_categories(spec: DatasetSpec, protocol: str, categories: list[str] | None = None) -> list[str]:
    """The category wildcard values a protocol runs: one job per value."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if spec.open_categories and not categories:
        raise ProtocolError(f"{spec.name}: list the categories of your data under datasets.{spec.name}.categories "
                            "(the names of the category folders)")
    cats = list(categories) if categories else list(spec.categories)
    unknown = [] if spec.open_categories else sorted(set(cats) - set(spec.categories))
    if unknown:
        raise ProtocolError(f"{spec.name}: unknown categories {unknown}; known: {list(spec.categories)}")
    if spec.kind == "defect" and protocol == "multi-class" and not spec.pooled:
        return ["all"]
    if spec.kind == "semantic" and protocol == "one-class" and spec.normal_class:
        return [spec.normal_class]
    return cats


def make_task(ds: PreparedDataset, spec: DatasetSpec, protocol: str, category: str, seed: int, *,
              max_train_images: int | None = None, categories: list[str] | None = None) -> Task:
    rng = np.random.default_rng(seed)
    names = ds.categories
    if category != "all" and category not in names:
        raise ProtocolError(f"{ds.name}: unknown category {category!r}; known: {names}")
    if spec.pooled:
        task = _pooled(ds, names.index(category), category, rng)
    elif ds.kind == "semantic":
        c = names.index(category)
        test_all = np.arange(len(ds.test))
        if protocol == "one-class":
            train = np.flatnonzero(ds.train.category == c)
            labels = (ds.test.category != c).astype(np.int64)
        else:
            train = np.flatnonzero(ds.train.category != c)
            labels = (ds.test.category == c).astype(np.int64)
        task = Task("train", train, [(category, "test", test_all, labels)])
    else:
        evaluated = categories or names
        if protocol == "one-class":
            c = names.index(category)
            train = np.flatnonzero(ds.train.category == c)
            evaluated = [category]
        else:
            if category != "all":
                raise ProtocolError("the multi-class protocol of a defect dataset trains one model: category 'all'")
            chosen = [names.index(n) for n in evaluated]
            train = np.flatnonzero(np.isin(ds.train.category, chosen))
        evals = []
        for name in evaluated:
            rows = np.flatnonzero(ds.test.category == names.index(name))
            evals.append((name, "test", rows, ds.test.anomalous[rows].astype(np.int64)))
        task = Task("train", train, evals)
    if len(task.train) == 0:
        raise ProtocolError(f"{ds.name}/{protocol}/{category}: no training images")
    if max_train_images and len(task.train) > max_train_images:
        task.train = np.sort(rng.choice(task.train, size=max_train_images, replace=False))
    for name, _split, rows, labels in task.evaluations:
        if len(np.unique(labels)) < 2:
            raise ProtocolError(f"{ds.name}/{protocol}/{name}: the test set needs normal and anomalous images")
    return task


def _pooled(ds: PreparedDataset, c: int, category: str, rng: np.random.Generator) -> Task:
    rows = np.flatnonzero(ds.test.category == c)
    normal = rows[~ds.test.anomalous[rows]]
    anomalous = rows[ds.test.anomalous[rows]]
    if len(normal) <= POOLED_TEST_NORMALS:
        raise ProtocolError(f"{ds.name}: {len(normal)} normal images; the paper's split needs more than "
                            f"{POOLED_TEST_NORMALS}")
    test_normal = np.sort(rng.choice(normal, size=POOLED_TEST_NORMALS, replace=False))
    train = np.setdiff1d(normal, test_normal)
    test = np.concatenate([test_normal, anomalous])
    labels = np.concatenate([np.zeros(len(test_normal), np.int64), np.ones(len(anomalous), np.int64)])
    return Task("test", train, [(category, "test", test, labels)])
