"""Transformer: pre-norm multi-head self-attention blocks (Vaswani et al. 2017,
"Attention Is All You Need", arXiv:1706.03762; pre-norm as in GPT-2), on
torch.nn.functional.scaled_dot_product_attention.

    causal=True   decoder: position t attends to 0..t; streamable with a KV cache
    causal=False  bidirectional encoder: every position attends to all; not streamable

Positions: "rope" rotates q and k by position (Su et al. 2021, RoFormer,
arXiv:2104.09864), "learned" adds a learned table (max_len, D) to the input
embedding (GPT-2), "none" adds nothing (a causal mask still tells positions apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.config import NonNegFloat, PosInt, Range
from seqbench.errors import ConfigError
from seqbench.models.base import BackboneModel, Mixer, ModelConfig
from seqbench.models.registry import register

# torch.nn.attention.SDPBackend values, as returned by torch._fused_sdp_choice
_SDPA_KERNELS = {0: "sdpa-math", 1: "sdpa-flash", 2: "sdpa-efficient", 3: "sdpa-cudnn"}


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    n_heads: PosInt = 4  # H: attention heads; head size d_model // n_heads
    causal: bool = True  # True: masked decoder (streamable); False: bidirectional encoder
    positions: Literal["rope", "learned", "none"] = "rope"  # how positions enter
    rope_base: Annotated[float, Range(gt=1)] = 10000.0  # RoPE frequency base (theta)
    max_len: PosInt = 2048  # learned positions: rows of the position table = longest sequence
    mlp_ratio: NonNegFloat = 4.0  # MLP hidden = 4 * d_model, as in GPT

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_heads != 0:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0 and h <= 64]
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"pick n_heads from {divisors} or change d_model"
            )
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2 != 0:
            raise ConfigError(
                f"positions 'rope' needs an even head size, got d_model // n_heads = "
                f"{self.d_model} // {self.n_heads} = {self.d_model // self.n_heads}; change d_model or n_heads"
            )


def apply_rope(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) by angle pos * base^(-2i/hs). x (..., T, hs), pos (T,)."""
    hs = x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)  # angles in at least fp32, even for half inputs
    inv_freq = base ** (-torch.arange(0, hs, 2, device=x.device, dtype=dtype) / hs)  # (hs/2,)
    angle = pos.to(dtype).unsqueeze(-1) * inv_freq  # (T, hs/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (..., T, hs/2)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


@dataclass
class KVCache:
    """Per-layer streaming state: preallocated keys/values and how many positions are filled."""

    k: torch.Tensor  # (B, H, max_len, hs)
    v: torch.Tensor  # (B, H, max_len, hs)
    pos: int = 0  # next position to write = tokens seen so far


class SelfAttention(Mixer):
    """Multi-head self-attention: (B, T, D) -> (B, T, D)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.causal = config.causal
        self.rope_base = config.rope_base if config.positions == "rope" else None
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.streamable = config.causal
        self.impl = "sdpa"  # refined to the kernel SDPA picks on each forward

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, D = t.shape
        return t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, T, hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).split(D, dim=2))  # (B, H, T, hs) each
        if self.rope_base is not None:
            pos = torch.arange(T, device=x.device)
            q, k = apply_rope(q, pos, self.rope_base), apply_rope(k, pos, self.rope_base)
        dropout_p = self.dropout if self.training else 0.0
        self.impl = _sdpa_kernel(q, k, v, dropout_p, self.causal)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)  # (B, H, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        hs = self.qkv.in_features // self.n_heads
        shape = (batch_size, self.n_heads, max_len, hs)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """x_t (B, D) -> (y_t (B, D), cache with one more position). Writes into the cache in place."""
        B, D = x_t.shape
        t = state.pos
        if t >= state.k.shape[2]:
            raise RuntimeError(f"KV cache is full ({t} positions); call init_state with a larger max_len")
        q, k, v = (self._heads(u.unsqueeze(1)) for u in self.qkv(x_t).split(D, dim=-1))  # (B, H, 1, hs)
        if self.rope_base is not None:
            pos = torch.tensor([t], device=x_t.device)
            q, k = apply_rope(q, pos, self.rope_base), apply_rope(k, pos, self.rope_base)
        state.k[:, :, t : t + 1] = k
        state.v[:, :, t : t + 1] = v
        # one query over the t+1 cached positions: no mask needed
        y = F.scaled_dot_product_attention(q, state.k[:, :, : t + 1], state.v[:, :, : t + 1])  # (B, H, 1, hs)
        return self.proj(y.reshape(B, D)), KVCache(state.k, state.v, t + 1)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """KV cache after seq_len positions: keys + values, seq_len x D each."""
        return 2 * seq_len * self.qkv.in_features * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """Scores q·k and the weighted sum of v: 2·D FLOPs each per attended position, so
        4·D·n_ctx per token, with n_ctx = seq_len (bidirectional) or (seq_len + 1) / 2 on
        average (causal: position t attends to t + 1 positions). Softmax is not counted."""
        n_ctx = (seq_len + 1) / 2 if self.causal else float(seq_len)
        return 4.0 * self.qkv.in_features * n_ctx


def _sdpa_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, causal: bool) -> str:
    """Which SDPA kernel runs for these inputs ('sdpa-flash', 'sdpa-math', ...), or 'sdpa' if unknown."""
    choose = getattr(torch, "_fused_sdp_choice", None)  # private API: may change between torch versions
    if choose is None:
        return "sdpa"
    try:
        return _SDPA_KERNELS.get(int(choose(q, k, v, None, dropout_p, causal)), "sdpa")
    except (RuntimeError, TypeError):
        return "sdpa"


@register("transformer", TransformerConfig)
class Transformer(BackboneModel):
    """Pre-norm Transformer; learned positions are added to the embedding, rope inside attention."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config, lambda layer_idx: SelfAttention(config))
        self.pos_embed = nn.Embedding(config.max_len, config.d_model) if config.positions == "learned" else None

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        h = super()._embed(x)  # (B, T, D)
        if self.pos_embed is not None:
            T = h.shape[1]
            if T > self.config.max_len:
                raise ValueError(
                    f"transformer: sequence length {T} exceeds max_len={self.config.max_len} of the learned "
                    "position table; build with a larger max_len or positions='rope'"
                )
            h = h + self.pos_embed.weight[:T]
        return h

    def init_state(self, batch_size: int, max_len: int) -> list[Any]:
        if self.pos_embed is not None and max_len > self.config.max_len:
            raise ValueError(
                f"transformer: init_state max_len={max_len} exceeds the learned position table "
                f"(max_len={self.config.max_len}); build with a larger max_len"
            )
        return super().init_state(batch_size, max_len)

    def step(self, x_t: torch.Tensor, state: list[KVCache]) -> tuple[torch.Tensor, list[KVCache]]:
        """x_t (B,) tokens or (B, F) floats -> (y_t (B, C), new state). The position is state[0].pos."""
        if not self.streamable:
            raise self._not_streamable()
        h = super()._embed(x_t)  # (B, D)
        if self.pos_embed is not None:
            h = h + self.pos_embed.weight[state[0].pos]
        new_state = []
        for block, s in zip(self.blocks, state):
            h, s = block.step(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state
