"""The one config validator: frozen dataclasses built from user keys, checked key by key.

Model configs, task parameters and measure settings are all frozen dataclasses. A field
declares its type and, beside it, its allowed range:

    d_model: PosInt = 64                        # >= 1
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    lrs: tuple[PosFloat, ...] = (1e-3, 3e-3)

`make_config(cls, where, **keys)` turns user keys (from Python, YAML or `--set`) into the
dataclass and raises one `ConfigError` naming the bad key, what it must be and the closest
valid name: unknown keys, wrong types (`steps: five`), values out of range (`steps: -5`),
NaN or infinite floats (never valid unless a Range says so), and empty tuples where a
field says `nonempty`. `__post_init__` is left for checks that involve several fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from seqbench.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed values of a number (ge/gt/le/lt bounds), or of a tuple's length (`nonempty`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True  # reject NaN and +-inf
    nonempty: bool = False  # for tuples: at least one element

    def describe(self) -> str:
        lo = f"{'>=' if self.ge is not None else '>'} {_num(self.ge if self.ge is not None else self.gt)}" \
            if self.ge is not None or self.gt is not None else ""
        hi = f"{'<=' if self.le is not None else '<'} {_num(self.le if self.le is not None else self.lt)}" \
            if self.le is not None or self.lt is not None else ""
        return " and ".join(p for p in (lo, hi) if p) or "a finite number"

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range, or None."""
        if isinstance(value, tuple):
            return "must not be empty" if self.nonempty and not value else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        bad = ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
               or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))
        return f"must be {self.describe()}, got {value!r}" if bad else None


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


PosInt = Annotated[int, Range(ge=1)]
NonNegInt = Annotated[int, Range(ge=0)]
PosFloat = Annotated[float, Range(gt=0)]
NonNegFloat = Annotated[float, Range(ge=0)]
UnitFloat = Annotated[float, Range(ge=0, le=1)]  # a fraction in [0, 1]
Dropout = Annotated[float, Range(ge=0, lt=1)]
NONEMPTY = Range(nonempty=True)


# --- names ------------------------------------------------------------------------------------


def did_you_mean(name: Any, choices: Iterable[Any]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """Error for a name that is not registered, listing the registered ones."""
    names = sorted(choices)
    return ConfigError(f"unknown {kind} {name!r}{did_you_mean(name, names)}; registered: {', '.join(names)}")


# --- types ------------------------------------------------------------------------------------


def describe(annotation: Any) -> str:
    """'int >= 1', "one of 'a', 'b'", 'tuple of float > 0', … for messages."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        ranges = [m for m in meta if isinstance(m, Range) and not m.nonempty]
        text = describe(base)
        return f"{text} {ranges[0].describe()}" if ranges else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return "a list [" + ", ".join(describe(a) for a in args) + "]"
    if annotation is type(None):
        return "null"
    if annotation is float:
        return "a number"
    if annotation is int:
        return "an int"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_value(value: Any, annotation: Any) -> str | None:
    """None when `value` fits `annotation` (types and declared ranges), else why not.

    Handles int, float (ints accepted, finite only), bool, str, Literal, Optional/Union,
    tuple[X, ...] and fixed tuples (lists accepted), Annotated[..., Range], Any.
    """
    if annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        problem = check_value(value, base)
        if problem is not None:
            return problem
        for m in meta:
            if isinstance(m, Range) and (why := m.problem(tuple(value) if isinstance(value, list) else value)):
                return why
        return None
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices and all(type(value) is type(c) or not isinstance(c, bool) for c in choices):
            return None
        return f"must be {describe(annotation)}, got {value!r}{did_you_mean(value, choices)}"
    if origin in (Union, types.UnionType):
        arms = typing.get_args(annotation)
        problems = [check_value(value, a) for a in arms]
        if any(p is None for p in problems):
            return None
        # an arm whose type fits but whose range does not says more than "must be X or Y"
        if isinstance(value, float) and not math.isfinite(value) and any(p and "finite" in p for p in problems):
            return f"must be a finite number, got {value!r}"
        for arm, problem in zip(arms, problems):
            base = typing.get_args(arm)[0] if typing.get_origin(arm) is Annotated else arm
            if typing.get_origin(base) is not tuple and check_value(value, base) is None:
                return problem
        return f"must be {describe(annotation)}, got {value!r}"
    if annotation is type(None):
        return None if value is None else f"must be null, got {value!r}"
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return f"must be {describe(annotation)}, got {value!r}"
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            pairs = [(v, args[0]) for v in value]
        elif len(args) != len(value):
            return f"must be {describe(annotation)} ({len(args)} items), got {len(value)} items"
        else:
            pairs = list(zip(value, args))
        for i, (v, a) in enumerate(pairs):
            if (why := check_value(v, a)) is not None:
                return f"item {i}: {why}"
        return None
    if annotation is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an int, got {value!r}"
    if annotation is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return None
    if isinstance(annotation, type):
        return None if isinstance(value, annotation) else f"must be {describe(annotation)}, got {value!r}"
    return None


def _coerce(value: Any, annotation: Any) -> Any:
    """Lists become tuples for tuple fields (recursively); ints become floats for float fields."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _coerce(value, typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(annotation):
            if check_value(value, arm) is None:
                return _coerce(value, arm)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Init fields of a dataclass -> their annotation (with Annotated extras kept)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def make_config(cls: type, where: str, **kwargs: Any) -> Any:
    """Build the frozen dataclass `cls` from kwargs, validating every key, type and range.

    `where` names the thing being configured (e.g. "model 'lstm'") for messages.
    """
    types_ = field_types(cls)
    for key in kwargs:
        if key not in types_:
            raise _keyed(where, f"unknown config key {key!r}{did_you_mean(key, types_)}; "
                                f"valid keys: {', '.join(sorted(types_))}", key)
    clean = {}
    for key, value in kwargs.items():
        if (why := check_value(value, types_[key])) is not None:
            raise _keyed(where, f"config key {key!r} {why}", key)
        clean[key] = _coerce(value, types_[key])
    try:
        return cls(**clean)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _keyed(where: str, detail: str, key: str) -> ConfigError:
    """A ConfigError '{where}: {detail}' that remembers its key and detail (for file:line: key messages)."""
    exc = ConfigError(f"{where}: {detail}")
    exc.key, exc.detail = key, detail  # type: ignore[attr-defined]
    return exc


def config_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples stay tuples)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


__all__ = [
    "NONEMPTY", "ConfigError", "Dropout", "NonNegFloat", "NonNegInt", "PosFloat", "PosInt", "Range", "UnitFloat",
    "check_value", "config_dict", "describe", "did_you_mean", "field_types", "make_config", "unknown_name_error",
]
