"""Name -> (config dataclass, model class) registry for model families."""

from __future__ import annotations

from typing import Any, Callable

from models.base import ModelConfig, SequenceModel
from models.config import ConfigError, config_dict, make_config, unknown_name_error

_FAMILIES: dict[str, tuple[type[ModelConfig], type[SequenceModel]]] = {}


def register(name: str, config_cls: type[ModelConfig]) -> Callable[[type[SequenceModel]], type[SequenceModel]]:
    """Class decorator: `@register("lstm", LSTMConfig)` on a model class taking (config)."""

    def wrap(model_cls: type[SequenceModel]) -> type[SequenceModel]:
        if name in _FAMILIES:
            raise RuntimeError(f"model family {name!r} registered twice")
        model_cls.family = name
        _FAMILIES[name] = (config_cls, model_cls)
        return model_cls

    return wrap


def names() -> list[str]:
    """Registered family names, sorted."""
    return sorted(_FAMILIES)


def config_class(name: str) -> type[ModelConfig]:
    if name not in _FAMILIES:
        raise unknown_name_error("model family", name, _FAMILIES)
    return _FAMILIES[name][0]


def make(name: str, **config: Any) -> ModelConfig:
    """Validated config of family `name` (raises ConfigError naming the bad key)."""
    return make_config(config_class(name), f"model {name!r}", **config)


def build(name: str, **config: Any) -> SequenceModel:
    """Build a model of family `name`, e.g. build("lstm", vocab_size=16, d_model=64)."""
    cfg = make(name, **config)
    return _FAMILIES[name][1](cfg)


__all__ = ["ConfigError", "build", "config_class", "config_dict", "make", "names", "register"]
