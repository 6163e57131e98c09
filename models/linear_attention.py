"""Linear attention with a recurrent state: GLA, RetNet and DeltaNet, one mixer with `kind`.

All three keep a matrix state S (K, V) per head, read out as o_t = S_tᵀ q_t (q scaled by K^-1/2):

    gla       S_t = diag(α_t) S_{t-1} + k_t v_tᵀ,     α_t = exp(logsigmoid(W_α x_t) / 16)  per key channel
              Yang et al. 2023, "Gated Linear Attention Transformers with Hardware-Efficient
              Training" (arXiv:2312.06635), eq. (3)-(4); W_α low rank (gk_proj).
    retnet    S_t = γ_h S_{t-1} + k_t v_tᵀ,           γ_h = 1 - 2^(-5-h), fixed per head h,
              q, k rotated by position (RoPE). Sun et al. 2023, "Retentive Network: A Successor
              to Transformer for Large Language Models" (arXiv:2307.08621), eq. (1)-(5).
    deltanet  S_t = (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   β_t = σ(W_β x_t),  q, k L2-normalised
              (the delta rule: S_tᵀ k_t moves toward v_t). Yang et al. 2024, "Parallelizing
              Linear Transformers with the Delta Rule over Sequence Length" (arXiv:2406.06484).
              allow_neg_eigval: β_t = 2σ(·) ∈ [0, 2], so I - β k kᵀ has eigenvalue 1 - β ∈ [-1, 1]:
              Grazzi et al. 2024, "Unlocking State-Tracking in Linear RNNs Through Negative
              Eigenvalues" (arXiv:2411.12537) — this is what lets it learn parity.

then per head an RMSNorm of o (GLA, RetNet: gated by swish(g_proj x), fla's FusedRMSNormGated)
and o_proj back to d_model.

Training runs the chunkwise-parallel form (chunk length L = chunk_size; any T, padded inside):
- retnet: models/scan.py chunked_decay_attention, a masked (L, L) matrix per chunk plus the state
  passed between chunks (chunkwise retention, Sun et al. eq. (7)).
- gla: the same with per-channel decays, in two levels as fla's chunk_gla: inside a chunk,
  sub-chunks of 8 meet the earlier sub-chunks through the state at their start and themselves
  exactly over (8, 8, K); every exponent is a decay from an earlier position to a later one,
  so it stays exact for any gate (no exp(-Σ log α) factor that overflows).
- deltanet: the WY / UT-transform form of Yang et al. 2024 §3: per chunk, with
  M = I + tril(diag(β) K Kᵀ, -1), W = M⁻¹ diag(β) K and U = M⁻¹ diag(β) V (one triangular
  solve); then per chunk u = U - W S, O = Q S + tril(Q Kᵀ) u, S ← S + Kᵀ u.
`step` runs the recurrences above, one position at a time.

Parameter names and shapes are those of the fla layers (flash-linear-attention 0.6.0) at
their defaults, so their load_state_dict(mixer.state_dict()) works:
- gla: fla.layers.gla.GatedLinearAttention(hidden_size, expand_k=0.5, expand_v=1, num_heads,
  gate_low_rank_dim=16) — q_proj, k_proj, v_proj, g_proj, gk_proj.{0,1}, g_norm_swish_gate, o_proj;
- retnet: fla.layers.multiscale_retention.MultiScaleRetention(hidden_size, expand_k=1,
  expand_v=2, num_heads) — q_proj, k_proj, v_proj, g_proj, g_norm_swish_gate, o_proj (RoPE
  has no parameters; rotate-half convention as fla's RotaryEmbedding);
- deltanet: fla.layers.delta_net.DeltaNet(hidden_size, expand_k=1, expand_v=1, num_heads,
  use_short_conv=True, conv_size=4, allow_neg_eigval) — q_proj, k_proj, v_proj, b_proj,
  {q,k,v}_conv1d (ShortConvolution = depthwise nn.Conv1d, no bias), o_norm, o_proj.
(use_short_conv=True on gla / retnet adds fla's {q,k,v}_conv1d there too.)

Backends: "reference" (pure PyTorch, any device); "fla": fla's Triton chunk kernels chunk_gla /
chunk_retention / chunk_delta_rule (`pip install flash-linear-attention`; needs CUDA); "auto"
takes fla when it imports and the input is on CUDA.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.config import NonNegFloat, PosFloat, PosInt
from seqbench.errors import ConfigError

from .base import BackboneModel, KernelBackendError, Mixer, ModelConfig, use_kernel
from .registry import register
from .scan import causal_conv, chunked_decay_attention, conv_step, pad_time

INSTALL_HINT = "pip install flash-linear-attention  (fla; its Triton kernels need a CUDA GPU)"
# fla's layer defaults per kind: (expand_k, expand_v, use_short_conv)
KIND_DEFAULTS = {"gla": (0.5, 1.0, False), "retnet": (1.0, 2.0, False), "deltanet": (1.0, 1.0, True)}
NORM_EPS = 1e-5  # fla's norm_eps for the output norms
L2_EPS = 1e-6  # fla's l2norm: x / sqrt(Σx² + eps)
GLA_SUB_CHUNK = 8  # GLA's exact (c, c, K) blocks: c = gcd(chunk_size, 8); smaller = less memory, more matmuls


class LinearAttentionBackendError(KernelBackendError):
    """The requested linear-attention backend cannot run here (fla missing or tensors not on CUDA)."""


@dataclass(frozen=True)
class LinearAttentionConfig(ModelConfig):
    kind: Literal["gla", "retnet", "deltanet"] = "gla"  # which recurrence; see module docstring
    n_heads: PosInt = 4  # H: heads; head sizes key_dim / H and value_dim / H
    expand_k: PosFloat | None = None  # key_dim = expand_k * d_model; None = fla's default (gla 0.5, else 1)
    expand_v: PosFloat | None = None  # value_dim = expand_v * d_model; None = fla's default (retnet 2, else 1)
    chunk_size: PosInt = 32  # L: chunk length of the chunkwise-parallel form; any T works (padded)
    use_short_conv: bool | None = None  # causal conv + SiLU on q, k, v; None = fla's default (deltanet only)
    conv_size: PosInt = 4  # width of the short convolutions
    allow_neg_eigval: bool = False  # deltanet only: β in [0, 2] (Grazzi et al. 2024), else [0, 1]
    gate_low_rank_dim: PosInt = 16  # gla only: rank of the forget-gate projection gk_proj
    gate_logit_normalizer: PosFloat = 16.0  # gla only: log α = logsigmoid(·) / this
    backend: Literal["auto", "reference", "fla"] = "auto"  # chunk kernel; see module docstring
    mlp_ratio: NonNegFloat = 4.0  # an MLP after each mixer, as in fla's GLA / RetNet / DeltaNet models

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, dim in (("expand_k", self.key_dim), ("expand_v", self.value_dim)):
            expand = getattr(self, name) or KIND_DEFAULTS[self.kind][0 if name == "expand_k" else 1]
            if abs(expand * self.d_model - dim) > 1e-6 or dim < self.n_heads or dim % self.n_heads != 0:
                raise ConfigError(
                    f"{name} * d_model = {expand} * {self.d_model} must be a whole multiple of n_heads "
                    f"({self.n_heads}); change {name}, d_model or n_heads"
                )
        if self.kind == "retnet" and (self.key_dim // self.n_heads) % 2 != 0:
            raise ConfigError(
                f"kind 'retnet' rotates q and k (RoPE) and needs an even key head size, got "
                f"key_dim / n_heads = {self.key_dim} / {self.n_heads}; change expand_k, d_model or n_heads"
            )
        if self.allow_neg_eigval and self.kind != "deltanet":
            raise ConfigError(f"allow_neg_eigval applies to kind 'deltanet' only, got kind {self.kind!r}")

    @property
    def key_dim(self) -> int:
        return round((self.expand_k or KIND_DEFAULTS[self.kind][0]) * self.d_model)

    @property
    def value_dim(self) -> int:
        return round((self.expand_v or KIND_DEFAULTS[self.kind][1]) * self.d_model)

    @property
    def short_conv(self) -> bool:
        return KIND_DEFAULTS[self.kind][2] if self.use_short_conv is None else self.use_short_conv


# ----------------------------------------------------------------------------- fla guard


@functools.lru_cache(maxsize=1)
def _fla_kernels() -> tuple[dict[str, Any] | None, str]:
    """({kind: chunk kernel} from fla, or None, and the import error message)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gla import chunk_gla
        from fla.ops.retention import chunk_retention
    except (ImportError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: CUDA or Triton missing
        return None, f"{type(exc).__name__}: {exc}"
    return {"gla": chunk_gla, "retnet": chunk_retention, "deltanet": chunk_delta_rule}, ""


def fla_available() -> bool:
    return _fla_kernels()[0] is not None


# ----------------------------------------------------------------------------- chunked forms


def chunked_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, chunk_size: int,
                sub_size: int = GLA_SUB_CHUNK) -> torch.Tensor:
    """GLA: o_t = Σ_{s<=t} (q_t ⊙ exp(Σ_{s<j<=t} g_j)) · k_s v_s, i.e. S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ.

    q, k, g (B, H, T, K) with g = log α <= 0; v (B, H, T, V) -> o (B, H, T, V). q arrives scaled.
    Two levels, as fla's chunk_gla: chunks of L = chunk_size pass the state (K, V) from one to
    the next; inside a chunk, sub-chunks of c = gcd(L, sub_size) positions meet the earlier
    sub-chunks through the state at their start, and themselves exactly, over (c, c, K). Every
    exponent is a decay from an earlier to a later position (<= 0): nothing can overflow.
    """
    Bsz, H, T, K = q.shape
    V, L = v.shape[-1], chunk_size
    c = math.gcd(L, sub_size)
    ns = L // c  # sub-chunks per chunk
    q, k, v, g = (pad_time(t, L, dim=2) for t in (q, k, v, g))
    n = q.shape[2] // L
    q, k, g, v = (t.view(Bsz, H, n, L, t.shape[-1]) for t in (q, k, g, v))
    b = g.cumsum(dim=3)  # (B, H, n, L, K): log decay from the chunk start to t (inclusive)

    # (a) within each sub-chunk: A[t, s] = Σ_k q_tk k_sk exp(b_tk - b_sk), s <= t, exactly
    qs, ks, bs = (t.view(Bsz, H, n, ns, c, K) for t in (q, k, b))
    causal = torch.tril(torch.ones(c, c, dtype=torch.bool, device=q.device))
    diff = (bs.unsqueeze(5) - bs.unsqueeze(4)).masked_fill(~causal[:, :, None], float("-inf"))  # (B, H, n, ns, c, c, K)
    A = (qs.unsqueeze(5) * ks.unsqueeze(4) * torch.exp(diff)).sum(-1)  # (B, H, n, ns, c, c)
    o = A @ v.view(Bsz, H, n, ns, c, V)  # (B, H, n, ns, c, V)

    # (b) earlier sub-chunks of the chunk, through the state at the start of sub-chunk i, taken
    # relative to r_i = b at the end of sub-chunk i - 1
    if ns > 1:
        r = bs[:, :, :, :-1, -1]  # (B, H, n, ns - 1, K)
        before = torch.arange(L, device=q.device)[None, :] < (c * torch.arange(1, ns, device=q.device))[:, None]
        ek = (r.unsqueeze(4) - b.unsqueeze(3)).masked_fill(~before[:, :, None], float("-inf"))  # (B, H, n, ns-1, L, K)
        S_sub = (k.unsqueeze(3) * torch.exp(ek)).transpose(-1, -2) @ v.unsqueeze(3)  # (B, H, n, ns-1, K, V)
        q_rel = qs[:, :, :, 1:] * torch.exp(bs[:, :, :, 1:] - r.unsqueeze(4))  # (B, H, n, ns-1, c, K)
        o = torch.cat([o[:, :, :, :1], o[:, :, :, 1:] + q_rel @ S_sub], dim=3)
    o = o.reshape(Bsz, H, n, L, V)

    # (c) each chunk's contribution to the state at its end, and the state carried across chunks
    local = (k * torch.exp(b[:, :, :, -1:] - b)).transpose(-1, -2) @ v  # (B, H, n, K, V)
    chunk_decay = torch.exp(b[:, :, :, -1])  # (B, H, n, K)
    state = q.new_zeros(Bsz, H, K, V)
    entering = []
    for decay_c, local_c in zip(chunk_decay.unbind(2), local.unbind(2)):  # unbind: a linear backward
        entering.append(state)
        state = decay_c.unsqueeze(-1) * state + local_c
    prev = torch.stack(entering, dim=2)  # (B, H, n, K, V)
    o = o + (q * torch.exp(b)) @ prev
    return o.reshape(Bsz, H, n * L, V)[:, :, :T]


def chunked_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       chunk_size: int) -> torch.Tensor:
    """DeltaNet: S_t = (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, o_t = S_tᵀ q_t, in the WY form.

    q, k (B, H, T, K) (q scaled, k L2-normalised); v (B, H, T, V); beta (B, H, T) -> o (B, H, T, V).
    Within a chunk S_t = S_0 + Σ_{s<=t} k_s u_sᵀ with u_s = β_s (v_s - S_{s-1}ᵀ k_s), i.e.
    (I + tril(diag(β) K Kᵀ, -1)) u = diag(β) (V - K S_0): u = U - W S_0 with W, U from one
    unit-lower-triangular solve per chunk (all chunks at once).
    """
    Bsz, H, T, K = q.shape
    V, L = v.shape[-1], chunk_size
    q, k, v, beta = (pad_time(t, L, dim=2) for t in (q, k, v, beta))  # β = 0 past the end: S unchanged
    n = q.shape[2] // L
    q, k, v = (t.view(Bsz, H, n, L, t.shape[-1]) for t in (q, k, v))
    beta = beta.view(Bsz, H, n, L, 1)

    eye = torch.eye(L, dtype=q.dtype, device=q.device)
    kb = k * beta  # (B, H, n, L, K)
    M = torch.tril(kb @ k.transpose(-1, -2), diagonal=-1) + eye  # (B, H, n, L, L), unit lower triangular
    WU = torch.linalg.solve_triangular(M, torch.cat([kb, v * beta], dim=-1), upper=False, unitriangular=True)
    W, U = WU.split([K, V], dim=-1)  # (B, H, n, L, K), (B, H, n, L, V)

    state = q.new_zeros(Bsz, H, K, V)
    entering, us = [], []
    for U_c, W_c, k_c in zip(U.unbind(2), W.unbind(2), k.unbind(2)):  # unbind: a linear backward
        u = U_c - W_c @ state  # (B, H, L, V)
        entering.append(state)
        us.append(u)
        state = state + k_c.transpose(-1, -2) @ u
    prev, u = torch.stack(entering, dim=2), torch.stack(us, dim=2)  # (B, H, n, K, V), (B, H, n, L, V)
    attn = torch.tril(q @ k.transpose(-1, -2))  # (B, H, n, L, L), diagonal included
    o = q @ prev + attn @ u
    return o.reshape(Bsz, H, n * L, V)[:, :, :T]


# ----------------------------------------------------------------------------- pieces


def rotate_half_rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """fla's RotaryEmbedding (interleaved=False): x (B, T, H, d), pos (T,) -> rotated x.

    Channel i is paired with i + d/2 and turned by pos · base^(-2i/d)."""
    d = x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)  # angles in at least fp32 (fla: pos_idx_in_fp32)
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, device=x.device, dtype=dtype) / d))  # (d/2,)
    angle = pos.to(dtype)[:, None] * inv_freq  # (T, d/2)
    cos = torch.cat([angle.cos(), angle.cos()], -1).to(x.dtype)[:, None]  # (T, 1, d)
    sin = torch.cat([angle.sin(), angle.sin()], -1).to(x.dtype)[:, None]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + L2_EPS)


class HeadRMSNorm(nn.Module):
    """RMSNorm over one head's channels (fla RMSNorm), optionally gated: norm(o) · w ⊙ swish(g)
    (fla FusedRMSNormGated: the norm comes before the gate)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, o: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """o, g (..., d) -> (..., d)."""
        y = rms_norm(o, self.weight)
        return y if g is None else y * F.silu(g)


def _short_conv(channels: int, width: int) -> nn.Conv1d:
    """fla's ShortConvolution: a depthwise nn.Conv1d without bias (SiLU applied by the caller)."""
    return nn.Conv1d(channels, channels, kernel_size=width, groups=channels, padding=width - 1, bias=False)


@dataclass
class LinearAttentionState:
    """Per-layer streaming state."""

    S: torch.Tensor  # (B, H, K, V) the matrix memory
    conv: tuple[torch.Tensor, ...] | None  # windows (B, C, conv_size) of the q, k, v inputs, or None
    pos: int = 0  # positions seen (RetNet's rotary angle)


# ----------------------------------------------------------------------------- the mixer


class LinearAttentionMixer(Mixer):
    """GLA / RetNet / DeltaNet in fla's layer layout: (B, T, D) -> (B, T, D)."""

    streamable = True

    def __init__(self, config: LinearAttentionConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.n_heads
        Dk, Dv = config.key_dim, config.value_dim
        self.kind, self.n_heads, self.chunk_size = config.kind, H, config.chunk_size
        self.key_dim, self.value_dim, self.head_k_dim, self.head_v_dim = Dk, Dv, Dk // H, Dv // H
        self.use_short_conv, self.conv_size = config.short_conv, config.conv_size
        self.allow_neg_eigval = config.allow_neg_eigval
        self.gate_logit_normalizer = config.gate_logit_normalizer
        self.backend = config.backend
        if self.backend == "fla" and not fla_available():
            raise LinearAttentionBackendError(
                f"linear_attention backend 'fla' was requested but fla does not import ({_fla_kernels()[1]}); "
                f"install it with {INSTALL_HINT}, or set backend='reference' (pure PyTorch, any device) or 'auto'"
            )

        self.q_proj = nn.Linear(D, Dk, bias=False)
        self.k_proj = nn.Linear(D, Dk, bias=False)
        self.v_proj = nn.Linear(D, Dv, bias=False)
        if self.use_short_conv:
            self.q_conv1d = _short_conv(Dk, config.conv_size)
            self.k_conv1d = _short_conv(Dk, config.conv_size)
            self.v_conv1d = _short_conv(Dv, config.conv_size)
        if self.kind == "gla":
            self.gk_proj = nn.Sequential(nn.Linear(D, config.gate_low_rank_dim, bias=False),
                                         nn.Linear(config.gate_low_rank_dim, Dk, bias=True))
        if self.kind in ("gla", "retnet"):
            self.g_proj = nn.Linear(D, Dv, bias=False)
            self.g_norm_swish_gate = HeadRMSNorm(self.head_v_dim)
        else:
            self.b_proj = nn.Linear(D, H, bias=False)
            self.o_norm = HeadRMSNorm(self.head_v_dim)
        self.o_proj = nn.Linear(Dv, D, bias=False)

    def _log_gamma(self, like: torch.Tensor) -> torch.Tensor:
        """RetNet's fixed decays log γ_h, γ_h = 1 - 2^(-5-h) (fla's chunk_retention), (H,) in like's dtype."""
        h = torch.arange(self.n_heads, device=like.device, dtype=like.dtype)
        return torch.log1p(-(2.0 ** (-5.0 - h)))

    # -- backend choice

    def _use_fla(self, device: torch.device) -> bool:
        return use_kernel("linear_attention", self.backend, "fla", device, fla_available, LinearAttentionBackendError)

    @property
    def impl(self) -> str:
        """What forward runs for this module's current device: 'fla' or 'reference'."""
        return "fla" if self._use_fla(self.q_proj.weight.device) else "reference"

    # -- shared projections (whole sequence or one step, with a leading time axis)

    def _qkv(self, x: torch.Tensor, conv: tuple[torch.Tensor, ...] | None = None):
        """x (B, T, D) -> q, k, v (B, T, Dk / Dv) after the short convs / activations, and the
        new conv windows when `conv` (windows of a step, T = 1) is given."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.use_short_conv:
            convs = (self.q_conv1d, self.k_conv1d, self.v_conv1d)
            if conv is None:
                q, k, v = (F.silu(causal_conv(t, c.weight, None)) for t, c in zip((q, k, v), convs))
            else:
                outs = [conv_step(w, t[:, 0], c.weight, None) for w, t, c in zip(conv, (q, k, v), convs)]
                q, k, v = (F.silu(y).unsqueeze(1) for y, _ in outs)
                conv = tuple(w for _, w in outs)
        elif self.kind == "deltanet":  # fla's DeltaNet: SiLU on q, k, v even without the convs
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        return q, k, v, conv

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.n_heads, -1))  # (B, T, H, d)

    def _prepare(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """Heads and per-kind inputs: q, k, v (B, T, H, ·) and extra (gk (B, T, H, K) | β (B, T, H) | None)."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        extra = None
        if self.kind == "gla":
            extra = self._heads(F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer)
        elif self.kind == "retnet":
            q, k = rotate_half_rope(q, pos), rotate_half_rope(k, pos)
        else:
            q, k = l2_norm(q), l2_norm(k)
            beta = self.b_proj(x).sigmoid()  # (B, T, H)
            extra = 2.0 * beta if self.allow_neg_eigval else beta
        return q, k, v, extra

    def _output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """o (B, T, H, V) -> norm (and gate) -> o_proj -> (B, T, D)."""
        if self.kind == "deltanet":
            o = self.o_norm(o)
        else:
            o = self.g_norm_swish_gate(o, self._heads(self.g_proj(x)))
        return self.o_proj(o.flatten(-2))

    # -- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        T = x.shape[1]
        q, k, v, _ = self._qkv(x)
        q, k, v, extra = self._prepare(x, q, k, v, torch.arange(T, device=x.device))  # (B, T, H, ·)
        if self._use_fla(x.device):
            kernel = _fla_kernels()[0][self.kind]
            if self.kind == "gla":
                o, _ = kernel(q=q, k=k, v=v, g=extra, initial_state=None, output_final_state=False)
            elif self.kind == "retnet":
                o, _ = kernel(q=q, k=k, v=v, initial_state=None, output_final_state=False)
            else:  # q, k are L2-normalised above, so not again in the kernel
                o, _ = kernel(q=q, k=k, v=v, beta=extra, initial_state=None, output_final_state=False,
                              use_qk_l2norm_in_kernel=False)
        else:
            o = self._reference(q, k, v, extra)
        return self._output(x, o)

    def _reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """(B, T, H, ·) inputs -> o (B, T, H, V) by the chunkwise form of this kind."""
        q = q * self.head_k_dim**-0.5
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, ·)
        L = self.chunk_size
        if self.kind == "gla":
            o = chunked_gla(q, k, v, extra.transpose(1, 2), L)
        elif self.kind == "retnet":
            o = chunked_decay_attention(q, k, v, self._log_gamma(q)[:, None], L)
        else:
            o = chunked_delta_rule(q, k, v, extra.transpose(1, 2), L)
        return o.transpose(1, 2)

    # -- streaming

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> LinearAttentionState:
        """Zero memory S (B, H, K, V) and conv windows; max_len is irrelevant."""
        S = torch.zeros(batch_size, self.n_heads, self.head_k_dim, self.head_v_dim, device=device, dtype=dtype)
        conv = None
        if self.use_short_conv:
            conv = tuple(torch.zeros(batch_size, c, self.conv_size, device=device, dtype=dtype)
                         for c in (self.key_dim, self.key_dim, self.value_dim))
        return LinearAttentionState(S, conv, 0)

    def step(self, x_t: torch.Tensor, state: LinearAttentionState) -> tuple[torch.Tensor, LinearAttentionState]:
        """x_t (B, D) -> (y_t (B, D), new state): the recurrence of this kind, one position."""
        x = x_t.unsqueeze(1)  # (B, 1, D)
        q, k, v, conv = self._qkv(x, state.conv)
        pos = torch.tensor([state.pos], device=x.device)
        q, k, v, extra = self._prepare(x, q, k, v, pos)
        q, k, v = q[:, 0] * self.head_k_dim**-0.5, k[:, 0], v[:, 0]  # (B, H, ·)
        S = state.S
        if self.kind == "gla":
            S = torch.exp(extra[:, 0]).unsqueeze(-1) * S + k.unsqueeze(-1) * v.unsqueeze(-2)
        elif self.kind == "retnet":
            S = torch.exp(self._log_gamma(S))[:, None, None] * S + k.unsqueeze(-1) * v.unsqueeze(-2)
        else:
            beta = extra[:, 0, :, None]  # (B, H, 1)
            v_old = (k.unsqueeze(-2) @ S).squeeze(-2)  # S_{t-1}ᵀ k_t: (B, H, V)
            S = S + k.unsqueeze(-1) * (beta * (v - v_old)).unsqueeze(-2)
        o = (q.unsqueeze(-2) @ S).squeeze(-2)  # (B, H, V)
        y = self._output(x, o.unsqueeze(1))[:, 0]
        return y, LinearAttentionState(S, conv, state.pos + 1)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """Memory H·K·V (= key_dim · value_dim / H) plus the conv windows (2·key_dim + value_dim)·conv_size."""
        n = self.n_heads * self.head_k_dim * self.head_v_dim
        if self.use_short_conv:
            n += (2 * self.key_dim + self.value_dim) * self.conv_size
        return n * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """Chunkwise form per token, L = min(chunk_size, seq_len), H heads of K (keys) and V (values),
        exp counted as one FLOP; every kind adds the chunk's state contribution 2·H·K·V, the
        readout of the carried state 2·H·K·V and the output norm and gate ~6·H·V, plus
          retnet:   scores q kᵀ 2·H·K·L, decay mask H·L, weighted sum of v 2·H·V·L, the state
                    carried between chunks 2·H·K·V/L, RoPE 6·H·K;
          gla:      with sub-chunks of c = gcd(L, 8), s = L / c per chunk: exact scores over
                    (c, c, K) 5·H·c·K and their sum of v 2·H·c·V; the earlier sub-chunks' states
                    (s - 1)·H·(3·K + 2·K·V) and their readout 2·H·K·V; decay scalings 6·H·K;
                    the state carried 3·H·K·V/L;
          deltanet: scores 2·H·K·L, K Kᵀ 2·H·K·L, the triangular solve H·L·(K + V), the weighted
                    sum 2·H·V·L, the chunk loop's W S and Kᵀ u 4·H·K·V, L2 norms 6·H·K.
        (matmul_params already counts the projections and the short convolutions.)"""
        H, K, V = self.n_heads, self.head_k_dim, self.head_v_dim
        L = min(self.chunk_size, max(1, seq_len))
        common = 4.0 * H * K * V + 6.0 * H * V
        if self.kind == "retnet":
            return common + 2.0 * H * K * L + H * L + 2.0 * H * V * L + 2.0 * H * K * V / L + 6.0 * H * K
        if self.kind == "gla":
            c = math.gcd(L, GLA_SUB_CHUNK)
            s = L // c
            return (common + 5.0 * H * c * K + 2.0 * H * c * V + (s - 1) * H * (3.0 * K + 2.0 * K * V)
                    + 2.0 * H * K * V + 6.0 * H * K + 3.0 * H * K * V / L)
        return (common + 4.0 * H * K * L + H * L * (K + V) + 2.0 * H * V * L + 4.0 * H * K * V
                + 6.0 * H * K)


@register("linear_attention", LinearAttentionConfig)
class LinearAttention(BackboneModel):
    """Pre-norm residual stack of GLA / RetNet / DeltaNet layers (config key `kind`)."""

    def __init__(self, config: LinearAttentionConfig) -> None:
        super().__init__(config, lambda layer_idx: LinearAttentionMixer(config))
