"""The modern recurrent families (mamba2, mingru, minlstm, xlstm, linear_attention) against naive
per-step loops written here from the papers' equations, on the modules' own weights: forward
and gradients (inputs and every parameter) at lengths that are not multiples of the chunk;
step() == forward(); a loss that falls; closed-form parameter counts and state sizes; configs
and backends."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqbench import models
from seqbench.models.linear_attention import (
    LinearAttentionBackendError,
    LinearAttentionMixer,
    chunked_delta_rule,
    fla_available,
)
from seqbench.models.mamba2 import Mamba2BackendError, Mamba2Mixer, mamba_ssm_ssd_available
from seqbench.models.minrnn import MinRNNMixer
from seqbench.models.xlstm import MLSTMMixer, SLSTMMixer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

T_ODD, CHUNK = 37, 16  # 37 = 2 chunks of 16 + 5: exercises the padding
FAMILIES = ["mamba2", "mingru", "minlstm", "xlstm", "linear_attention"]


# ----------------------------------------------------------------------------- shared helpers


def naive_causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y[t] = bias + Σ_j w[j] x[t - j], tap j of an nn.Conv1d weight (C, 1, W) at index W - 1 - j."""
    W = weight.shape[-1]
    y = torch.zeros_like(x) if bias is None else bias.expand_as(x).clone()
    for t in range(x.shape[1]):
        for j in range(min(W, t + 1)):
            y[:, t] = y[:, t] + x[:, t - j] * weight[:, 0, W - 1 - j]
    return y


def lin(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def randomize_(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter, so no gate sits at its init (zero weights, ones, ...)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def assert_same_function(module: torch.nn.Module, naive, T: int, d_model: int, seed: int = 0,
                         input_scale: float = 1.0) -> None:
    """Outputs and gradients (input and every parameter) of module vs naive(module, u), float64."""
    g = torch.Generator().manual_seed(seed)
    u = (input_scale * torch.randn(2, T, d_model, generator=g, dtype=torch.float64)).requires_grad_()
    named = dict(module.named_parameters())
    params = [u, *named.values()]
    out, ref = module(u), naive(module, u)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, params, gy, allow_unused=True)
    want = torch.autograd.grad(ref, params, gy, allow_unused=True)
    for name, a, b in zip(["input", *named], got, want):
        assert a is not None and b is not None, f"no gradient for {name}"
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=lambda m, name=name: f"grad {name}: {m}")


# ----------------------------------------------------------------------------- Mamba-2


def naive_mamba2(m: Mamba2Mixer, u: torch.Tensor) -> torch.Tensor:
    """Dao & Gu 2024 §7: h_t = exp(Δ_t A_h) h_{t-1} + Δ_t x_t B_tᵀ, y_t = h_t C_t + D x_t, one step at a time."""
    E, G, N, H, P = m.d_inner, m.n_groups, m.d_state, m.n_heads, m.head_dim
    Bsz, T, _ = u.shape
    zxbcdt = u @ m.in_proj.weight.T
    z, xBC, dt = zxbcdt[..., :E], zxbcdt[..., E : 2 * E + 2 * G * N], zxbcdt[..., 2 * E + 2 * G * N :]
    xBC = F.silu(naive_causal_conv(xBC, m.conv1d.weight, m.conv1d.bias))
    x = xBC[..., :E].reshape(Bsz, T, H, P)
    Bm = xBC[..., E : E + G * N].reshape(Bsz, T, G, N)
    Cm = xBC[..., E + G * N :].reshape(Bsz, T, G, N)
    group = torch.arange(H) // (H // G)  # head -> its group of B and C
    delta = F.softplus(dt + m.dt_bias)  # (B, T, H)
    A = -torch.exp(m.A_log)
    h = u.new_zeros(Bsz, H, P, N)
    ys = []
    for t in range(T):
        Bt, Ct = Bm[:, t, group], Cm[:, t, group]  # (B, H, N)
        h = torch.exp(delta[:, t] * A)[..., None, None] * h + delta[:, t, :, None, None] * x[:, t, :, :, None] * Bt[:, :, None, :]
        ys.append((h * Ct[:, :, None, :]).sum(-1) + m.D[:, None] * x[:, t])
    y = torch.stack(ys, 1).reshape(Bsz, T, E) * F.silu(z)  # norm_before_gate=False: gate, then norm
    yg = y.reshape(Bsz, T, G, E // G)
    y = (yg / torch.sqrt(yg.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(Bsz, T, E) * m.norm.weight
    return y @ m.out_proj.weight.T


@pytest.mark.parametrize("T", [1, 5, T_ODD])
@pytest.mark.parametrize("n_groups", [1, 2])
def test_mamba2_equals_naive_recurrence(T: int, n_groups: int) -> None:
    torch.manual_seed(0)
    cfg = models.make("mamba2", d_model=16, d_state=4, head_dim=8, n_groups=n_groups, chunk_size=CHUNK,
                      backend="reference")
    m = randomize_(Mamba2Mixer(cfg)).double()
    assert_same_function(m, naive_mamba2, T, 16)


def test_mamba2_parameter_layout_is_mamba_ssm_mamba2() -> None:
    """Names and shapes of mamba_ssm.modules.mamba2.Mamba2(d_model=32, d_state=16, d_conv=4, expand=2,
    headdim=16, ngroups=1): d_in_proj = 2E + 2GN + H, conv over E + 2GN channels."""
    D, E, N, H, G, W = 32, 64, 16, 4, 1, 4
    expected = {
        "in_proj.weight": (2 * E + 2 * G * N + H, D),
        "conv1d.weight": (E + 2 * G * N, 1, W),
        "conv1d.bias": (E + 2 * G * N,),
        "dt_bias": (H,),
        "A_log": (H,),
        "D": (H,),
        "norm.weight": (E,),
        "out_proj.weight": (D, E),
    }
    m = Mamba2Mixer(models.make("mamba2", d_model=D, d_state=N, head_dim=16))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16  # A_init_range (1, 16)
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)


# ----------------------------------------------------------------------------- minGRU / minLSTM


def g_act(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def naive_minrnn(m: MinRNNMixer, u: torch.Tensor) -> torch.Tensor:
    """Feng et al. 2024 §3: the sequential minGRU / minLSTM recurrences, h_0 = 0."""
    pre = lin(u, m.in_proj)
    E = m.d_inner
    h = u.new_zeros(u.shape[0], E)
    hs = []
    for t in range(u.shape[1]):
        if m.cell == "gru":
            h_tilde, z = g_act(pre[:, t, :E]), torch.sigmoid(pre[:, t, E:])
            h = (1 - z) * h + z * h_tilde
        else:
            f, i = torch.sigmoid(pre[:, t, :E]), torch.sigmoid(pre[:, t, E : 2 * E])
            h_tilde = g_act(pre[:, t, 2 * E :])
            h = f / (f + i) * h + i / (f + i) * h_tilde
        hs.append(h)
    return torch.stack(hs, 1) @ m.out_proj.weight.T


@pytest.mark.parametrize("T", [1, T_ODD])
@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_minrnn_log_space_scan_equals_naive_recurrence(family: str, T: int) -> None:
    torch.manual_seed(0)
    m = MinRNNMixer(models.make(family, d_model=16, chunk_size=CHUNK), "gru" if family == "mingru" else "lstm")
    m = randomize_(m).double()
    assert_same_function(m, naive_minrnn, T, 16, input_scale=3.0)  # both branches of g, saturated gates


@pytest.mark.parametrize("family", ["mingru", "minlstm"])
def test_minrnn_saturated_gates_take_the_exact_logcumsumexp(family: str) -> None:
    """Gates near 1 make log b - Σ log a span hundreds within a chunk, past float32's exp range:
    those rows fall back to torch.logcumsumexp, and the result still equals the recurrence."""
    torch.manual_seed(0)
    m = MinRNNMixer(models.make(family, d_model=16, chunk_size=CHUNK), "gru" if family == "mingru" else "lstm")
    m = randomize_(m).double()
    with torch.no_grad():  # z = σ(20) (minGRU) or f' ≈ 0 (minLSTM): the state is overwritten every step
        E = m.d_inner
        m.in_proj.bias[E : 2 * E] += 20.0 if family == "mingru" else 0.0
        m.in_proj.bias[:E] -= 0.0 if family == "mingru" else 20.0
    assert_same_function(m, naive_minrnn, T_ODD, 16)


def test_minrnn_long_sequence_keeps_float32_precision() -> None:
    """The chunked log-space scan keeps |Σ log a| bounded by one chunk: float32 matches float64 at T = 3000."""
    torch.manual_seed(0)
    m = MinRNNMixer(models.make("mingru", d_model=8), "gru")
    u = torch.randn(1, 3000, 8)
    with torch.no_grad():
        y32, y64 = m(u), m.double()(u.double())
    assert ((y32.double() - y64).abs().max() / y64.abs().max()).item() < 1e-5


# ----------------------------------------------------------------------------- xLSTM


def naive_layer_norm_heads(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """h (B, T, H, d): per-head (x - mean) / sqrt(var + 1e-5), flattened, times weight."""
    mu = h.mean(-1, keepdim=True)
    var = (h - mu).pow(2).mean(-1, keepdim=True)
    return ((h - mu) / torch.sqrt(var + 1e-5)).flatten(-2) * weight


def naive_mlstm(m: MLSTMMixer, u: torch.Tensor) -> torch.Tensor:
    """Beck et al. 2024 §2.3 with the max-stabiliser, one step at a time (C_t = f C + i v kᵀ, paper layout)."""
    Bsz, T, _ = u.shape
    E, H, d = m.d_inner, m.n_heads, m.head_dim
    up = u @ m.proj_up.weight.T
    x, z = up[..., :E], up[..., E:]
    x_c = F.silu(naive_causal_conv(x, m.conv1d.weight, m.conv1d.bias))
    q, k, v = x_c @ m.q_proj.weight.T, x_c @ m.k_proj.weight.T, x @ m.v_proj.weight.T
    qkv = torch.cat([q, k, v], -1)
    i_pre, f_pre = lin(qkv, m.igate), lin(qkv, m.fgate)  # (B, T, H)
    log_f = F.logsigmoid(f_pre) if m.forget_gate == "sigmoid" else f_pre
    q, k, v = (t.reshape(Bsz, T, H, d) for t in (q, k, v))
    k = k / math.sqrt(d)
    C = u.new_zeros(Bsz, H, d, d)  # (v, k)
    n = u.new_zeros(Bsz, H, d)
    mstab = u.new_zeros(Bsz, H)
    hs = []
    for t in range(T):
        m_new = torch.maximum(log_f[:, t] + mstab, i_pre[:, t])
        i_g = torch.exp(i_pre[:, t] - m_new)[..., None]
        f_g = torch.exp(log_f[:, t] + mstab - m_new)[..., None]
        C = f_g[..., None] * C + i_g[..., None] * v[:, t, :, :, None] * k[:, t, :, None, :]
        n = f_g * n + i_g * k[:, t]
        denom = torch.maximum((n * q[:, t]).sum(-1).abs(), torch.exp(-m_new))[..., None]
        hs.append((C @ q[:, t, :, :, None]).squeeze(-1) / (denom + 1e-6))
        mstab = m_new
    h = naive_layer_norm_heads(torch.stack(hs, 1), m.outnorm_weight) + m.learnable_skip * x_c
    return (h * F.silu(z)) @ m.proj_down.weight.T


def naive_slstm(m: SLSTMMixer, u: torch.Tensor) -> torch.Tensor:
    """Beck et al. 2024 §2.2: scalar memory, exponential gating, block-diagonal recurrent weights."""
    Bsz, T, D = u.shape
    H, d = m.n_heads, m.head_dim
    x_c = F.silu(naive_causal_conv(u, m.conv1d.weight, m.conv1d.bias))
    wx = torch.cat([x_c @ m.w_if.weight.T, u @ m.w_zo.weight.T], -1).reshape(Bsz, T, 4, D) + m.bias
    h, c, n, mstab = (u.new_zeros(Bsz, D) for _ in range(4))
    hs = []
    for t in range(T):
        rec = torch.einsum("bhd,hde->bhe", h.reshape(Bsz, H, d), m.R).reshape(Bsz, H, 4, d)
        pre = wx[:, t] + rec.transpose(1, 2).reshape(Bsz, 4, D)
        i_pre, f_pre, z_pre, o_pre = pre.unbind(1)
        log_f = F.logsigmoid(f_pre) if m.forget_gate == "sigmoid" else f_pre
        m_new = torch.maximum(log_f + mstab, i_pre)
        i_g, f_g = torch.exp(i_pre - m_new), torch.exp(log_f + mstab - m_new)
        c = f_g * c + i_g * torch.tanh(z_pre)
        n = f_g * n + i_g
        h = torch.sigmoid(o_pre) * c / n
        mstab = m_new
        hs.append(h)
    return naive_layer_norm_heads(torch.stack(hs, 1).reshape(Bsz, T, H, d), m.outnorm_weight)


@pytest.mark.parametrize("T", [1, T_ODD])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_mlstm_chunkwise_equals_naive_recurrence(forget_gate: str, T: int) -> None:
    torch.manual_seed(0)
    m = MLSTMMixer(models.make("xlstm", d_model=16, n_heads=2, chunk_size=CHUNK, forget_gate=forget_gate))
    assert_same_function(randomize_(m).double(), naive_mlstm, T, 16)


def test_mlstm_large_gates_stay_finite() -> None:
    """The stabiliser: input-gate pre-activations of ±100 overflow / underflow exp() in float32 without it."""
    torch.manual_seed(0)
    m = MLSTMMixer(models.make("xlstm", d_model=16, n_heads=2, chunk_size=CHUNK))
    with torch.no_grad():
        m.igate.bias.copy_(torch.tensor([100.0, -100.0]))
    u = torch.randn(2, T_ODD, 16, requires_grad=True)
    y = m(u)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(u.grad).all()
    torch.testing.assert_close(y.double(), naive_mlstm(m.double(), u.double()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_slstm_equals_naive_recurrence(forget_gate: str) -> None:
    torch.manual_seed(0)
    m = SLSTMMixer(models.make("xlstm", d_model=16, n_heads=2, forget_gate=forget_gate))
    assert_same_function(randomize_(m).double(), naive_slstm, 9, 16)


def test_slstm_at_places_the_blocks() -> None:
    m = models.build("xlstm", n_layers=4, slstm_at=[1, 3])
    assert [type(b.mixer).__name__ for b in m.blocks] == ["MLSTMMixer", "SLSTMMixer", "MLSTMMixer", "SLSTMMixer"]
    assert all(isinstance(b.mixer, MLSTMMixer) for b in models.build("xlstm", n_layers=3).blocks)


# ----------------------------------------------------------------------------- linear attention


def naive_rope_half(x: torch.Tensor, t: int) -> torch.Tensor:
    """Rotate channel i with i + d/2 by the angle t · 10000^(-2i/d) (x (..., d))."""
    d = x.shape[-1]
    theta = t * 10000.0 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([a * torch.cos(theta) - b * torch.sin(theta), b * torch.cos(theta) + a * torch.sin(theta)], -1)


def naive_linear_attention(m: LinearAttentionMixer, u: torch.Tensor) -> torch.Tensor:
    """GLA (Yang et al. 2023 eq. 3), RetNet (Sun et al. 2023 eq. 1-5), DeltaNet (Yang et al. 2024 eq. 1,
    S in the paper's (V, K) layout): the recurrences one step at a time, then fla's output norm."""
    Bsz, T, _ = u.shape
    H, K, V = m.n_heads, m.head_k_dim, m.head_v_dim
    q, k, v = u @ m.q_proj.weight.T, u @ m.k_proj.weight.T, u @ m.v_proj.weight.T
    if m.use_short_conv:
        q, k, v = (F.silu(naive_causal_conv(t, c.weight, None)) for t, c in
                   zip((q, k, v), (m.q_conv1d, m.k_conv1d, m.v_conv1d)))
    elif m.kind == "deltanet":
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    q, k, v = q.reshape(Bsz, T, H, K), k.reshape(Bsz, T, H, K), v.reshape(Bsz, T, H, V)
    if m.kind == "gla":
        alpha = torch.exp(F.logsigmoid(lin(lin(u, m.gk_proj[0]), m.gk_proj[1])) / m.gate_logit_normalizer)
        alpha = alpha.reshape(Bsz, T, H, K)
    if m.kind == "retnet":
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(H, dtype=u.dtype))
    if m.kind == "deltanet":
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        beta = torch.sigmoid(u @ m.b_proj.weight.T) * (2.0 if m.allow_neg_eigval else 1.0)  # (B, T, H)
    S = u.new_zeros(Bsz, H, V, K)
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, t], k[:, t], v[:, t]
        if m.kind == "retnet":
            qt, kt = naive_rope_half(qt, t), naive_rope_half(kt, t)
            S = gamma[:, None, None] * S + vt[..., :, None] * kt[..., None, :]
        elif m.kind == "gla":
            S = S * alpha[:, t, :, None, :] + vt[..., :, None] * kt[..., None, :]
        else:  # S_t = S_{t-1} (I - β k kᵀ) + β v kᵀ
            b = beta[:, t, :, None, None]
            S = S - b * (S @ kt[..., :, None]) * kt[..., None, :] + b * vt[..., :, None] * kt[..., None, :]
        outs.append((S @ (qt / math.sqrt(K))[..., None]).squeeze(-1))  # (B, H, V)
    o = torch.stack(outs, 1)  # (B, T, H, V)
    if m.kind == "deltanet":
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.o_norm.weight
    else:
        gate = (u @ m.g_proj.weight.T).reshape(Bsz, T, H, V)
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.g_norm_swish_gate.weight * F.silu(gate)
    return o.reshape(Bsz, T, H * V) @ m.o_proj.weight.T


LA_CASES = [
    ("gla", {}), ("gla", {"use_short_conv": True}),
    ("retnet", {}),
    ("deltanet", {}), ("deltanet", {"use_short_conv": False}), ("deltanet", {"allow_neg_eigval": True}),
]


@pytest.mark.parametrize("T", [1, T_ODD])
@pytest.mark.parametrize("kind,extra", LA_CASES)
def test_linear_attention_chunked_equals_naive_recurrence(kind: str, extra: dict, T: int) -> None:
    torch.manual_seed(0)
    cfg = models.make("linear_attention", kind=kind, d_model=16, n_heads=2, chunk_size=CHUNK,
                      gate_low_rank_dim=4, backend="reference", **extra)
    m = randomize_(LinearAttentionMixer(cfg)).double()
    assert_same_function(m, naive_linear_attention, T, 16)


def test_gla_strong_decay_stays_finite() -> None:
    """Gate logits of -400 (log α = -25 per step, -400 over a chunk) overflow any exp(-Σ log α) factor."""
    torch.manual_seed(0)
    m = LinearAttentionMixer(models.make("linear_attention", kind="gla", d_model=16, n_heads=2, chunk_size=CHUNK))
    with torch.no_grad():
        m.gk_proj[1].bias.fill_(-400.0)
    u = torch.randn(2, T_ODD, 16, requires_grad=True)
    y = m(u)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(u.grad).all()
    torch.testing.assert_close(y.double(), naive_linear_attention(m.double(), u.double()), rtol=1e-4, atol=1e-5)


def test_deltanet_negative_eigenvalues_flip_the_state() -> None:
    """β = 2 on a unit key reflects the state, I - 2kkᵀ has eigenvalue -1 along k (Grazzi et al. 2024):
    after writing v_0 once, each further step with v = 0 flips the read-out, o_t = (-1)^t v_0 (parity)."""
    T = T_ODD
    k = torch.zeros(1, 1, T, 4, dtype=torch.float64)
    k[..., 0] = 1.0
    v = torch.zeros(1, 1, T, 3, dtype=torch.float64)
    v[:, :, 0] = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    beta = torch.full((1, 1, T), 2.0, dtype=torch.float64)
    beta[..., 0] = 1.0
    o = chunked_delta_rule(k, k, v, beta, CHUNK)  # q = k
    signs = torch.tensor([(-1.0) ** t for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(o[0, 0], signs[:, None] * v[0, 0, 0], rtol=1e-12, atol=1e-12)
    # with β in [0, 1] (allow_neg_eigval=False) the largest flip is β = 1: the state is erased, not negated
    o = chunked_delta_rule(k, k, v, beta.clamp(max=1.0), CHUNK)
    torch.testing.assert_close(o[0, 0, 1:], torch.zeros(T - 1, 3, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["gla", "retnet", "deltanet"])
def test_linear_attention_parameter_layout_is_fla(kind: str) -> None:
    """Names and shapes of fla's GatedLinearAttention / MultiScaleRetention / DeltaNet(hidden_size=32,
    num_heads=4) at their defaults (gla: expand_k 0.5, gate_low_rank_dim 16; retnet: expand_v 2;
    deltanet: use_short_conv, conv_size 4)."""
    D = 32
    expected = {
        "gla": {"q_proj.weight": (16, D), "k_proj.weight": (16, D), "v_proj.weight": (32, D),
                "g_proj.weight": (32, D), "gk_proj.0.weight": (16, D), "gk_proj.1.weight": (16, 16),
                "gk_proj.1.bias": (16,), "o_proj.weight": (D, 32), "g_norm_swish_gate.weight": (8,)},
        "retnet": {"q_proj.weight": (32, D), "k_proj.weight": (32, D), "v_proj.weight": (64, D),
                   "g_proj.weight": (64, D), "o_proj.weight": (D, 64), "g_norm_swish_gate.weight": (16,)},
        "deltanet": {"q_proj.weight": (32, D), "k_proj.weight": (32, D), "v_proj.weight": (32, D),
                     "b_proj.weight": (4, D), "q_conv1d.weight": (32, 1, 4), "k_conv1d.weight": (32, 1, 4),
                     "v_conv1d.weight": (32, 1, 4), "o_norm.weight": (8,), "o_proj.weight": (D, 32)},
    }[kind]
    m = LinearAttentionMixer(models.make("linear_attention", kind=kind, d_model=D, n_heads=4))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected


# ----------------------------------------------------------------------------- whole models


SMALL = {"d_model": 32, "n_layers": 2, "vocab_size": 8}
MODEL_CASES = [
    ("mamba2", {"chunk_size": CHUNK, "head_dim": 16}),
    ("mingru", {"chunk_size": CHUNK}),
    ("minlstm", {"chunk_size": CHUNK}),
    ("xlstm", {"chunk_size": CHUNK}),
    ("xlstm", {"chunk_size": CHUNK, "slstm_at": [1]}),
    ("linear_attention", {"kind": "gla", "chunk_size": CHUNK}),
    ("linear_attention", {"kind": "retnet", "chunk_size": CHUNK}),
    ("linear_attention", {"kind": "deltanet", "chunk_size": CHUNK, "allow_neg_eigval": True}),
]
CASE_IDS = [f"{f}-{c.get('kind', '')}{'-slstm' if 'slstm_at' in c else ''}" for f, c in MODEL_CASES]


@pytest.mark.parametrize("family,config", MODEL_CASES, ids=CASE_IDS)
def test_step_equals_forward_float32(family: str, config: dict) -> None:
    torch.manual_seed(0)
    m = models.build(family, **SMALL, **config).eval()
    assert m.streamable and m.impl == "reference"
    x = torch.randint(0, 8, (3, T_ODD))
    with torch.no_grad():
        full = m(x)
        state, steps = m.init_state(3, T_ODD), []
        for t in range(T_ODD):
            y, state = m.step(x[:, t], state)
            steps.append(y)
    stepped = torch.stack(steps, 1)
    assert ((stepped - full).abs().max() / full.abs().max()).item() < 1e-5


@pytest.mark.parametrize("family,config", MODEL_CASES, ids=CASE_IDS)
def test_loss_falls_on_shifted_copy(family: str, config: dict) -> None:
    """30 AdamW steps on a fixed batch of 'output the previous token' (needs mixing over time)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (8, 24), generator=g)
    y = torch.cat([torch.zeros(8, 1, dtype=torch.long), x[:, :-1]], 1)
    m = models.build(family, **SMALL, **config).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(m(x).reshape(-1, 8), y.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{family}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 30 steps"


def backbone_params(D: int, V: int, n_layers: int, mlp_ratio: float) -> int:
    """Embedding, per layer two LayerNorms (one without an MLP) and the MLP, final norm, head."""
    hidden = round(mlp_ratio * D)
    per_layer = 2 * D + ((hidden * D + hidden + D * hidden + D) + 2 * D if mlp_ratio > 0 else 0)
    return V * D + n_layers * per_layer + 2 * D + (D * V + V)


def test_parameter_counts_closed_form() -> None:
    D, V, L = 32, 8, 2
    # mamba2: E = 64, H = 64 / 16 = 4, N = 8, G = 1, W = 4, conv over E + 2GN = 80 channels
    E, H, N, G, W = 64, 4, 8, 1, 4
    mixer = D * (2 * E + 2 * G * N + H) + (E + 2 * G * N) * (W + 1) + 3 * H + E + E * D
    assert models.build("mamba2", d_model=D, vocab_size=V, d_state=N, head_dim=16).n_params == \
        backbone_params(D, V, L, 0.0) + L * mixer
    # mingru / minlstm: E = expand * D; in_proj with bias, out_proj without
    for family, n_in in (("mingru", 2), ("minlstm", 3)):
        for expand in (1, 2):
            E = expand * D
            mixer = D * n_in * E + n_in * E + E * D
            assert models.build(family, d_model=D, vocab_size=V, expand=expand).n_params == \
                backbone_params(D, V, L, 4.0) + L * mixer
    # xlstm: mLSTM (E = 2D, H = 4) and sLSTM (d = D / H)
    E, H, W = 2 * D, 4, 4
    mlstm = D * 2 * E + E * (W + 1) + 3 * E * E + 2 * (3 * E * H + H) + 2 * E + E * D
    d = D // H
    slstm = D * (W + 1) + 4 * D * D + H * d * 4 * d + 4 * D + D
    assert models.build("xlstm", d_model=D, vocab_size=V).n_params == backbone_params(D, V, L, 0.0) + L * mlstm
    assert models.build("xlstm", d_model=D, vocab_size=V, slstm_at=[0]).n_params == \
        backbone_params(D, V, L, 0.0) + mlstm + slstm
    # linear attention, fla defaults: gla Dk = D/2, Dv = D, rank 16; retnet Dk = D, Dv = 2D; deltanet Dk = Dv = D + convs
    H = 4
    Dk, Dv, r = D // 2, D, 16
    gla = 2 * Dk * D + 2 * Dv * D + (r * D + Dk * r + Dk) + Dv // H + D * Dv
    Dk, Dv = D, 2 * D
    retnet = 2 * Dk * D + 2 * Dv * D + Dv // H + D * Dv
    Dk, Dv = D, D
    deltanet = 2 * Dk * D + Dv * D + H * D + (2 * Dk + Dv) * W + Dv // H + D * Dv
    for kind, mixer in (("gla", gla), ("retnet", retnet), ("deltanet", deltanet)):
        m = models.build("linear_attention", kind=kind, d_model=D, vocab_size=V)
        assert m.n_params == backbone_params(D, V, L, 4.0) + L * mixer, kind


def test_state_bytes_closed_form_and_constant_in_length() -> None:
    D, W = 32, 4
    cases = {
        ("mamba2", ()): (80 * W + 4 * 16 * 8),  # conv window (E + 2GN) * W + H * P * N
        ("mingru", ()): D,  # h, E = d_model
        ("xlstm", ()): 64 * W + 4 * 16 * 16 + 4 * 16 + 4,  # E·W + H·d² + H·d + H, d = E / H = 16
        ("xlstm", (("slstm_at", (0, 1)),)): D * W + 4 * D,
        ("linear_attention", (("kind", "gla"),)): 4 * 4 * 8,  # H · (Dk / H) · (Dv / H)
        ("linear_attention", (("kind", "deltanet"),)): 4 * 8 * 8 + 3 * D * W,
    }
    for (family, extra), per_layer in cases.items():
        m = models.build(family, d_model=D, d_state=8, head_dim=16, **dict(extra)) if family == "mamba2" \
            else models.build(family, d_model=D, **dict(extra))
        assert m.state_bytes(1) == m.state_bytes(100_000) == 2 * 4 * per_layer, (family, extra)
        assert m.state_bytes(7, batch_size=3) == 3 * 2 * 4 * per_layer


@pytest.mark.parametrize("family", FAMILIES)
def test_flops_per_token_exceed_matmuls_and_saturate_with_length(family: str) -> None:
    m = models.build(family, d_model=32)
    extra = [sum(b.mixer.extra_flops_per_token(T) for b in m.blocks) for T in (1, 4096, 65536)]
    assert 0 < extra[0] <= extra[1] == extra[2]  # grows up to one chunk (chunked forms), then constant


# ----------------------------------------------------------------------------- configs and backends


def test_config_errors_name_the_key() -> None:
    with pytest.raises(models.ConfigError, match="head_dim"):
        models.build("mamba2", d_model=32, head_dim=24)  # E = 64 is not a multiple of 24
    with pytest.raises(models.ConfigError, match="n_groups"):
        models.build("mamba2", d_model=32, head_dim=16, n_groups=3)
    with pytest.raises(models.ConfigError, match="slstm_at"):
        models.build("xlstm", n_layers=2, slstm_at=[2])
    with pytest.raises(models.ConfigError, match="allow_neg_eigval"):
        models.build("linear_attention", kind="gla", allow_neg_eigval=True)
    with pytest.raises(models.ConfigError, match="expand_k"):
        models.build("linear_attention", kind="gla", d_model=30, n_heads=4)  # key_dim 15
    with pytest.raises(models.ConfigError, match=r"'kind' must be one of 'gla', 'retnet', 'deltanet'"):
        models.build("linear_attention", kind="mamba")
    with pytest.raises(models.ConfigError, match="chunk_size"):
        models.build("mingru", chunk_size=0)


def test_cpu_runs_reference_and_official_backends_need_cuda() -> None:
    for family in FAMILIES:
        assert models.build(family, d_model=16).impl == "reference"
    if not mamba_ssm_ssd_available():
        with pytest.raises(Mamba2BackendError, match=r"pip install 'seqbench\[mamba\]'"):
            models.build("mamba2", d_model=16, backend="mamba_ssm")
    else:
        with pytest.raises(Mamba2BackendError, match="needs CUDA"):
            models.build("mamba2", d_model=16, backend="mamba_ssm")(torch.zeros(1, 4, dtype=torch.long))
    if not fla_available():
        with pytest.raises(LinearAttentionBackendError, match="pip install flash-linear-attention"):
            models.build("linear_attention", d_model=16, backend="fla")
    else:
        with pytest.raises(LinearAttentionBackendError, match="needs CUDA"):
            models.build("linear_attention", d_model=16, backend="fla")(torch.zeros(1, 4, dtype=torch.long))
