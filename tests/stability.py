"""Numerical-stability helper: does a method's image AUROC survive last-bit changes of its inputs?

Two machines of the same kind compute the expert's features (and everything after them) with
different rounding; a method whose result moves by points under such changes amplifies noise
(whitening by near-zero eigenvalues, a short training run that has not settled, …).
:func:`float16_perturbation_gap` imitates that difference: every number the method reads — the
expert's hints and the pixels after scaling to [0, 1] — is multiplied by (1 + u·2⁻¹¹),
u ~ U(−1, 1) (the rounding error of float16, the cache's precision), the method is fitted and
scored again with the same seed, and the image-AUROC change is returned in points.

A fixed limit on that change ("< 0.5 points") is a measurement on one machine, not a property: a
method trained by SGD turns last-bit differences into another model, and the size of the change
then depends on the machine's own rounding.  :func:`seed_envelope` states the property the report
relies on instead: a rounding perturbation moves the result no further than the method's own seeds
do, so the report's mean ± std over seeds already covers a machine's rounding.  The bound is
derived from the seeds' own spread (see its docstring), so it holds on any machine on which the
method is as stable as it is here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import numpy as np
import torch

import baselines._common as common
from kdad.methods import build_method
from kdad.metrics import image_auroc

FLOAT16_REL = 2.0 ** -11  # half a unit in the last place of float16's 10-bit mantissa


def perturb(x: torch.Tensor | np.ndarray, rng: np.random.Generator, rel: float = FLOAT16_REL) -> torch.Tensor:
    """float32 copy of ``x`` with every value multiplied by (1 + u·rel), u ~ U(−1, 1)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    u = torch.from_numpy(rng.uniform(-1.0, 1.0, size=tuple(t.shape)).astype(np.float32))
    return t * (1.0 + rel * u)


@contextlib.contextmanager
def perturbed_pixels(rng: np.random.Generator, rel: float = FLOAT16_REL):
    """Within the block, every baseline's ``pixels01`` (uint8 → [0, 1]) returns perturbed values."""
    original = common.pixels01

    def noisy(images):
        return perturb(original(images), rng, rel)

    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("baselines") and getattr(m, "pixels01", None) is original]
    for m in patched:
        m.pixels01 = noisy
    try:
        yield
    finally:
        for m in patched:
            m.pixels01 = original


def fit_score(name: str, options: dict, train, test, train_hints=None, test_hints=None, seed: int = 0):
    _, _, det = build_method(name, options)
    det.fit(train, seed=seed, hints=train_hints)
    return det.score(test, hints=test_hints)


def float16_perturbation_gap(name: str, options: dict, train, test, labels, *, train_hints=None,
                             test_hints=None, seed: int = 0, rel: float = FLOAT16_REL,
                             refit: bool = True, draw: int = 12345) -> tuple[float, float]:
    """(clean image AUROC, |clean − perturbed| AUROC), both in points, for registry method ``name``.

    ``refit`` (default): the perturbed run fits again on perturbed training features, as another
    machine would; ``refit=False`` keeps the clean fit and perturbs only what is scored."""
    _, _, det = build_method(name, options)
    det.fit(train, seed=seed, hints=train_hints)
    clean = 100 * image_auroc(labels, det.score(test, hints=test_hints))
    rng = np.random.default_rng(draw)
    noisy_train, noisy_test = [None if h is None else [perturb(x, rng, rel) for x in h]
                               for h in (train_hints, test_hints)]
    with perturbed_pixels(rng, rel):
        if refit:
            _, _, det = build_method(name, options)
            det.fit(train, seed=seed, hints=noisy_train)
        moved = 100 * image_auroc(labels, det.score(test, hints=noisy_test))
    return clean, abs(clean - moved)


# the envelope's floor (points): a method whose seeds do not move it (kNN, KDE, OC-SVM, …) must not
# move by more than this under float16 rounding of its inputs; one test image of 100 changing places
# with one of the other class moves AUROC by 0.01 points, so 0.5 points is 50 such swaps
ENVELOPE_FLOOR = 0.5
# the envelope's margin beyond the seeds' extremes, in multiples of their range R: a perturbed run
# that were statistically just another seed falls outside [min − R, max + R] of 4 seeds with a
# probability of the order of 1 % (normal values: the expected range of 4 is 2.06 σ, so the
# envelope reaches ~3.1 σ beyond the seeds' midpoint); a rounding perturbation, which leaves the
# initialisation and the batch order as they were, is in practice well inside it
ENVELOPE_RANGES = 1.0


def seed_envelope(seed_aurocs: Sequence[float], floor: float = ENVELOPE_FLOOR,
                  ranges: float = ENVELOPE_RANGES) -> tuple[float, float]:
    """[min − m, max + m] of the seeds' AUROCs with m = max(floor, ranges · (max − min))."""
    a = np.asarray(seed_aurocs, dtype=float)
    margin = max(floor, ranges * float(a.max() - a.min()))
    return float(a.min() - margin), float(a.max() + margin)


def seeds_and_perturbations(name: str, options: dict, train, test, labels, *, train_hints=None,
                            test_hints=None, seeds: Sequence[int] = (0, 1, 2, 3),
                            draws: Sequence[int] = (12345, 777), rel: float = FLOAT16_REL
                            ) -> tuple[list[float], list[float]]:
    """Image AUROC (points) of clean fits with each seed, and of refits with ``seeds[0]`` on inputs
    perturbed at float16 precision by each draw (see the module docstring)."""
    clean = [100 * image_auroc(labels, fit_score(name, options, train, test, train_hints, test_hints, seed=s))
             for s in seeds]
    moved = []
    for draw in draws:
        rng = np.random.default_rng(draw)
        noisy_train, noisy_test = [None if h is None else [perturb(x, rng, rel) for x in h]
                                   for h in (train_hints, test_hints)]
        with perturbed_pixels(rng, rel):
            moved.append(100 * image_auroc(labels, fit_score(name, options, train, test, noisy_train, noisy_test,
                                                             seed=seeds[0])))
    return clean, moved
