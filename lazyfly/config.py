"""Dataclasses from plain data: YAML config files and JSON API bodies become typed, nested dataclasses.

Rules:
- Rule 1 (strict keys): a mapping may hold only the fields of its dataclass; an unknown key is
  refused by name, with the keys that are allowed, and a field without a default must be present.
- Rule 2 (strict types): values are checked against the field's annotation, never coerced, except
  that an int is accepted where a float is wanted and a str where a Path is wanted. A bool is not
  an int. Supported annotations: dataclasses, bool, int, float, str, Path, list[X], dict[str, X],
  Literal[...], and unions (`X | None`).
- Rule 3 (named errors): every failure is InvalidArgument naming where the data came from (file
  path or "request body") and the dotted key, e.g. `daemon.yaml: prefetch.workers: expected int`.
- `to_mapping` is the inverse: nested dicts and lists of JSON/YAML-safe values (Path → str).
- Only `load_config` touches the file system; the rest is pure.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lazyfly.errors import InvalidArgument

T = TypeVar("T")


def load_config(path: Path, cls: type[T]) -> T:
    """Read the YAML mapping in `path` into a `cls` dataclass (an empty file gives the defaults)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"config {path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"config {path}: not valid YAML: {exc}") from exc
    return from_mapping(cls, {} if data is None else data, str(path))


def from_mapping(cls: type[T], data: object, where: str) -> T:
    """Build a `cls` dataclass from `data` (a mapping), checking keys and types (Rules 1-3)."""
    return _convert(cls, data, where, "")


def to_mapping(obj: object) -> Any:
    """Return `obj` (a dataclass, list, dict or scalar) as plain JSON/YAML-safe data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_mapping(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): to_mapping(value) for key, value in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fail(where: str, key: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def _describe(value: object) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:60]}{'…' if len(shown) > 60 else ''}"


def _convert(annotation: Any, value: object, where: str, key: str) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return _convert_union(get_args(annotation), value, where, key)
    if origin is Literal:
        if value not in get_args(annotation):
            choices = ", ".join(repr(choice) for choice in get_args(annotation))
            raise _fail(where, key, f"expected one of {choices}, got {_describe(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _fail(where, key, f"expected a list, got {_describe(value)}")
        (item_type,) = get_args(annotation) or (Any,)
        return [_convert(item_type, item, where, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, key, f"expected a mapping, got {_describe(value)}")
        _, value_type = get_args(annotation) or (str, Any)
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise _fail(where, key, f"keys must be strings, got {_describe(name)}")
            out[name] = _convert(value_type, item, where, _join(key, name))
        return out
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _convert_dataclass(annotation, value, where, key)
    return _convert_scalar(annotation, value, where, key)


def _convert_union(options: tuple[Any, ...], value: object, where: str, key: str) -> Any:
    if value is None:
        if type(None) in options:
            return None
        raise _fail(where, key, "may not be null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, value, where, key)
        except InvalidArgument as exc:
            errors.append(str(exc))
    raise InvalidArgument(errors[0] if len(errors) == 1 else " or ".join(errors))


def _convert_dataclass(cls: type, value: object, where: str, key: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(where, key, f"expected a mapping, got {_describe(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [name for name in value if name not in fields]
    if unknown:
        known = ", ".join(fields)
        raise _fail(where, _join(key, str(unknown[0])), f"unknown key (known keys: {known})")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], where, _join(key, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _fail(where, _join(key, name), "missing")
    return cls(**kwargs)


def _convert_scalar(annotation: Any, value: object, where: str, key: str) -> Any:
    if annotation is Any or annotation is typing.Any:
        return value
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif annotation is str:
        ok = isinstance(value, str)
    elif annotation is Path:
        ok = isinstance(value, str | Path) and str(value) != ""
        value = Path(value) if ok else value  # type: ignore[arg-type]
    else:
        raise _fail(where, key, f"field type {annotation!r} is not supported")
    if not ok:
        wanted = getattr(annotation, "__name__", annotation)
        raise _fail(where, key, f"expected {wanted}, got {_describe(value)}")
    return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
