"""Transformer: attention against softmax(QK^T/sqrt(d) + mask)V written here, RoPE against
the complex-rotation formula, KV-cache streaming, and config errors."""

from __future__ import annotations

import math

import pytest
import torch

from seqbench import models
from seqbench.models.transformer import SelfAttention

D, H = 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rope_complex(x: torch.Tensor, base: float) -> torch.Tensor:
    """RoFormer eq. 34 as complex rotation: (x_2i + i x_2i+1) * exp(i t base^(-2i/hs)). x (B, H, T, hs)."""
    T, hs = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)  # (hs/2,)
    rot = torch.polar(torch.ones(T, hs // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * theta)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], hs // 2, 2).contiguous()) * rot
    return torch.view_as_real(z).flatten(-2)


def naive_attention(m: SelfAttention, x: torch.Tensor, causal: bool, rope: bool) -> torch.Tensor:
    """softmax(Q K^T / sqrt(hs) + mask) V per head, from the mixer's own weights."""
    B, T, _ = x.shape
    hs = D // H
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(D, dim=-1)
    q, k, v = (t.reshape(B, T, H, hs).permute(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, hs)
    if rope:
        q, k = rope_complex(q, m.rope_base), rope_complex(k, m.rope_base)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, H, T, T)
    if causal:
        scores = scores + torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, hs)
    return y.permute(0, 2, 1, 3).reshape(B, T, D) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("positions", ["none", "rope"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_equals_naive_softmax(causal: bool, positions: str) -> None:
    torch.manual_seed(0)
    m = SelfAttention(models.make("transformer", d_model=D, n_heads=H, causal=causal, positions=positions)).double()
    x = torch.randn(2, 11, D, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_attention(m, x, causal, positions == "rope"), rtol=1e-10, atol=1e-10)
    assert m.impl.startswith("sdpa")


@pytest.mark.parametrize("positions", ["rope", "learned", "none"])
@pytest.mark.parametrize("kind", ["tokens", "floats"])
def test_kv_cache_step_equals_forward(positions: str, kind: str) -> None:
    torch.manual_seed(0)
    extra = {"d_input": 3} if kind == "floats" else {}
    m = models.build("transformer", vocab_size=10, d_model=D, n_heads=H, n_layers=2, positions=positions,
                     max_len=32, **extra).eval()
    T = 13
    x = torch.randn(2, T, 3) if kind == "floats" else torch.randint(0, 10, (2, T))
    with torch.no_grad():
        full = m(x)
        state, steps = m.init_state(2, 20), []  # cache larger than the sequence
        for t in range(T):
            y, state = m.step(x[:, t], state)
            steps.append(y)
    assert [s.pos for s in state] == [T, T]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_positions_matter_except_none_bidirectional() -> None:
    """Without positions a bidirectional encoder is permutation-equivariant; with them it is not."""
    torch.manual_seed(0)
    x, perm = torch.randint(0, 10, (2, 9)), torch.randperm(9)
    for positions, equivariant in [("none", True), ("rope", False), ("learned", False)]:
        m = models.build("transformer", vocab_size=10, d_model=D, n_heads=H, causal=False, positions=positions).eval()
        with torch.no_grad():
            same = torch.allclose(m(x)[:, perm], m(x[:, perm]), atol=1e-5)
        assert same == equivariant, positions


def test_bidirectional_is_not_streamable() -> None:
    m = models.build("transformer", d_model=D, n_heads=H, causal=False)
    assert not m.streamable
    with pytest.raises(NotImplementedError, match="not streamable"):
        m.init_state(1, 4)
    with pytest.raises(NotImplementedError, match="not streamable"):
        m.step(torch.zeros(1, dtype=torch.long), [])


def test_n_heads_must_divide_d_model() -> None:
    with pytest.raises(models.ConfigError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        models.build("transformer", d_model=30, n_heads=4)
    with pytest.raises(models.ConfigError, match="even head size"):
        models.build("transformer", d_model=12, n_heads=4, positions="rope")  # head size 3
    models.build("transformer", d_model=12, n_heads=4, positions="none")


def test_learned_positions_limit_length() -> None:
    m = models.build("transformer", d_model=D, n_heads=H, positions="learned", max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        m.init_state(1, 9)


def test_state_bytes_and_flops_formulas() -> None:
    n_layers, T = 3, 50
    m = models.build("transformer", d_model=D, n_heads=H, n_layers=n_layers)
    assert m.state_bytes(T) == 2 * n_layers * T * D * 4  # K and V, fp32
    assert m.state_bytes(T, batch_size=3) == 3 * m.state_bytes(T)
    bi = models.build("transformer", d_model=D, n_heads=H, n_layers=n_layers, causal=False)
    per_layer_bi = 4 * D * T  # q.k and attention-weighted v over T positions
    assert bi.flops_per_token(T) - m.flops_per_token(T) == pytest.approx(n_layers * per_layer_bi * (1 - (T + 1) / (2 * T)))
