"""The benchmark's configuration (the YAML that Snakemake and ``kdad`` read) and its plan of jobs.

A run is (dataset, protocol, category, variant, seed). ``methods`` maps variant names to a registry
method plus its options, so an ablation is one more entry::

    methods:
      mkd: {method: mkd}
      mkd-hints-1: {method: mkd, ablation_of: mkd, train_hints: [3], score_hints: [3]}
      knn: {method: knn}

``ablation_of`` (optional) says which variant an entry is compared against, and the entry starts
from that variant's options (it lists only what it changes); entries without it are the compared
methods. Unknown keys anywhere are errors (here and in every method's config
dataclass), and everything that can be checked without data is checked when the config is loaded.

Jobs: a *model* is what ``fit`` produces; two variants whose training options are equal share one
(``model_id``), so an evaluation-only change (MKD's score hints, localisation method, blur)
re-evaluates a trained model instead of training another. One train job fits every category of
a (dataset, protocol, model, seed); one evaluate job scores every category of a (dataset,
protocol, variant, seed).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kdad.config import ConfigError, config_hash, from_dict, strict_yaml
from kdad.data import get_dataset
from kdad.protocols import task_categories

DEVICES = ("auto", "cpu", "cuda")
RULES = ("prepare", "features", "train", "evaluate")
# names that become file names and Snakemake wildcards (datasets, variants, protocols): no shell or
# path syntax, so that no config value can run a command or leave its folder
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(value, where: str) -> str:
    """``value`` if it is a safe name (letters, digits, ``_ . -``, starting with a letter or digit);
    otherwise one :class:`ConfigError` naming it."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a usable name; it becomes a file name and a workflow "
                          "wildcard, so use only letters, digits, '_', '.' and '-', starting with a letter or digit")
    return value
MAX_IMAGE_SIZE = 1024
MAX_SEED = 2**31 - 1  # numpy's and torch's generators take any; 32 bits keep every tool's seed valid


@dataclass
class DatasetConfig:
    image_size: int | None = None           # default: the paper's size for the dataset
    categories: tuple[str, ...] | None = None   # None or "all": every category
    protocols: tuple[str, ...] = ("one-class",)
    methods: tuple[str, ...] = ("mkd",)     # variant names from the top-level ``methods``, every protocol
    protocol_methods: dict = field(default_factory=dict)  # protocol → more variants run in that protocol only
    max_train_images: int | None = None     # random subset per run (from the run's seed); None = all
    overrides: dict = field(default_factory=dict)  # registry method → options on this dataset, e.g. {mkd: {lam: 0.5}}
    source: str | None = None               # a local copy (file or folder) instead of the download
    data_seed: int | None = None            # generated sets: None = each run's own seed draws its data
    examples: int = 2                       # anomaly-map examples kept per category: this many good and defective
    resources: dict = field(default_factory=dict)  # per rule: {train: {mem_mb: …, runtime: …}} (minutes)

    def __post_init__(self) -> None:
        self.protocols = tuple(self.protocols)
        self.methods = tuple(self.methods)
        if self.image_size is not None and not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be ≥ 8 and ≤ {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.categories is not None:
            if not self.categories:
                raise ValueError("categories is an empty list; name at least one category, or leave the key "
                                 "out (or write `all`) for every category")
            twice = sorted({c for c in self.categories if self.categories.count(c) > 1})
            if twice:
                raise ValueError(f"categories lists {twice} more than once; name each category once")
        if self.data_seed is not None and not 0 <= self.data_seed <= MAX_SEED:
            raise ValueError(f"data_seed must be an integer from 0 to {MAX_SEED}, got {self.data_seed}")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise ValueError(f"max_train_images must be ≥ 1, got {self.max_train_images}")
        if self.examples < 0:
            raise ValueError(f"examples must be ≥ 0, got {self.examples}")
        if not self.protocols or not self.methods:
            raise ValueError("protocols and methods must not be empty")
        unknown = sorted(set(self.resources) - set(RULES))
        if unknown:
            raise ValueError(f"resources: unknown rule(s) {unknown}; known: {list(RULES)}")
        for rule, res in self.resources.items():
            bad = sorted(set(res or {}) - {"mem_mb", "runtime", "gpu"})
            if bad:
                raise ValueError(f"resources.{rule}: unknown key(s) {bad}; known: mem_mb, runtime, gpu")
            for k, v in (res or {}).items():
                v = yaml.safe_load(v) if isinstance(v, str) else v  # `--config` passes text
                if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "gpu" else 1):
                    raise ValueError(f"resources.{rule}.{k} must be an integer ≥ {0 if k == 'gpu' else 1}, "
                                     f"got {v!r}")
                res[k] = v


@dataclass
class ExperimentConfig:
    seeds: tuple[int, ...] = (0,)
    data_root: str = "resources/data"
    work_dir: str = "work"
    results_dir: str = "results"
    report_dir: str = "report"
    threads: int = 1                        # torch threads per job (Snakemake's `threads:`)
    device: str = "auto"                    # auto (cuda when available) | cpu | cuda
    hint_cache_gb: float = 8.0              # cache the expert's hints up to this size per dataset; else per batch
    methods: dict = field(default_factory=lambda: {"mkd": {"method": "mkd"}})
    datasets: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        bad = [s for s in self.seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be integers from 0 to {MAX_SEED}, got {bad}")
        if self.threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {self.threads}")
        if self.hint_cache_gb < 0:
            raise ValueError(f"hint_cache_gb must be ≥ 0, got {self.hint_cache_gb}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        results, report = Path(self.results_dir).resolve(), Path(self.report_dir).resolve()
        if results == report or results in report.parents or report in results.parents:
            raise ValueError(f"report_dir ({self.report_dir}) and results_dir ({self.results_dir}) must not "
                             "contain each other: the report step rewrites its folder")

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"dataset {name!r} is not in the config; configured: {sorted(self.datasets)}") from None


META_KEYS = ("method", "ablation_of")  # keys of a methods entry that are not method options


def read_config_file(path: str | Path) -> dict:
    """A config file as a dict: JSON (what the workflow writes) or YAML; one clear error otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else strict_yaml(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({err})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got {type(raw).__name__}")
    return raw


def workflow_config(config: dict, config_files) -> dict:
    """The config Snakemake assembled (``--configfile`` files updated with ``--config`` values), as
    the workflow uses it: each file re-read strictly (Snakemake's own YAML reader keeps the last of
    two equal keys silently), ``--config`` texts turned into the numbers and lists they stand for
    (Snakemake passes ``seeds=[0,1]`` as ["0", "1"]), and everything checked, as plain JSON values."""
    for f in config_files:
        read_config_file(f)
    return json.loads(dump(load_config(config)))


def load_config(source: str | Path | dict) -> ExperimentConfig:
    raw = dict(source) if isinstance(source, dict) else read_config_file(source)
    datasets = raw.pop("datasets", {}) or {}
    if not isinstance(datasets, dict):
        raise ConfigError("config.datasets must map dataset names to their settings")
    cfg = from_dict(ExperimentConfig, raw, where="config")
    parsed = {}
    for name, values in datasets.items():
        check_name(name, "config.datasets")
        values = dict(values or {})
        if values.get("categories") == "all":
            values["categories"] = None
        get_dataset(name)  # unknown dataset name → error listing the known ones
        parsed[name] = from_dict(DatasetConfig, values, where=f"config.datasets.{name}")
    cfg.datasets = parsed
    if not parsed:
        raise ConfigError("config.datasets is empty: name at least one dataset")
    _check(cfg)
    return cfg


def _check(cfg: ExperimentConfig) -> None:
    """Everything that can be checked without data, so no job starts on a config that cannot run."""
    from kdad.methods import get_method

    _check_distinct([check_name(v, "config.methods") for v in cfg.methods], "config.methods", str.lower,
                    "variant names that differ only in case share their files on a case-insensitive file system")
    for variant, entry in cfg.methods.items():
        if not isinstance(entry, dict) or "method" not in entry:
            raise ConfigError(f"config.methods.{variant}: needs a `method:` naming a registered method")
        get_method(entry["method"])
    for variant in cfg.methods:
        _ablation_chain(cfg, variant)
    for name, d in cfg.datasets.items():
        spec = get_dataset(name)
        extra = d.protocol_methods or {}
        for p in extra:
            if p not in d.protocols:
                raise ConfigError(f"config.datasets.{name}.protocol_methods: {p!r} is not one of its protocols {d.protocols}")
        for v in [*d.methods, *(v for vs in extra.values() for v in vs)]:
            if v not in cfg.methods:
                raise ConfigError(f"config.datasets.{name}.methods: {v!r} is not an entry of config.methods "
                                  f"({sorted(cfg.methods)})")
        for p in d.protocols:
            check_name(p, f"config.datasets.{name}.protocols")
            cats = task_categories(spec, p, categories=list(d.categories or []))
            _check_distinct(cats, f"config.datasets.{name}.categories", slug,
                            "each category's model file is named after it, and those names would be the same file")
        for method, options in (d.overrides or {}).items():
            fields = {f.name for f in dataclasses.fields(get_method(method).config)}  # unknown method → error
            if not isinstance(options, dict):
                raise ConfigError(f"config.datasets.{name}.overrides.{method}: expected a mapping of options")
            unknown = sorted(set(options) - fields)
            if unknown:
                raise ConfigError(f"config.datasets.{name}.overrides.{method}: unknown option(s) {unknown}; "
                                  f"known: {sorted(fields)}")
        size = image_size(cfg, name)
        for variant in variants(cfg, name):
            method, options = method_options(cfg, name, variant)
            mspec = get_method(method)
            try:
                config = from_dict(mspec.config, options, where=f"config.methods.{variant}")
            except ConfigError as err:
                raise ConfigError(f"{err} (with datasets.{name}'s settings applied)") from None
            if mspec.expert_field is not None:
                _check_expert_size(getattr(config, mspec.expert_field), size, f"{name}/{variant}")


def _check_distinct(names, where: str, key, why: str) -> None:
    """One :class:`ConfigError` naming the first two of ``names`` with the same ``key``."""
    seen: dict = {}
    for n in names:
        k = key(n)
        if k in seen and seen[k] != n:
            raise ConfigError(f"{where}: {seen[k]!r} and {n!r} both map to the name {k!r}; {why}: rename one")
        seen.setdefault(k, n)


def _check_expert_size(expert: str, size: int, where: str) -> None:
    from kdad.experts import expert_class

    stride = max(h.stride for h in expert_class(expert).hints)
    if size % stride:
        raise ConfigError(f"{where}: image_size {size} is not a multiple of {stride}, the largest stride of the "
                          f"expert {expert}; use e.g. {max(stride, round(size / stride) * stride)}")


def _ablation_chain(cfg: ExperimentConfig, variant: str) -> list[str]:
    """``variant``, the variant it ablates, that one's, …: an unknown name, a variant of another
    method or a cycle is an error (a cycle would leave no compared method to show)."""
    chain = [variant]
    while (ref := cfg.methods[chain[-1]].get("ablation_of")) is not None:
        where = f"config.methods.{chain[-1]}.ablation_of"
        if not isinstance(ref, str) or ref not in cfg.methods:
            raise ConfigError(f"{where}: {ref!r} is not an entry of config.methods ({sorted(cfg.methods)})")
        if ref in chain:
            raise ConfigError(f"{where}: {ref!r} makes a cycle ({' → '.join([*chain, ref])}); an ablation must "
                              "end at a compared method (an entry without ablation_of)")
        if cfg.methods[ref]["method"] != cfg.methods[chain[-1]]["method"]:
            raise ConfigError(f"{where}: {ref!r} is a {cfg.methods[ref]['method']} variant, not "
                              f"{cfg.methods[chain[-1]]['method']}; an ablation changes options of one method")
        chain.append(ref)
    return chain


def variants(cfg: ExperimentConfig, dataset: str, protocol: str | None = None) -> list[str]:
    """The variants a dataset runs (in ``protocol``, or in any of its protocols), in config order."""
    d = cfg.dataset(dataset)
    extra = d.protocol_methods or {}
    more = extra.get(protocol, []) if protocol else [v for vs in extra.values() for v in vs]
    return list(dict.fromkeys([*d.methods, *more]))


def method_options(cfg: ExperimentConfig, dataset: str, variant: str) -> tuple[str, dict]:
    """(registry name, options) of a variant on a dataset.

    An ablation (``ablation_of: v``) is ``v``'s options with its own ones changed, so
    ``mkd10-raw: {method: mkd, ablation_of: mkd10, map_normalization: none}`` evaluates the model
    trained with ``mkd10``'s options (an ablation that changes only evaluation options shares it).
    The dataset's ``overrides`` for the variant's registry method fill in the options that neither
    the variant nor the ones it ablates set (the paper's MVTec λ: ``overrides: {mkd: {lam: 0.5}}``;
    an ablation's own ``lam: 0.1`` still wins)."""
    entry = {}
    for v in reversed(_ablation_chain(cfg, variant)):
        entry.update({k: val for k, val in cfg.methods[v].items() if k not in META_KEYS})
    name = cfg.methods[variant]["method"]
    for key, value in ((cfg.dataset(dataset).overrides or {}).get(name) or {}).items():
        entry.setdefault(key, value)
    return name, entry


def resolved_config(cfg: ExperimentConfig, dataset: str, variant: str):
    """(registry name, method config dataclass) of a variant on a dataset."""
    from kdad.methods import method_config

    name, options = method_options(cfg, dataset, variant)
    return name, method_config(name, options, where=f"config.methods.{variant}")[1]


def model_id(cfg: ExperimentConfig, dataset: str, variant: str) -> str:
    """The trained model a variant evaluates: ``<method>-<hash of its training options>``."""
    from kdad.methods import training_options

    name, config = resolved_config(cfg, dataset, variant)
    return f"{name}-{config_hash(training_options(config))[:10]}"


def model_variant(cfg: ExperimentConfig, dataset: str, protocol: str, model: str) -> str:
    """A variant (the first in config order) that evaluates ``model``: its options train it."""
    for v in variants(cfg, dataset, protocol):
        if model_id(cfg, dataset, v) == model:
            return v
    raise ConfigError(f"no variant of {dataset}/{protocol} trains the model {model!r}")


def expert_of(cfg: ExperimentConfig, dataset: str, variant: str) -> tuple[str, bool] | None:
    """(expert, normalize) whose cached hints the variant reads, or None if it uses no expert."""
    from kdad.methods import get_method

    name, config = resolved_config(cfg, dataset, variant)
    spec = get_method(name)
    if spec.expert_field is None:
        return None
    return getattr(config, spec.expert_field), bool(getattr(config, "normalize", True))


def slug(name: str) -> str:
    """A file-name-safe category name ("T-shirt/top" → "t-shirt_top"). Lower case, so that a
    case-insensitive file system agrees; not injective ("Wood"/"wood", "läder"/"lüder"): the config
    check refuses categories of one dataset whose slugs collide."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_").lower() or "x"


@dataclass(frozen=True)
class RunKey:
    """One evaluate job: a variant with one seed on every category of a (dataset, protocol); it
    reads the model files of the train job ``model``.

    Each category still gets its own model (one-class, leave-one-class-out) — or, for the
    multi-class protocol of a defect set, the single category "all" is one unified model. Grouping
    the categories into one job loads the prepared data and the expert's hints once.
    """

    dataset: str
    protocol: str
    variant: str
    seed: int
    model: str
    categories: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.protocol}/{self.variant}/seed{self.seed}"

    @property
    def model_path(self) -> str:
        return f"{self.dataset}/{self.protocol}/{self.model}/seed{self.seed}"


def plan(cfg: ExperimentConfig) -> list[RunKey]:
    runs = []
    for dataset, d in cfg.datasets.items():
        spec = get_dataset(dataset)
        for protocol in d.protocols:
            cats = tuple(task_categories(spec, protocol, categories=list(d.categories or [])))
            for variant in variants(cfg, dataset, protocol):
                model = model_id(cfg, dataset, variant)
                for seed in cfg.seeds:
                    runs.append(RunKey(dataset, protocol, variant, seed, model, cats))
    return runs


def run_key(cfg: ExperimentConfig, dataset: str, protocol: str, variant: str, seed: int) -> RunKey:
    for key in plan(cfg):
        if (key.dataset, key.protocol, key.variant, key.seed) == (dataset, protocol, variant, seed):
            return key
    raise ConfigError(f"the config has no run {dataset}/{protocol}/{variant}/seed{seed}")


def data_seed(cfg: ExperimentConfig, dataset: str, seed: int) -> int | None:
    """The seed a generated dataset is drawn from for a run of ``seed`` (None: not a generated set)."""
    if not get_dataset(dataset).seeded:
        return None
    d = cfg.dataset(dataset)
    return seed if d.data_seed is None else d.data_seed


def draw(cfg: ExperimentConfig, dataset: str, seed: int) -> str:
    """Which prepared copy of a dataset a run reads: ``fixed`` for real data, ``seed<k>`` for a generated one."""
    k = data_seed(cfg, dataset, seed)
    return "fixed" if k is None else f"seed{k}"


def draws(cfg: ExperimentConfig, dataset: str) -> list[str]:
    return list(dict.fromkeys(draw(cfg, dataset, s) for s in cfg.seeds))


def draw_seed(name: str) -> int | None:
    if name == "fixed":
        return None
    if not re.fullmatch(r"seed\d+", name):
        raise ConfigError(f"a data draw is 'fixed' or 'seed<k>', got {name!r}")
    return int(name[4:])


def dataset_file(cfg: ExperimentConfig, dataset: str, draw_name: str = "fixed") -> Path:
    return Path(cfg.work_dir) / "data" / dataset / f"{draw_name}.npz"


def features_dir(cfg: ExperimentConfig, dataset: str, draw_name: str, expert: str, normalize: bool) -> Path:
    return Path(cfg.work_dir) / "features" / dataset / draw_name / f"{expert}-{'norm' if normalize else 'raw'}"


def model_dir(cfg: ExperimentConfig, key: RunKey) -> Path:
    return Path(cfg.work_dir) / "models" / key.model_path


def eval_dir(cfg: ExperimentConfig, key: RunKey) -> Path:
    return Path(cfg.work_dir) / "eval" / key.path


def source_signature(source: str | None) -> str:
    """A short hash of a local copy's files (path, size and modification time of each), so that
    editing one image or mask of a ``source:`` folder changes it; "" without a source."""
    if not source:
        return ""
    root = Path(source)
    if not root.exists():
        return "missing"
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    stamps = [(str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns)
              for p in files]
    return config_hash(stamps)


def image_size(cfg: ExperimentConfig, dataset: str) -> int:
    return cfg.dataset(dataset).image_size or get_dataset(dataset).image_size


def dump(cfg: ExperimentConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=1, sort_keys=True, default=list)
