"""The benchmark's configuration (the YAML that Snakemake and ``kdad`` read) and its plan of runs.

A run is (dataset, protocol, category, variant, seed). ``methods`` maps variant names to a registry
method plus its options, so an ablation is one more entry::

    methods:
      mkd: {method: mkd}
      mkd-hints-1: {method: mkd, train_hints: [3], score_hints: [3]}
      knn: {method: knn}

Unknown keys anywhere are errors (here and in every method's config dataclass).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kdad.config import ConfigError, from_dict
from kdad.data import get_dataset
from kdad.protocols import task_categories


@dataclass
class DatasetConfig:
    image_size: int | None = None           # default: the paper's size for the dataset
    categories: tuple[str, ...] | None = None   # None or "all": every category
    protocols: tuple[str, ...] = ("one-class",)
    methods: tuple[str, ...] = ("mkd",)     # variant names from the top-level ``methods``, every protocol
    protocol_methods: dict = field(default_factory=dict)  # protocol → more variants run in that protocol only
    max_train_images: int | None = None     # random subset per run (from the run's seed); None = all
    epochs: int | None = None               # sets ``epochs`` of every method that has that field
    normalize: bool | None = None           # sets ``normalize`` of every method that has that field
    overrides: dict = field(default_factory=dict)  # any method option for this dataset (e.g. lam: 0.5)
    source: str | None = None               # a local copy (file or folder) instead of the download
    seed: int = 0                           # generator seed of synthetic datasets (textures)
    localization_table: bool = False        # variant "mkd", one-class: every localisation method × Gaussian
    example_maps: bool = False              # keep a few maps of the first seed for the figure


@dataclass
class ExperimentConfig:
    seeds: tuple[int, ...] = (0,)
    data_root: str = "resources/data"
    work_dir: str = "work"
    results_dir: str = "results"
    report_dir: str = "report"
    threads: int = 1
    methods: dict = field(default_factory=lambda: {"mkd": {"method": "mkd"}})
    datasets: dict = field(default_factory=dict)

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"dataset {name!r} is not in the config; configured: {sorted(self.datasets)}") from None


def load_config(source: str | Path | dict) -> ExperimentConfig:
    raw = dict(source) if isinstance(source, dict) else yaml.safe_load(Path(source).read_text()) or {}
    datasets = raw.pop("datasets", {}) or {}
    cfg = from_dict(ExperimentConfig, raw, where="config")
    parsed = {}
    for name, values in datasets.items():
        values = dict(values or {})
        if values.get("categories") == "all":
            values["categories"] = None
        get_dataset(name)  # unknown dataset name → error listing the known ones
        parsed[name] = from_dict(DatasetConfig, values, where=f"config.datasets.{name}")
    cfg.datasets = parsed
    from kdad.methods import get_method
    for variant, entry in cfg.methods.items():
        if not isinstance(entry, dict) or "method" not in entry:
            raise ConfigError(f"config.methods.{variant}: needs a `method:` naming a registered method")
        get_method(entry["method"])
    for name, d in parsed.items():
        extra = d.protocol_methods or {}
        for p in extra:
            if p not in d.protocols:
                raise ConfigError(f"config.datasets.{name}.protocol_methods: {p!r} is not one of its protocols {d.protocols}")
        for v in [*d.methods, *(v for vs in extra.values() for v in vs)]:
            if v not in cfg.methods:
                raise ConfigError(f"config.datasets.{name}.methods: {v!r} is not an entry of config.methods "
                                  f"({sorted(cfg.methods)})")
        for p in d.protocols:
            task_categories(get_dataset(name), p, categories=list(d.categories or []))
        known = {f.name for v in cfg.methods.values() for f in dataclasses.fields(get_method(v["method"]).config)}
        unknown = sorted(set(d.overrides or {}) - known)
        if unknown:
            raise ConfigError(f"config.datasets.{name}.overrides: no method has the option(s) {unknown}")
    return cfg


def method_options(cfg: ExperimentConfig, dataset: str, variant: str) -> tuple[str, dict]:
    """(registry name, options) of a variant on a dataset.

    Dataset-level ``epochs``, ``normalize`` and ``overrides`` fill in options the variant does not
    set itself (a variant's own ``epochs: 2`` wins, so a slow baseline can train shorter)."""
    from kdad.methods import get_method

    entry = dict(cfg.methods[variant])
    name = entry.pop("method")
    fields = {f.name for f in dataclasses.fields(get_method(name).config)}
    d = cfg.dataset(dataset)
    own = set(entry)
    for key in ("epochs", "normalize"):
        if getattr(d, key) is not None and key in fields and key not in own:
            entry[key] = getattr(d, key)
    for key, value in (d.overrides or {}).items():
        if key in fields and key not in own:
            entry[key] = value
    return name, entry


def expert_of(cfg: ExperimentConfig, dataset: str, variant: str) -> tuple[str, bool] | None:
    """(expert, normalize) whose cached hints the variant reads, or None if it uses no expert."""
    from kdad.methods import get_method

    name, options = method_options(cfg, dataset, variant)
    spec = get_method(name)
    if spec.expert_field is None:
        return None
    config = from_dict(spec.config, options, where=f"config.methods.{variant}")
    return getattr(config, spec.expert_field), bool(getattr(config, "normalize", True))


def slug(name: str) -> str:
    """A file-name-safe category name ("T-shirt/top" → "t-shirt_top")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_").lower() or "x"


@dataclass(frozen=True)
class RunKey:
    """One job: a variant trained with one seed for every category of a (dataset, protocol).

    Each category still gets its own model (one-class, leave-one-class-out) — or, for the
    multi-class protocol of a defect set, the single category "all" is one unified model. Grouping
    the categories into one job loads the prepared data and the expert's hints once.
    """

    dataset: str
    protocol: str
    variant: str
    seed: int
    categories: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.protocol}/{self.variant}/seed{self.seed}"


def plan(cfg: ExperimentConfig) -> list[RunKey]:
    runs = []
    for dataset, d in cfg.datasets.items():
        spec = get_dataset(dataset)
        for protocol in d.protocols:
            cats = tuple(task_categories(spec, protocol, categories=list(d.categories or [])))
            for variant in dict.fromkeys([*d.methods, *(d.protocol_methods or {}).get(protocol, [])]):
                for seed in cfg.seeds:
                    runs.append(RunKey(dataset, protocol, variant, seed, cats))
    return runs


def run_key(cfg: ExperimentConfig, dataset: str, protocol: str, variant: str, seed: int) -> RunKey:
    for key in plan(cfg):
        if (key.dataset, key.protocol, key.variant, key.seed) == (dataset, protocol, variant, seed):
            return key
    raise ConfigError(f"the config has no run {dataset}/{protocol}/{variant}/seed{seed}")


def features_dir(cfg: ExperimentConfig, dataset: str, expert: str, normalize: bool) -> Path:
    return Path(cfg.work_dir) / "features" / dataset / f"{expert}-{'norm' if normalize else 'raw'}"


def dataset_file(cfg: ExperimentConfig, dataset: str) -> Path:
    return Path(cfg.work_dir) / "data" / f"{dataset}.npz"


def image_size(cfg: ExperimentConfig, dataset: str) -> int:
    return cfg.dataset(dataset).image_size or get_dataset(dataset).image_size


def dump(cfg: ExperimentConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=1, sort_keys=True, default=list)
