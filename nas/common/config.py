"""Typed configs: YAML/JSON files <-> frozen dataclasses, with errors that name the key.

`from_dict(Cls, data)` checks every key against the dataclass fields (an unknown key, a missing
required key or a value of the wrong type is a `ConfigError` naming its dotted path: an integer or a
boolean is never taken for the other, a number must be finite) and builds nested dataclasses,
``dict[str, Dataclass]``, ``tuple[...]``, ``Literal[...]`` and optional fields. Its messages speak
YAML (`YAML_WORDS`: mappings, keys, true or false) or JSON (`JSON_WORDS`: objects, fields, booleans).
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

from .errors import UserError, first_line, one_line
from .text import read_text

T = TypeVar("T")


class ConfigError(UserError):
    """A bad config: the message names the file (when known) and the key."""


@dataclasses.dataclass(frozen=True)
class Words:
    """How messages name things, in the terms of the file format the user wrote."""

    mapping: str = "a mapping"
    key: str = "key"
    boolean: str = "true or false"
    top: str = ""  # the label of the top-level value's own problems (unknown or missing keys), e.g. "spec"


YAML_WORDS = Words()
JSON_WORDS = Words(mapping="an object", key="field", boolean="a boolean")
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
MAX_SEED = 2**32 - 1  # 32 bits: numpy's generators (Optuna's samplers) and most tools take no more


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping (a user's config); `ConfigError` naming the file when it is not one."""
    return read_mapping(path)


def read_mapping(
    path: str | Path, error: type[UserError] = ConfigError, what: str = "", empty: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The mapping in a YAML file, or in a JSON file (by its ``.json`` suffix).

    A file that cannot be read, is malformed, nested too deeply for the parser or not a mapping is an
    ``error`` of one line naming it: ``<path>: <problem>``, or ``<path>: <what> (<problem>)`` with ``what``.
    An empty YAML file is ``empty`` when given (else not a mapping).
    """
    path = Path(path)
    text = read_text(path, error)
    try:
        data = _parse(path, text)
    except _Malformed as exc:
        raise error(f"{path}: {what} ({exc})" if what else f"{path}: {exc}") from None
    if data is None and empty is not None:
        return empty
    if not isinstance(data, dict):
        problem = "expected a mapping at the top level"
        raise error(f"{path}: {what} ({problem})" if what else f"{path}: {problem}")
    return data


class _Malformed(Exception):
    """Text that does not parse; its message is the problem, in one line."""


def _parse(path: Path, text: str) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except RecursionError:
        raise _Malformed("malformed file: nested too deeply") from None
    except ValueError as exc:
        raise _Malformed(f"malformed file: {first_line(exc)}") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise _Malformed(f"malformed YAML: {one_line(str(exc))}") from None


def from_dict(cls: type[T], data: Any, where: str = "", words: Words = YAML_WORDS) -> T:
    """Build dataclass ``cls`` from plain data, checking keys and types.

    Errors read ``<where>.<dotted key>: <problem>``; with ``where=""`` they start at the key (and
    problems of the top level itself at ``words.top``).
    """
    return _convert(cls, data, where, words)


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _at(where: str, words: Words = YAML_WORDS) -> str:
    label = where or words.top
    return f"{label}: " if label else ""


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a dataclass tree, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _describe(value: Any, limit: int = 40) -> str:
    """``value`` as JSON cut to ``limit`` characters, so that an error stays one short line."""
    try:
        text = json.dumps(value)
    except (RecursionError, TypeError, ValueError):  # nested too deeply, or not JSON (a YAML date)
        text = type(value).__name__
    return _clip(text, limit)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) < limit else text[: limit - 3] + "..."


def _convert(tp: Any, value: Any, where: str, words: Words = YAML_WORDS) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where, words)}expected {words.mapping}, got {_describe(value)}")
        hints = get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        for key in value:
            if key not in fields:
                known = ", ".join(fields)
                raise ConfigError(f"{_at(where, words)}unknown {words.key} {_clip(repr(key))} (known: {known})")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _convert(hints[name], value[name], _key(where, name), words)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_at(where, words)}missing {words.key} {name!r}")
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
                return _convert(option, value, where, words)
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
            raise ConfigError(f"{_at(where)}expected {words.mapping}, got {_describe(value)}")
        return {
            _convert(key_type, k, where, words): _convert(value_type, v, _key(where, k), words)
            for k, v in value.items()
        }
    if origin is tuple:
        args = get_args(tp)
        homogeneous = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)):
            items = _PLURALS.get(args[0]) if homogeneous else None
            raise ConfigError(f"{_at(where)}expected a list{f' of {items}' if items else ''}, got {_describe(value)}")
        if homogeneous:
            return tuple(_convert(args[0], v, f"{where}[{i}]", words) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{_at(where)}expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]", words) for i, (a, v) in enumerate(zip(args, value)))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_at(where)}expected {words.boolean}, got {_describe(value)}")
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
