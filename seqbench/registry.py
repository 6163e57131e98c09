"""The one registry type: names -> (config dataclass, factory), for model families and tasks.

A name resolves, in this order, to
1. a built-in, registered by a decorator in models/ or tasks/ (`@register("lstm", LSTMConfig)`);
2. an entry point of an installed package, in the registry's group (`seqbench.models`,
   `seqbench.tasks`): `[project.entry-points."seqbench.models"] my_mixer = "my_pkg.mixers:MyMixer"`;
3. an import path `package.module:Name`, written directly in a suite (`family: "my_pkg.mixers:MyMixer"`).

Entry points and import paths name user objects; the registry's `adapt` hook (models/user.py,
tasks/user.py) checks the object is of an accepted kind and turns it into an `Entry`. Every
failure is an ImportPathError naming the path, the cause and the fix.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqbench.config import did_you_mean, make_config
from seqbench.errors import ConfigError, ImportPathError

IMPORT_FIX = ("make it importable: install its package (pip install -e PATH) or put the folder that holds "
              "the package on PYTHONPATH (e.g. PYTHONPATH=. seqbench run …)")


@dataclass(frozen=True)
class Entry:
    """What a registered name builds: `factory(config_for(keys)(**keys))`."""

    name: str
    config_class: type  # the frozen dataclass of its keys (for user objects: derived from __init__)
    factory: Callable[[Any], Any]  # validated config -> the object
    source: str = "builtin"  # builtin | entry point DIST | import path
    maker: Callable[..., Any] | None = None  # replaces make_config(config_class, …) (a class taking **kwargs)

    def make(self, where: str, **keys: Any) -> Any:
        """The validated config of `keys` (ConfigError naming the bad key)."""
        if self.maker is not None:
            return self.maker(where, **keys)
        return make_config(self.config_class, where, **keys)


def is_import_path(name: Any) -> bool:
    return isinstance(name, str) and ":" in name


def import_object(path: str, kind: str) -> Any:
    """The object `package.module:Name` (dotted attributes allowed after the colon)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ImportPathError(f"{kind} {path!r}: an import path is written 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ImportPathError(f"{kind} {path!r}: cannot import {module_name!r} (no module named {missing!r}); "
                              f"{IMPORT_FIX}") from None
    except Exception as exc:  # noqa: BLE001 — the user's module raised while importing: say so in one line
        raise ImportPathError(f"{kind} {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}; "
                              "fix the error in that module") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ImportPathError(f"{kind} {path!r}: {module_name!r} has no attribute {part!r}"
                                  f"{did_you_mean(part, names)}; check the name after the colon")
        obj = getattr(obj, part)
    return obj


class Registry:
    """Names -> Entry; built-ins first, then entry points of `group`, then import paths."""

    def __init__(self, kind: str, group: str, adapt: Callable[[str, Any, str], Entry], name_attr: str) -> None:
        self.kind = kind  # "model family", "task"
        self.group = group  # entry-point group
        self.name_attr = name_attr  # class attribute that receives the registered name ("family", "name")
        self.adapt = adapt  # (name, user object, source) -> Entry, raising ImportPathError for a wrong kind
        self._builtin: dict[str, Entry] = {}
        self._resolved: dict[str, Entry] = {}
        self._entry_points: dict[str, Any] | None = None

    def register(self, name: str, config_class: type) -> Callable[[type], type]:
        """Class decorator for built-ins: `@register("lstm", LSTMConfig)` on a class taking (config)."""

        def wrap(cls: type) -> type:
            if name in self._builtin:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            setattr(cls, self.name_attr, name)
            self._builtin[name] = Entry(name, config_class, cls)
            return cls

        return wrap

    def builtin_names(self) -> list[str]:
        return sorted(self._builtin)

    def entry_points(self) -> dict[str, Any]:
        """name -> importlib.metadata.EntryPoint of installed packages (read once)."""
        if self._entry_points is None:
            found = importlib.metadata.entry_points(group=self.group)
            self._entry_points = {ep.name: ep for ep in found if ep.name not in self._builtin}
        return self._entry_points

    def names(self) -> list[str]:
        """Built-in and entry-point names, sorted."""
        return sorted(set(self._builtin) | set(self.entry_points()))

    def get(self, name: str) -> Entry:
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind} must be a name or 'package.module:Name', got {name!r}")
        if name in self._builtin:
            return self._builtin[name]
        if name in self._resolved:
            return self._resolved[name]
        eps = self.entry_points()
        if name in eps:
            ep = eps[name]
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
            obj = import_object(ep.value, f"{self.kind} {name!r} (entry point of {dist})")
            entry = self.adapt(name, obj, f"entry point {dist}")
        elif is_import_path(name):
            entry = self.adapt(name, import_object(name, self.kind), "import path")
        else:
            names = self.names()
            hint = " (a user object is named 'package.module:Name')" if "." in name else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean(name, names)}{hint}; "
                              f"registered: {', '.join(names)}")
        self._resolved[name] = entry
        return entry

    def make(self, name: str, **keys: Any) -> Any:
        """The validated config of `name` (ConfigError naming the bad key)."""
        return self.get(name).make(f"{self.kind.split()[0]} {name!r}", **keys)

    def build(self, name: str, **keys: Any) -> Any:
        """The object `name` builds from `keys`; a user object carries its name like a built-in."""
        entry = self.get(name)
        obj = entry.factory(self.make(name, **keys))
        if entry.source != "builtin":
            setattr(obj, self.name_attr, name)
        return obj


__all__ = ["IMPORT_FIX", "Entry", "Registry", "import_object", "is_import_path"]
