"""Config validation for frozen dataclasses: unknown keys, wrong types, did-you-mean.

Every task's parameters are a frozen dataclass. `make_config` turns user
keyword arguments (from Python, YAML or `--set`) into one, and raises a single
`ConfigError` that names the bad key, the valid choices and the closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A user-caused configuration error (unknown name or key, bad type or value)."""


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name_error(kind: str, name: str, choices: typing.Iterable[str]) -> ConfigError:
    """Error for a name that is not registered, listing the registered ones."""
    choices = sorted(choices)
    return ConfigError(
        f"unknown {kind} {name!r}{did_you_mean(name, choices)}; registered: {', '.join(choices)}"
    )


def _check_type(value: Any, annotation: Any) -> bool:
    """True when `value` fits `annotation` (int, float, bool, str, Literal, Optional, tuple)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_check_type(v, args[0]) for v in value)
        return len(args) == len(value) and all(_check_type(v, a) for v, a in zip(value, args))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def make_config(cls: type, where: str, **kwargs: Any) -> Any:
    """Build the frozen dataclass `cls` from kwargs, validating every key and type.

    `where` names the thing being configured (e.g. "model 'lstm'") for messages.
    Lists become tuples for tuple-typed fields; ints are accepted for floats.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in kwargs:
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown config key {key!r}{did_you_mean(key, fields)}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
    clean = {}
    for key, value in kwargs.items():
        annotation = hints[key]
        if isinstance(value, list):
            value = tuple(value)
        if not _check_type(value, annotation):
            hint = ""
            if typing.get_origin(annotation) is Literal:
                hint = did_you_mean(str(value), [str(a) for a in typing.get_args(annotation)])
            raise ConfigError(
                f"{where}: config key {key!r} must be {_describe(annotation)}, "
                f"got {value!r}{hint}"
            )
        if annotation is float and isinstance(value, int):
            value = float(value)
        clean[key] = value
    try:
        return cls(**clean)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise ConfigError(f"{where}: {exc}") from None
        raise ConfigError(f"{where}: {exc}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples stay tuples)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
