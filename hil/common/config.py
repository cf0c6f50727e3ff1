"""Strict YAML -> dataclass loading: unknown keys, wrong types and bad values name the key and file.

Every config section of the project is a frozen dataclass; :func:`from_mapping` builds one from
a parsed YAML mapping, checking each field against its type hint (bool, int, float, str,
Literal, Optional, tuple, nested dataclasses, dicts of plain values). Every number must be finite,
a duration (a key ending in ``_s``) must not be negative, and a YAML mapping must not repeat a key.
Other value checks live in the dataclasses' ``__post_init__`` and are reported with the same key path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or mapping that cannot be used; the message names the file and key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key (plain PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        message = " ".join(str(exc).split()) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise ConfigError(f"{path}: not valid YAML: {message}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_duration(key: str) -> bool:
    """``key`` names a duration in seconds (``timeout_s``, ``exposure_limits_s[0]``)."""
    return key.rsplit(".", 1)[-1].split("[", 1)[0].endswith("_s")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # Optional[X]: X's own message says what is wrong
            raise errors[0]
        raise ConfigError(f"{where}: key '{key}': expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: key '{key}': must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where, prefix=key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: key '{key}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: key '{key}': expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: key '{key}': expected a mapping, got {value!r}")
        kt, vt = args or (str, Any)
        return {_convert(k, kt, f"{key}.{k}", where): _convert(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: key '{key}': expected an integer, got {value!r}")
        if _is_duration(key) and value < 0:
            raise ConfigError(f"{where}: key '{key}': a duration in seconds must be >= 0, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: key '{key}': must be a finite number, got {value!r}")
        if _is_duration(key) and value < 0:
            raise ConfigError(f"{where}: key '{key}': a duration in seconds must be >= 0, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: key '{key}': unsupported field type {_type_name(tp)}")


def from_mapping(cls: type[T], data: Any, where: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; every error names ``where`` and the dotted key."""
    label = prefix or "<top level>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: key '{label}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        dotted = ", ".join(f"'{prefix + '.' if prefix else ''}{k}'" for k in unknown)
        raise ConfigError(f"{where}: unknown key {dotted}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key, where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: key '{label}': {exc}") from None


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON/YAML data (iterative, so a deep document cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, level + 1) for v in item)
    return deepest


def to_mapping(obj: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) of a dataclass config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def load(cls: type[T], path: str | Path) -> T:
    """Load and validate a YAML file into dataclass ``cls``."""
    return from_mapping(cls, load_yaml(path), where=str(path))
