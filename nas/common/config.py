"""Typed configs: YAML/JSON files <-> frozen dataclasses, with errors that name the key.

`from_dict(Cls, data)` checks every key against the dataclass fields (an unknown key or a value of
the wrong type is a `ConfigError` naming its dotted path: an integer or a boolean is never taken for
the other, a number must be finite) and builds nested dataclasses,
``dict[str, Dataclass]``, ``tuple[...]``, ``Literal[...]`` and optional fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .errors import UserError
from .text import read_text

T = TypeVar("T")


class ConfigError(UserError):
    """A bad config: the message names the file (when known) and the key."""


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping."""
    path = Path(path)
    text = read_text(path, ConfigError)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed file: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed file: nested too deeply") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, checking keys and types.

    Errors read ``<where>.<dotted key>: <problem>``; with ``where=""`` they start at the key.
    """
    return _convert(cls, data, where)


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a dataclass tree, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) < 40 else text[:37] + "..."


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where)}expected a mapping, got {_describe(value)}")
        hints = get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        for key in value:
            if key not in fields:
                known = ", ".join(fields)
                raise ConfigError(f"{_at(where)}unknown key {key!r} (known: {known})")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], _key(where, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_at(where)}missing key {name!r}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            # Validation in __post_init__ starts its messages with the field's name.
            raise ConfigError(_key(where, exc) if isinstance(exc, ConfigError) else f"{_at(where)}{exc}") from None
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{_at(where)}unexpected value {_describe(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{_at(where)}{_describe(value)} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin in (dict, Mapping):
        key_type, value_type = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where)}expected a mapping, got {_describe(value)}")
        return {_convert(key_type, k, where): _convert(value_type, v, _key(where, k)) for k, v in value.items()}
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_at(where)}expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{_at(where)}expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_at(where)}expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_at(where)}expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_at(where)}expected a number, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):  # YAML's .nan and .inf pass every range check by comparison
            raise ConfigError(f"{_at(where)}expected a finite number, got {_describe(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_at(where)}expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")
