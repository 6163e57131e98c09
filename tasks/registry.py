"""The task registry: built-in tasks, entry points (group `seqbench.tasks`) and import paths
(`task: "my_pkg.tasks:MyTask"`), all behind `build(name, **params)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqbench.registry import Entry, Registry
from seqbench.tasks.base import Task


def _adapt(name: str, obj: Any, source: str) -> Entry:
    from seqbench.tasks.user import user_task_entry

    return user_task_entry(name, obj, source)


REGISTRY = Registry("task", "seqbench.tasks", _adapt, name_attr="name")


def register(name: str, config_cls: type) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: `@register("copy", CopyConfig)` on a Task subclass taking (config)."""
    return REGISTRY.register(name, config_cls)


def names() -> list[str]:
    """Registered task names (built-in and installed entry points), sorted."""
    return REGISTRY.names()


def config_class(name: str) -> type:
    return REGISTRY.get(name).config_class


def build(name: str, **params: Any) -> Task:
    """Build task `name`, e.g. build("copy", vocab_size=10, n_copy=8, delay=32)."""
    return REGISTRY.build(name, **params)
