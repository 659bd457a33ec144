"""Typed configs: a dict from YAML becomes a dataclass, and an unknown key is an error."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise :class:`ConfigError` listing the known ones."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        values[key] = _coerce(hints[key], value, f"{where or cls.__name__}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from err


def _coerce(tp, value, where: str):
    """A YAML value as the field's type: lists become tuples (each item checked), ints are accepted
    for floats, and text is parsed where a number, flag, list or mapping belongs (``--config
    seeds=[0,1]`` gives Snakemake's text "[0,1]", or the list of texts ["0", "1"]).  A bool is never
    an int, and a float must be finite."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
        if value in ("null", "None", "~") and type(None) in args:
            return None
    if isinstance(value, str) and (origin in (tuple, dict) or tp in (int, float, bool, dict, tuple)):
        value = _parse_text(value, tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = args[0] if len(args) == 1 else None
        if item in (int, float, str, bool):
            return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if (tp is dict or origin is dict) and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _parse_text(value: str, tp):
    """Text where a number, flag, list or mapping belongs, read as YAML (YAML 1.1 reads `1e-5`, with
    no dot, as text: a float field takes it as the number it is meant to be)."""
    if tp is float:
        try:
            return float(value)
        except ValueError:
            pass
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    silently keeps the last)."""


def _no_duplicates(loader: StrictLoader, node, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:
            continue
        if first is not key_node:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1}); "
                "YAML would silently keep only the last — remove one", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def strict_yaml(text: str):
    """YAML text as Python values; a duplicate key raises :class:`yaml.YAMLError`."""
    return yaml.load(text, Loader=StrictLoader)


def config_hash(obj: Any) -> str:
    """Short stable hash of a (nested) config, recorded with every result."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
