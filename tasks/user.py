"""Benchmark on your own task: a user's Task subclass, named by import path
(`task: "my_pkg.tasks:MyTask"`) or by an entry point of the group `seqbench.tasks`.

The class subclasses `seqbench.tasks.Task` (the interface of tasks/base.py: `_batch`, `metric`,
`chance`, vocab_size / d_input / n_outputs, seq_len). Its parameters are either a frozen
dataclass given as the class attribute `Config` (the class is then built as `cls(config)`, like
the built-ins), or the keyword arguments of its `__init__` (built as `cls(**params)`; annotated
types are checked).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from seqbench.errors import ImportPathError
from seqbench.registry import Entry
from seqbench.tasks.base import Task

INTERFACE = ("a task must be a subclass of seqbench.tasks.Task (see README, 'Benchmark your own model'), "
             "with its parameters as a frozen dataclass `Config` or as keyword arguments of __init__")


def _kwargs_config(cls: type) -> type:
    """A frozen dataclass of `cls.__init__`'s keyword parameters."""
    sig = inspect.signature(cls.__init__)
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # noqa: BLE001 — unresolvable annotations: check nothing rather than fail
        hints = {}
    fields = []
    for i, (name, p) in enumerate(sig.parameters.items()):
        if i == 0 or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = dataclasses.field(kw_only=True) if p.default is p.empty else \
            dataclasses.field(default=p.default, kw_only=True)
        fields.append((name, hints.get(name, Any), default))
    return dataclasses.make_dataclass(f"{cls.__name__}Params", fields, frozen=True)


def user_task_entry(name: str, obj: Any, source: str) -> Entry:
    """Check a user object is a Task class and describe how to build it."""
    if not isinstance(obj, type) or not issubclass(obj, Task):
        what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise ImportPathError(f"task {name!r}: {what} is not a Task subclass; {INTERFACE}")
    config = getattr(obj, "Config", None)
    if dataclasses.is_dataclass(config) and isinstance(config, type):
        return Entry(name, config, obj, source)
    params_cls = _kwargs_config(obj)

    def build(params: Any) -> Task:
        task = obj(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})
        if getattr(task, "config", None) is None:
            task.config = params
        return task

    return Entry(name, params_cls, build, source)


__all__ = ["INTERFACE", "user_task_entry"]
