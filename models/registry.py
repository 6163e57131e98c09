"""The model-family registry: built-in families, entry points (group `seqbench.models`) and
import paths (`family: "my_pkg.mixers:MyMixer"`), all behind `build(name, **config)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqbench.config import config_dict
from seqbench.errors import ConfigError
from seqbench.models.base import ModelConfig, SequenceModel
from seqbench.registry import Entry, Registry


def _adapt(name: str, obj: Any, source: str) -> Entry:
    from seqbench.models.user import user_model_entry

    return user_model_entry(name, obj, source)


REGISTRY = Registry("model family", "seqbench.models", _adapt, name_attr="family")


def register(name: str, config_cls: type[ModelConfig]) -> Callable[[type[SequenceModel]], type[SequenceModel]]:
    """Class decorator: `@register("lstm", LSTMConfig)` on a model class taking (config)."""
    return REGISTRY.register(name, config_cls)


def names() -> list[str]:
    """Registered family names (built-in and installed entry points), sorted."""
    return REGISTRY.names()


def config_class(name: str) -> type[ModelConfig]:
    """The config dataclass of family `name` (a built-in, an entry point or an import path)."""
    return REGISTRY.get(name).config_class


def make(name: str, **config: Any) -> ModelConfig:
    """Validated config of family `name` (raises ConfigError naming the bad key)."""
    return REGISTRY.make(name, **config)


def build(name: str, **config: Any) -> SequenceModel:
    """Build a model of family `name`, e.g. build("lstm", vocab_size=16, d_model=64)."""
    return REGISTRY.build(name, **config)


__all__ = ["REGISTRY", "ConfigError", "build", "config_class", "config_dict", "make", "names", "register"]
