"""Maps on a fixed subset of the test images (``mkd.map_subset``), for localisation methods that
cost many backward passes per image: the subset is fixed by the test labels alone, detection still
uses every image, and the pixel metrics equal those of the full run's maps at the same positions."""

from __future__ import annotations

import numpy as np
import pytest

from kdad import metrics
from kdad.experiment import load_config, plan
from kdad.runs import map_rows

MKD = {"method": "mkd", "expert": "efficientnet_lite0_random", "epochs": 1, "batch_size": 8}


def test_map_rows_is_fixed_sorted_and_balanced():
    labels = np.array([0] * 9 + [1] * 5 + [0] * 3 + [1] * 7)
    assert np.array_equal(map_rows(labels, None), np.arange(len(labels)))
    rows = map_rows(labels, 4)
    assert np.array_equal(rows, np.sort(rows)) and len(set(rows)) == 8
    assert (labels[rows] == 0).sum() == 4 and (labels[rows] == 1).sum() == 4
    assert np.array_equal(rows, map_rows(labels.copy(), 4))
    # more than there are: every image of that label
    rows = map_rows(labels, 100)
    assert np.array_equal(rows, np.arange(len(labels)))


@pytest.mark.parametrize("bad", [0, -3])
def test_a_subset_must_hold_images(bad):
    from kdad.mkd import MKDConfig
    with pytest.raises(ValueError, match="map_subset"):
        MKDConfig(map_subset=bad)


def test_subset_maps_equal_the_full_maps_at_their_positions(tmp_path, monkeypatch):
    from kdad import runs
    cfg = load_config({
        "seeds": [0], "work_dir": str(tmp_path / "w"), "results_dir": str(tmp_path / "r"),
        "report_dir": str(tmp_path / "rep"),
        "methods": {"mkd": MKD, "mkd-sub": {"method": "mkd", "ablation_of": "mkd", "map_subset": 3}},
        "datasets": {"textures": {"image_size": 32, "categories": ["brick"], "methods": ["mkd", "mkd-sub"],
                                  "max_train_images": 16}}})
    runs.prepare(cfg, "textures", "seed0")
    runs.features(cfg, "textures", "seed0", "efficientnet_lite0_random", False)
    key = plan(cfg)[0]
    runs.train(cfg, "textures", "one-class", key.model, 0, tmp_path / "w" / "models" / key.model_path)
    seen: dict[str, list] = {}
    real = runs.build_method

    def build(*args, **kwargs):
        spec, config, detector = real(*args, **kwargs)
        anomaly_map = detector.anomaly_map

        def recorded(images, **kw):
            out = anomaly_map(images, **kw)
            seen.setdefault(kwargs.get("where", str(args)), []).append(np.asarray(out))
            return out
        detector.anomaly_map = recorded
        return spec, config, detector
    monkeypatch.setattr(runs, "build_method", build)
    full = runs.evaluate(cfg, "textures", "one-class", "mkd", 0, tmp_path / "e-full")["runs"][0]
    sub = runs.evaluate(cfg, "textures", "one-class", "mkd-sub", 0, tmp_path / "e-sub")["runs"][0]
    (full_maps,), (sub_maps,) = seen.values()
    assert full["image_auroc"] == sub["image_auroc"]  # detection: every test image in both
    assert full["map_test_images"] == full["test_images"] and sub["map_test_images"] == 6
    inputs = runs._Inputs(cfg, key)
    (_, split, test_rows, labels), = inputs.task(cfg, key, "brick").evaluations
    rows = map_rows(labels, 3)
    np.testing.assert_allclose(sub_maps, full_maps[rows], rtol=1e-4, atol=1e-6)
    masks = getattr(inputs.ds, split).masks[test_rows][rows]
    assert sub["pixel_auroc"] == pytest.approx(metrics.pixel_auroc(masks, sub_maps), abs=1e-12)
    assert sub["pixel_auroc"] != pytest.approx(full["pixel_auroc"], abs=1e-9)
