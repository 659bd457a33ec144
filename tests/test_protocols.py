"""Which rows train and test each protocol's models."""

import numpy as np
import pytest

from kdad.data import get_dataset
from kdad.data.base import ImageSet, PreparedDataset
from kdad.protocols import ProtocolError, make_task, task_categories


def _semantic():
    img = np.zeros((30, 1, 4, 4), np.uint8)
    return PreparedDataset("mnist5k", "semantic", [str(d) for d in range(10)],
                           ImageSet(img, np.arange(30) % 3), ImageSet(img[:12], np.arange(12) % 3))


def test_one_class_and_leave_one_class_out():
    ds, spec = _semantic(), get_dataset("mnist5k")
    one = make_task(ds, spec, "one-class", "1", seed=0)
    assert set(ds.train.category[one.train]) == {1}
    np.testing.assert_array_equal(one.evaluations[0][3], ds.test.category != 1)
    loo = make_task(ds, spec, "multi-class", "1", seed=0)
    assert 1 not in set(ds.train.category[loo.train])
    np.testing.assert_array_equal(loo.evaluations[0][3], ds.test.category == 1)
    sub = make_task(ds, spec, "multi-class", "1", seed=3, max_train_images=5)
    assert len(sub.train) == 5 and np.array_equal(sub.train, make_task(ds, spec, "multi-class", "1", seed=3,
                                                                       max_train_images=5).train)


def test_declared_normal_class_and_defect_sets():
    assert task_categories(get_dataset("oct"), "one-class") == ["NORMAL"]
    assert task_categories(get_dataset("textures"), "multi-class") == ["all"]
    with pytest.raises(ProtocolError, match="unknown protocol"):
        task_categories(get_dataset("textures"), "few-shot")
