"""Name -> (params dataclass, task class) registry."""

from __future__ import annotations

from typing import Any, Callable

from tasks.base import Task
from tasks.config import make_config, unknown_name_error

_TASKS: dict[str, tuple[type, type[Task]]] = {}


def register(name: str, config_cls: type) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: `@register("copy", CopyConfig)` on a Task subclass taking (config)."""

    def wrap(task_cls: type[Task]) -> type[Task]:
        if name in _TASKS:
            raise RuntimeError(f"task {name!r} registered twice")
        task_cls.name = name
        _TASKS[name] = (config_cls, task_cls)
        return task_cls

    return wrap


def names() -> list[str]:
    return sorted(_TASKS)


def config_class(name: str) -> type:
    if name not in _TASKS:
        raise unknown_name_error("task", name, _TASKS)
    return _TASKS[name][0]


def build(name: str, **params: Any) -> Task:
    """Build task `name`, e.g. build("copy", vocab_size=10, n_copy=8, delay=32)."""
    cfg = make_config(config_class(name), f"task {name!r}", **params)
    return _TASKS[name][1](cfg)
