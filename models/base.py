"""The one model interface every family implements, and the shared backbone.

Every family is a backbone around a sequence mixer (as in zoology's model.py):

    tokens (B, T) int64 ─ Embedding ─┐
    features (B, T, F) ─ Linear ─────┴▶ (B, T, D) ─ n_layers × Block ─ norm ─ head ─▶ (B, T, C)
    Block (residual=True):  x = x + mixer(norm(x));  x = x + mlp(norm(x))   (pre-norm)
    Block (residual=False): x = mixer(x)                                    (classic plain stack)

so families differ only in the mixer. A family that does not fit (seq2seq)
subclasses `SequenceModel` directly.

Streaming: `init_state(batch_size, max_len)` then `step(x_t, state)` per
position; stepping over a sequence equals `forward` on it for every
streamable model (tests/test_models_common.py proves it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.config import Dropout, NonNegFloat, PosInt
from seqbench.errors import UnavailableError


@dataclass(frozen=True)
class ModelConfig:
    """Backbone fields shared by every family. Family configs subclass this."""

    vocab_size: PosInt = 16  # input token vocabulary (ignored when d_input is set)
    d_input: PosInt | None = None  # float features per position instead of tokens
    d_output: PosInt | None = None  # output classes / regression dims; default vocab_size
    d_model: PosInt = 64  # residual stream width D
    n_layers: PosInt = 2  # number of mixer blocks
    mlp_ratio: NonNegFloat = 0.0  # MLP hidden = mlp_ratio * d_model after each mixer; 0 = no MLP
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    dropout: Dropout = 0.0  # in [0, 1)
    pool: Literal["none", "mean", "last"] = "none"  # "none": per-position (B, T, C); else (B, C)

    def __post_init__(self) -> None:
        """Cross-field checks only; each field's own range is declared beside it (seqbench.config)."""

    @property
    def n_outputs(self) -> int:
        return self.d_output if self.d_output is not None else self.vocab_size


class Mixer(nn.Module):
    """A sequence mixer: (B, T, D) -> (B, T, D), plus its streaming form.

    Subclasses implement forward and set `impl`; streamable ones also implement
    init_state / step / state_bytes. `streamable` is True when a subclass overrides
    init_state and step (a built-in may also set it as a class attribute).
    """

    impl: str = "torch"
    _streamable: bool | None = None  # set by `self.streamable = …` (e.g. False when bidirectional)

    @property
    def streamable(self) -> bool:
        if self._streamable is not None:
            return self._streamable
        cls = type(self)
        return cls.init_state is not Mixer.init_state and cls.step is not Mixer.step

    @streamable.setter
    def streamable(self, value: bool) -> None:
        self._streamable = bool(value)

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """x_t (B, D) -> (y_t (B, D), new state)."""
        raise NotImplementedError

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """Bytes of the streaming state after `seq_len` positions (KV cache grows; RNN state does not)."""
        raise NotImplementedError

    def extra_flops_per_token(self, seq_len: int) -> float:
        """FLOPs per token beyond 2 * (matmul parameters), e.g. attention scores or a scan."""
        return 0.0


class KernelBackendError(UnavailableError):
    """A family's requested kernel backend cannot run here (package missing or tensors not on CUDA)."""


def use_kernel(family: str, backend: str, kernel: str, device: torch.device,
               available: Callable[[], bool], error: type[KernelBackendError]) -> bool:
    """Whether forward takes the official kernel `kernel` (e.g. "mamba_ssm", "fla"): never for
    backend "reference"; for "auto" when it imports and the tensors are on CUDA; for backend ==
    `kernel` on CUDA (a missing package is the caller's error, with its install hint)."""
    if backend == "reference":
        return False
    if backend == "auto":
        return device.type == "cuda" and available()
    if device.type != "cuda":
        raise error(f"{family} backend {kernel!r} needs CUDA tensors, got {device.type}; "
                    "set backend='reference' or 'auto' to run on this device")
    return True


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, d: int) -> nn.Module:
    return RMSNorm(d) if kind == "rmsnorm" else nn.LayerNorm(d)


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, int(round(ratio * d_model)))
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm residual block around one mixer (or the bare mixer when residual=False)."""

    def __init__(self, mixer: Mixer, config: ModelConfig, residual: bool = True) -> None:
        super().__init__()
        self.mixer = mixer
        self.residual = residual
        if residual:
            self.norm1 = make_norm(config.norm, config.d_model)
            self.mlp = MLP(config.d_model, config.mlp_ratio, config.dropout) if config.mlp_ratio > 0 else None
            self.norm2 = make_norm(config.norm, config.d_model) if self.mlp is not None else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.drop(self.mixer(x))
        x = x + self.drop(self.mixer(self.norm1(x)))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if not self.residual:
            return self.mixer.step(x_t, state)
        y_t, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + y_t
        if self.mlp is not None:
            x_t = x_t + self.mlp(self.norm2(x_t))
        return x_t, state


class SequenceModel(nn.Module):
    """The interface the harness sees. Inputs (B, T) int64 tokens or (B, T, F) floats.

    forward(x, src_len=None, targets=None) -> (B, T, C) logits/values, or (B, C) when pooled.
    `src_len` and `targets` matter only to encoder-decoder models (needs_src_len=True):
    positions < src_len are the source, the rest the target part; `targets` given in
    training mode means teacher forcing.
    """

    family: str = ""
    config: ModelConfig
    needs_src_len: bool = False

    @property
    def streamable(self) -> bool:
        return False

    @property
    def impl(self) -> str:
        return "torch"

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int, max_len: int) -> Any:
        raise self._not_streamable()

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise self._not_streamable()

    def state_bytes(self, seq_len: int, batch_size: int = 1) -> int:
        raise self._not_streamable()

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token: 2 x matmul weights (no embedding) + mixer extras."""
        return 2.0 * matmul_params(self)

    def _not_streamable(self) -> NotImplementedError:
        return NotImplementedError(
            f"{self.family!r} is not streamable (bidirectional, encoder-only, pooled or "
            "encoder-decoder): it has no step(); use forward() on whole sequences"
        )


def matmul_params(module: nn.Module) -> int:
    """Parameters that take part in a matmul per token: weights of dim >= 2, no embeddings."""
    total = 0
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Embedding):
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if p.dim() >= 2 and not pname.startswith("pos"):
                total += p.numel()
    return total


class BackboneModel(SequenceModel):
    """embedding -> n_layers x Block(mixer) -> norm -> head, for every mixer family."""

    def __init__(self, config: ModelConfig, make_mixer: Any, residual: bool = True) -> None:
        """`make_mixer(layer_idx) -> Mixer` builds the mixer of each layer."""
        super().__init__()
        self.config = config
        D = config.d_model
        if config.d_input is not None:
            self.embed: nn.Module = nn.Linear(config.d_input, D)
        else:
            self.embed = nn.Embedding(config.vocab_size, D)
        self.blocks = nn.ModuleList(
            Block(make_mixer(i), config, residual=residual) for i in range(config.n_layers)
        )
        self.norm_f = make_norm(config.norm, D) if residual else nn.Identity()
        self.head = nn.Linear(D, config.n_outputs)

    @property
    def streamable(self) -> bool:
        return self.config.pool == "none" and all(b.mixer.streamable for b in self.blocks)

    @property
    def impl(self) -> str:
        impls = dict.fromkeys(b.mixer.impl for b in self.blocks)
        return "+".join(impls)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.d_input is not None:
            if not x.is_floating_point():
                raise TypeError(f"{self.family}: d_input is set, so inputs must be float (B, T, F)")
            return self.embed(x)
        if x.is_floating_point():
            raise TypeError(f"{self.family}: inputs must be int64 tokens (B, T); set d_input for floats")
        return self.embed(x)

    def forward(self, x: torch.Tensor, src_len: int | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
        h = self._embed(x)  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        h = self.norm_f(h)
        if self.config.pool == "mean":
            h = h.mean(dim=1)  # (B, D)
        elif self.config.pool == "last":
            h = h[:, -1]  # (B, D)
        return self.head(h)  # (B, T, C) or (B, C)

    def init_state(self, batch_size: int, max_len: int) -> list[Any]:
        if not self.streamable:
            raise self._not_streamable()
        p = next(self.parameters())
        return [b.mixer.init_state(batch_size, max_len, p.device, p.dtype) for b in self.blocks]

    def step(self, x_t: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """x_t (B,) tokens or (B, F) floats -> (y_t (B, C), new state)."""
        if not self.streamable:
            raise self._not_streamable()
        h = self._embed(x_t)  # (B, D)
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state

    def state_bytes(self, seq_len: int, batch_size: int = 1) -> int:
        if not self.streamable:
            raise self._not_streamable()
        nbytes = next(self.parameters()).element_size()
        return sum(b.mixer.state_bytes(seq_len, batch_size, nbytes) for b in self.blocks)

    def flops_per_token(self, seq_len: int) -> float:
        return 2.0 * matmul_params(self) + sum(b.mixer.extra_flops_per_token(seq_len) for b in self.blocks)


def field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]
