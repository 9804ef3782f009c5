"""Typed JSON/TOML: decode a plain mapping into frozen dataclasses, field by field, or refuse it naming the field.

One decoder serves the bundle manifest (BundleError) and the target profiles (ProfileError), so both readers check
the same way: unknown keys, wrong types, values out of range or not among the allowed ones, empty lists where one
item is needed, and JSON nested deeper than MAX_DEPTH are refused; nothing is indexed as a raw dict afterwards.

Constraints ride on dataclass field metadata:
    field(metadata=check(min=1, max=4096))        numbers in range
    field(metadata=check(choices=("mean", "cls")))  one of the allowed values (for tuples: every item)
    field(metadata=check(pattern=r"[a-z0-9]+"))    strings (for tuples: every item) matching in full
    field(metadata=check(nonempty=True))           a string or list that must not be empty
Types understood: str, int, float, bool, X | None, tuple[X, ...], tuple[X, Y], dict[str, X], a nested dataclass,
and JSON (any JSON value, depth-checked: records that are shown, never computed on). Standard library only.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from typing import Any, Union

MAX_DEPTH = 32

JSON = typing.NewType("JSON", object)  # a display-only JSON value (depth-checked)


def check(**constraints: Any) -> dict[str, Any]:
    return {"check": constraints}


class _Fail(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(f"'{where}' {message}")


def decode(cls: type, data: Any, error: type[Exception], where: str = "", context: str = "") -> Any:
    """`data` as an instance of dataclass `cls`, or `error` naming the first bad field (prefixed by `context`)."""
    try:
        return _decode_dataclass(cls, data, where)
    except _Fail as exc:
        raise error(f"{context}{exc}") from None
    except RecursionError:
        raise error(f"{context}nested deeper than Python can read") from None


def encode(value: Any) -> Any:
    """A dataclass tree as plain JSON (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module) | {"JSON": JSON})


def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _Fail(where or cls.__name__, f"must be a table/object, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _Fail(_join(where, str(unknown[0])), f"is not a known key; allowed: {', '.join(sorted(fields))}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Fail(path, "is missing (required)")
            continue
        value = _decode_value(hints[name], data[name], path, 0)
        _constrain(f.metadata.get("check", {}), value, path)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ cross-field check
        raise _Fail(where or cls.__name__, str(exc)) from None


def _decode_value(hint: Any, value: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _Fail(where, f"is nested deeper than {MAX_DEPTH} levels")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None with a value: X's own message names the field that is wrong
            return _decode_value(options[0], value, where, depth)
        for option in (a for a in args if a is not type(None)):
            try:
                return _decode_value(option, value, where, depth)
            except _Fail:
                continue
        raise _Fail(where, f"must be {' or '.join(_name(o) for o in args)}, got {_show(value)}")
    if hint is JSON:
        _check_json(value, where, depth)
        return value
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Fail(where, f"must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode_value(args[0], v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Fail(where, f"must be a list of {len(args)} items, got {_show(value)}")
        return tuple(_decode_value(a, v, f"{where}[{i}]", depth + 1) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Fail(where, f"must be a table/object, got {_show(value)}")
        return {str(k): _decode_value(args[1], v, _join(where, str(k)), depth + 1) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise _Fail(where, f"must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Fail(where, f"must be a whole number, got {_show(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value in (
                float("inf"), float("-inf")):
            raise _Fail(where, f"must be a finite number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Fail(where, f"must be a string, got {_show(value)}")
        return value
    if hint is type(None):
        if value is not None:
            raise _Fail(where, f"must be null, got {_show(value)}")
        return None
    raise _Fail(where, f"has a type this reader does not know ({hint})")  # a programming error, named


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Fail(where, f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(v, _join(where, str(k)), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise _Fail(where, f"is not a JSON value ({type(value).__name__})")


def _constrain(rules: dict[str, Any], value: Any, where: str) -> None:
    if not rules or value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    if rules.get("nonempty") and len(value) == 0:
        raise _Fail(where, "must not be empty")
    for item in items:
        if "choices" in rules and item not in rules["choices"]:
            raise _Fail(where, f"= {item!r} is not allowed; allowed: {', '.join(map(str, rules['choices']))}")
        if "pattern" in rules and isinstance(item, str) and not re.fullmatch(rules["pattern"], item):
            raise _Fail(where, f"= {item!r} does not match {rules['pattern']}")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            low, high = rules.get("min"), rules.get("max")
            if low is not None and item < low or high is not None and item > high:
                span = f"from {low} to {high}" if low is not None and high is not None else \
                    f"≥ {low}" if low is not None else f"≤ {high}"
                raise _Fail(where, f"= {item!r} is out of range; allowed {span}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _name(hint: Any) -> str:
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
