"""Benchmark your own model: a user's class behind the one SequenceModel interface.

A suite names it by import path (`family: "my_pkg.mixers:MyMixer"`) or by the name an
installed package registers under the entry-point group `seqbench.models`. Accepted:

1. a `Mixer` subclass — one per layer inside the shared backbone (embedding → n_layers ×
   pre-norm residual block → norm → head), built as `cls(d_model=…, **its keys)`;
2. a `SequenceModel` subclass — used whole, built as `cls(**keys)` with the keys its
   `__init__` names, backbone keys included (vocab_size, d_input, d_output, d_model, …:
   the harness sets vocab_size/d_input/d_output from the task);
3. any `nn.Module` mapping (B, T, D) → (B, T, D) whose `__init__` takes `d_model` (and the
   suite's other keys) as keyword arguments — wrapped as a mixer like (1).

The suite's keys that are backbone fields (models.base.ModelConfig: d_model, n_layers,
mlp_ratio, norm, dropout, …) configure the backbone; the others must be parameters of the
class's `__init__` (a class with **kwargs takes any). `layer_idx` is passed when `__init__`
names it. Types annotated on `__init__` are checked like built-in config keys.

Streaming: a mixer is streamable when it has `init_state(batch_size, max_len, device, dtype)`
and `step(x_t (B, D), state) -> (y_t (B, D), state)`; `state_bytes(seq_len, batch_size,
bytes_per_elem)` is used when present, else the bytes of the tensors init_state returns
for max_len = seq_len.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqbench.config import make_config
from seqbench.errors import ImportPathError
from seqbench.models.base import BackboneModel, Mixer, ModelConfig, SequenceModel
from seqbench.registry import Entry

BACKBONE_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
INTERFACE = ("a model must be a seqbench Mixer subclass, a SequenceModel subclass, or an nn.Module class "
             "mapping (B, T, D) -> (B, T, D) whose __init__ takes d_model (see README, 'Benchmark your own model')")


def _init_params(cls: type) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """`__init__` keyword parameters -> (annotation, default), and whether it takes **kwargs."""
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}, True
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # noqa: BLE001 — unresolvable annotations: check nothing rather than fail
        hints = {}
    params, var_kw = {}, False
    for i, (name, p) in enumerate(sig.parameters.items()):
        if i == 0 and name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[name] = (hints.get(name, Any), p.default)
    return params, var_kw


def _config_class(cls: type, params: dict[str, tuple[Any, Any]], extra: tuple[str, ...] = ()) -> type:
    """A frozen ModelConfig subclass with the class's own keys (those that are not backbone keys)."""
    fields = []
    for name, (annotation, default) in params.items():
        if name in BACKBONE_KEYS or name == "layer_idx":
            continue
        if default is inspect.Parameter.empty:
            fields.append((name, annotation, dataclasses.field(kw_only=True)))
        else:
            fields.append((name, annotation, dataclasses.field(default=default, kw_only=True)))
    fields += [(name, Any, dataclasses.field(default=None, kw_only=True)) for name in extra if name not in params]
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields, bases=(ModelConfig,), frozen=True)


def _kwargs(cfg: ModelConfig, params: dict[str, Any], var_kw: bool, backbone: bool) -> dict[str, Any]:
    """The config values `cls.__init__` takes: the keys it names (all own keys with **kwargs)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in params or (var_kw and (backbone or f.name not in BACKBONE_KEYS)):
            out[f.name] = getattr(cfg, f.name)
    return out


class ModuleMixer(Mixer):
    """A user's nn.Module (B, T, D) -> (B, T, D) as a mixer; streamable when it has init_state and step."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module = module
        self.name = name

    @property
    def streamable(self) -> bool:  # type: ignore[override]
        return callable(getattr(self.module, "init_state", None)) and callable(getattr(self.module, "step", None))

    @property
    def impl(self) -> str:  # type: ignore[override]
        return str(getattr(self.module, "impl", "user"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"{self.name}: a mixer must map (B, T, D) -> (B, T, D); for input {tuple(x.shape)} "
                            f"it returned {got}")
        return y

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> Any:
        return self.module.init_state(batch_size, max_len, device, dtype)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.module.step(x_t, state)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        if callable(getattr(self.module, "state_bytes", None)):
            return int(self.module.state_bytes(seq_len, batch_size, bytes_per_elem))
        return tensor_bytes(self.init_state(batch_size, seq_len, torch.device("cpu"), torch.float32),
                            bytes_per_elem)

    def extra_flops_per_token(self, seq_len: int) -> float:
        fn = getattr(self.module, "extra_flops_per_token", None)
        return float(fn(seq_len)) if callable(fn) else 0.0


def tensor_bytes(state: Any, bytes_per_elem: int) -> int:
    """Bytes of every tensor in a nested state (tuples, lists, dicts, objects with __dict__)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * bytes_per_elem
    if isinstance(state, dict):
        return sum(tensor_bytes(v, bytes_per_elem) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v, bytes_per_elem) for v in state)
    if hasattr(state, "__dict__"):
        return sum(tensor_bytes(v, bytes_per_elem) for v in vars(state).values())
    return 0


def _mixer_factory(cls: type, name: str, params: dict[str, Any], var_kw: bool) -> Callable[[Any], SequenceModel]:
    wrap = not issubclass(cls, Mixer)

    def build(cfg: ModelConfig) -> SequenceModel:
        kwargs = _kwargs(cfg, params, var_kw, backbone=False)
        kwargs["d_model"] = cfg.d_model

        def make_mixer(i: int) -> Mixer:
            layer = cls(**kwargs, **({"layer_idx": i} if "layer_idx" in params else {}))
            return ModuleMixer(layer, name) if wrap else layer

        return BackboneModel(cfg, make_mixer)

    return build


def _model_factory(cls: type, params: dict[str, Any], var_kw: bool) -> Callable[[Any], SequenceModel]:
    def build(cfg: ModelConfig) -> SequenceModel:
        model = cls(**_kwargs(cfg, params, var_kw, backbone=True))
        if not isinstance(getattr(model, "config", None), ModelConfig):
            model.config = cfg  # the harness reads vocab_size / d_input from it
        return model

    return build


def user_model_entry(name: str, obj: Any, source: str) -> Entry:
    """Check a user object is an accepted kind of model and describe how to build it."""
    if not isinstance(obj, type):
        raise ImportPathError(f"model family {name!r} is a {type(obj).__name__}, not a class; {INTERFACE}")
    if not issubclass(obj, nn.Module):
        raise ImportPathError(f"model family {name!r}: class {obj.__name__} is not an nn.Module; {INTERFACE}")
    params, var_kw = _init_params(obj)
    is_model = issubclass(obj, SequenceModel)
    if not is_model and "d_model" not in params and not var_kw:
        raise ImportPathError(f"model family {name!r}: {obj.__name__}.__init__ does not take d_model; {INTERFACE}")
    if issubclass(obj, BackboneModel) and "config" in params:
        raise ImportPathError(f"model family {name!r}: {obj.__name__} takes a config object; register it with "
                              "@seqbench.models.register(NAME, ConfigClass) in its package, or give it keyword "
                              f"arguments; {INTERFACE}")
    factory = _model_factory(obj, params, var_kw) if is_model else _mixer_factory(obj, name, params, var_kw)
    config_cls = _config_class(obj, params)
    if not var_kw:
        return Entry(name, config_cls, factory, source)

    def make(where: str, **keys: Any) -> Any:  # **kwargs: any key is accepted, unchecked
        extra = tuple(k for k in keys if k not in BACKBONE_KEYS)
        return make_config(_config_class(obj, params, extra), where, **keys)

    return Entry(name, config_cls, factory, source, maker=make)


__all__ = ["INTERFACE", "ModuleMixer", "tensor_bytes", "user_model_entry"]
