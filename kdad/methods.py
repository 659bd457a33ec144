"""The method registry and the one interface every method has: MKD, its ablations, every baseline.

A *Detector* (subclass of :class:`Detector`) is built from its config dataclass and has

    fit(images, *, seed, hints=None, checkpoint=None) -> self   images: uint8 tensor [N, 1|3, H, W], normal only
    score(images, *, hints=None) -> np.ndarray [N]               higher = more anomalous
    anomaly_map(images, *, hints=None) -> np.ndarray [N, H, W]   only when ``spec.localizes``
    save(path) / load(path)                                      the fitted state, with its options
    to(device)                                                   where it computes (cpu, cuda)
    history_                                                     training records (empty for untrained methods)

``hints`` are the frozen expert's activations for exactly those images (the cached float16 ones);
methods that do not use the expert ignore them, methods that do give the same result without them
(they then run the expert themselves). ``checkpoint`` is a file a trained method may write every
epoch and resume from (see :mod:`kdad.training`); untrained methods ignore it.

Options are of two kinds: *training* options change the fitted state; options whose dataclass
field carries ``metadata=EVALUATION`` only change how a fitted model scores or maps (MKD's
localisation method, its score hints, …). A saved model records its training options; loading it
under different ones is an error, and the workflow retrains only when training options change.

A method is registered with its config dataclass (the schema of its YAML block: unknown keys are
errors) and a ``build(config) -> Detector`` function.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdad.config import ConfigError, config_hash, from_dict
from kdad.registry import Registry

EVALUATION = {"stage": "evaluate"}  # field metadata: an option that does not change the fitted state
FORMAT = 1


def evaluation_field(default: Any) -> Any:
    """A dataclass field that only changes evaluation (scoring, maps), not training."""
    return dataclasses.field(default=default, metadata=EVALUATION)


def training_options(config) -> dict:
    """The options of ``config`` that change what ``fit`` produces (every field not marked EVALUATION)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("stage") != "evaluate"}


class ModelFileError(RuntimeError):
    """A saved model cannot be read or does not belong to the options it is loaded with."""


# -- plain data: what a model file may hold ------------------------------------------------------
# Model files and checkpoints hold only tensors, dicts with str keys, lists, str, int, float, bool
# and None, and are read with ``torch.load(weights_only=True)``: unpickling a planted file then runs
# no code. numpy arrays and tuples are stored as tagged dicts and restored by :func:`from_plain`.
_ARRAY, _SCALAR, _TUPLE = "__ndarray__", "__npscalar__", "__tuple__"


def to_plain(obj: Any, where: str = "state") -> Any:
    """``obj`` with numpy arrays/scalars and tuples replaced by tagged plain data; anything else
    that is not plain data (a module, an arbitrary object) is a TypeError naming where it is."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return {_ARRAY: torch.from_numpy(np.array(obj, copy=True, order="C"))}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return {_SCALAR: torch.from_numpy(np.asarray(obj).reshape(1).copy())}
    if obj is None or type(obj) in (str, int, float, bool):
        return obj
    if isinstance(obj, tuple):
        return {_TUPLE: [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {k: to_plain(v, f"{where}.{k}") for k, v in obj.items()}
    raise TypeError(f"{where}: a {type(obj).__name__} is not plain data (tensors, arrays, dicts, lists, str, "
                    "numbers, None); store its state as such (see Detector.fitted_state)")


def from_plain(obj: Any) -> Any:
    """The inverse of :func:`to_plain`."""
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY} and isinstance(obj[_ARRAY], torch.Tensor):
            return obj[_ARRAY].numpy()
        if set(obj) == {_SCALAR} and isinstance(obj[_SCALAR], torch.Tensor):
            return obj[_SCALAR].numpy()[0]
        if set(obj) == {_TUPLE} and isinstance(obj[_TUPLE], list):
            return tuple(from_plain(v) for v in obj[_TUPLE])
        return {k: from_plain(v) for k, v in obj.items()}
    return obj


def load_plain(path: str | os.PathLike, what: str = "model file") -> Any:
    """``torch.load`` with ``weights_only=True``: a file holding anything but plain data (a pickled
    object whose loading would run code) is refused with :class:`ModelFileError`, its code not run."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: refusing to read this {what}: it holds objects other than tensors and "
                             f"plain data, which loading could execute ({first}); kdad writes no such file — "
                             "delete it, and train again if it should be there") from None
    except Exception as err:  # truncated or foreign file
        raise ModelFileError(f"{path}: not a readable kdad {what} ({type(err).__name__}: {err}); "
                             "delete it and train again") from err


class Detector:
    """Base class of every method: the shared parts of the interface (save, load, device).

    The fitted state is, as in scikit-learn, every attribute whose name ends in ``_`` (``cloner_``,
    ``bank_``, ``model_``, ``history_``); a subclass with modules to store more compactly overrides
    :meth:`fitted_state` / :meth:`load_fitted_state`.
    """

    #: True when ``anomaly_map`` returns maps already normalised to [0, 1] per image (what the MKD
    #: paper's own pixel metric assumes); set by methods whose maps are.
    maps_in_unit_range: bool = False

    def __init__(self, config) -> None:
        self.config = config
        self.device = torch.device("cpu")
        self.history_: list[dict] = []

    # -- the interface --------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "Detector":
        raise NotImplementedError

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        raise NotImplementedError

    def anomaly_map(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not localise")

    def to(self, device: str | torch.device) -> "Detector":
        """Compute on ``device`` from now on; modules and fitted tensors (attributes ending in ``_``)
        are moved there."""
        self.device = torch.device(device)
        for key, value in list(vars(self).items()):
            if isinstance(value, torch.nn.Module):
                value.to(self.device)
            elif key.endswith("_") and isinstance(value, torch.Tensor):
                setattr(self, key, value.to(self.device))
        return self

    # -- persistence ----------------------------------------------------------------------------
    def fitted_state(self) -> dict:
        return {k: v for k, v in vars(self).items() if k.endswith("_")}

    def load_fitted_state(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Write the fitted state and the training options atomically to ``path``."""
        from kdad.training import save_atomic

        blob = {"format": FORMAT, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "training_options": training_options(self.config), "meta": meta or {},
                "state": self.fitted_state()}
        save_atomic(to_plain(blob, where=type(self).__name__), path)
        return Path(path)

    def load(self, path: str | os.PathLike) -> "Detector":
        """Read a model written by :meth:`save`; its training options must equal this config's."""
        path = Path(path)
        try:
            blob = from_plain(load_plain(path))
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such model file; run the train step first") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state" not in blob:
            raise ModelFileError(f"{path}: not a kdad model file of format {FORMAT}; delete it and train again")
        want = f"{type(self).__module__}.{type(self).__qualname__}"
        if blob["class"] != want:
            raise ModelFileError(f"{path} holds a {blob['class']} model, not a {want}")
        mine = _comparable(training_options(self.config))
        if _comparable(blob["training_options"]) != mine:
            diff = sorted(k for k in set(mine) | set(blob["training_options"])
                          if _comparable(blob["training_options"]).get(k) != mine.get(k))
            raise ModelFileError(f"{path} was trained with other options ({', '.join(diff)}); train it again")
        self.load_fitted_state(blob["state"])
        self.meta_ = blob.get("meta", {})
        return self.to(self.device)


def _comparable(options: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}


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
_MODULES = ("kdad.mkd", "baselines")


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


def method_config(name: str, options: dict | None = None, *, where: str = ""):
    """(spec, config) for registry ``name`` with YAML ``options`` (strictly validated, nothing built)."""
    spec = get_method(name)
    return spec, from_dict(spec.config, options, where=where or f"method {name}")


def build_method(name: str, options: dict | None = None, *, where: str = ""):
    """(spec, config, detector) for registry ``name`` with YAML ``options`` (strictly validated)."""
    spec, config = method_config(name, options, where=where)
    try:
        return spec, config, spec.build(config)
    except (ValueError, TypeError) as err:  # an option combination the method rejects when building
        raise ConfigError(f"{where or name}: {err}") from err


def training_fingerprint(method: str, config) -> str:
    """Hash of what makes two fitted models of ``method`` interchangeable (its training options)."""
    return config_hash({"method": method, "training": training_options(config)})


def resume_fingerprint(method: str, config, seed: int, n_images: int) -> str:
    """What a training checkpoint must match to be resumed: the training options except the epoch
    count (more epochs continue a shorter run exactly), the seed and the number of images."""
    options = {k: v for k, v in training_options(config).items() if k != "epochs"}
    return config_hash({"method": method, "training": options, "seed": seed, "images": n_images})
