"""xLSTM: mLSTM and sLSTM blocks of Beck et al. 2024, "xLSTM: Extended Long Short-Term
Memory" (arXiv:2405.04517). A stack of mLSTM blocks with sLSTM blocks at the layer indices
`slstm_at` (the paper's xLSTM[a:b] ratios; () = all mLSTM, xLSTM[1:0]).

mLSTM (§2.3, matrix memory, fully parallelisable), per head with key size d:

    C_t = f_t C_{t-1} + i_t k_t v_tᵀ      n_t = f_t n_{t-1} + i_t k_t        (k_t = W_k x / √d)
    h̃_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1)
    i_t = exp(ĩ_t),  f_t = σ(f̃_t) (or exp(f̃_t)),  stabilised by m_t = max(log f_t + m_{t-1}, ĩ_t):
    i'_t = exp(ĩ_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t),  C, n kept in units of exp(m_t),
    h̃_t = C_tᵀ q_t / (max(|n_tᵀ q_t|, exp(-m_t)) + ε)                        (m_{-1} = 0, ε = 1e-6)

The block (Fig. 10, pre up-projection; the layout of NX-AI/xlstm's mLSTMLayer):
x, z = proj_up(u); x_c = silu(conv1d(x)); q, k = q_proj(x_c), k_proj(x_c); v = v_proj(x);
ĩ, f̃ = igate / fgate of [q, k, v]; h = multi-head LayerNorm(cell) + learnable_skip ⊙ x_c;
out = proj_down(h ⊙ silu(z)). (q, k, v projections are dense here, block-diagonal there.)

Training runs the chunkwise form: within chunks of L = chunk_size the stabilised quadratic
(parallel) form with log weights D[t, s] = Σ_{s<j<=t} log f_j + ĩ_s, and the state (C, n, m)
carried between chunks; m_t = max(Σ_{j<=t} log f_j + m_before, max_s D[t, s]) equals the
recurrent stabiliser exactly, so the forward and `step` agree to rounding at any length.
chunk_size >= T is the paper's parallel form (Appendix, eq. (27)-(33)).

sLSTM (§2.2, scalar memory, exponential gating, memory mixing through the recurrent
weights R, block-diagonal over heads):

    [ĩ, f̃, z̃, õ]_t = W x_t + R h_{t-1} + b   (ĩ, f̃ from the causally convolved x_c)
    m_t = max(log f_t + m_{t-1}, ĩ_t),  i' = exp(ĩ_t - m_t),  f' = exp(log f_t + m_{t-1} - m_t)
    c_t = f' c_{t-1} + i' tanh(z̃_t),  n_t = f' n_{t-1} + i',  h_t = σ(õ_t) ⊙ c_t / n_t

then a multi-head LayerNorm. h_{t-1} enters the gates, so sLSTM has no parallel form: forward
is a loop over time (its chunked-vs-naive speed comparison does not apply). The paper's sLSTM
block also has a gated MLP after the cell; here that is the backbone's MLP (mlp_ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.config import NonNegFloat, NonNegInt, PosInt
from seqbench.errors import ConfigError

from .base import BackboneModel, Mixer, ModelConfig
from .registry import register
from .scan import causal_conv, conv_step, pad_time

EPS = 1e-6  # ε of the mLSTM normaliser (as NX-AI/xlstm)


@dataclass(frozen=True)
class XLSTMConfig(ModelConfig):
    n_heads: PosInt = 4  # H: heads of the mLSTM and sLSTM cells
    expand: PosInt = 2  # mLSTM block up-projection: inner width E = expand * d_model (paper: 2)
    d_conv: PosInt = 4  # causal depthwise conv width in both blocks (paper: 4)
    chunk_size: PosInt = 64  # mLSTM chunkwise form: chunk length L; any T works (padded)
    slstm_at: tuple[NonNegInt, ...] = ()  # layer indices that are sLSTM blocks; the rest are mLSTM
    forget_gate: Literal["sigmoid", "exp"] = "sigmoid"  # f_t = σ(f̃) or exp(f̃) (both kept in log space)
    mlp_ratio: NonNegFloat = 0.0  # mLSTM blocks have no MLP; set > 0 for sLSTM's post-up-projection MLP

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [i for i in self.slstm_at if i >= self.n_layers]
        if bad:
            raise ConfigError(f"slstm_at {list(self.slstm_at)} names layers {bad}, but n_layers is {self.n_layers} "
                              f"(indices 0..{self.n_layers - 1})")
        if len(set(self.slstm_at)) != len(self.slstm_at):
            raise ConfigError(f"slstm_at {list(self.slstm_at)} repeats a layer index")
        for what, width in (("d_model", self.d_model), ("expand * d_model", self.expand * self.d_model)):
            if width % self.n_heads != 0:
                raise ConfigError(f"{what} = {width} must be divisible by n_heads ({self.n_heads}); "
                                  "change n_heads or d_model")


def log_forget(f_pre: torch.Tensor, kind: str) -> torch.Tensor:
    """log f: logsigmoid(f̃) for a sigmoid forget gate, f̃ itself for an exponential one."""
    return F.logsigmoid(f_pre) if kind == "sigmoid" else f_pre


def head_layer_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over each head's channels (NX-AI/xlstm MultiHeadLayerNorm, no bias).
    x (..., H, d), weight (H * d,) -> (..., H * d)."""
    x = F.layer_norm(x, x.shape[-1:], eps=eps)
    return x.flatten(-2) * weight


# ----------------------------------------------------------------------------- mLSTM


def mlstm_chunkwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_pre: torch.Tensor,
                    log_f: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Stabilised mLSTM, chunk by chunk. q, k, v (B, H, T, d), k already / √d;
    i_pre = ĩ and log_f (B, H, T) -> h̃ (B, H, T, d). Any T >= 1."""
    Bsz, H, T, d = q.shape
    L = chunk_size
    q, k, v, i_pre, log_f = (pad_time(t, L, dim=2) for t in (q, k, v, i_pre, log_f))
    n = q.shape[2] // L
    q, k, v = (t.view(Bsz, H, n, L, d) for t in (q, k, v))
    i_pre, log_f = i_pre.view(Bsz, H, n, L), log_f.view(Bsz, H, n, L)
    b = log_f.cumsum(-1)  # (B, H, n, L): Σ log f from the chunk start to t (inclusive)

    # log weight of input s at position t inside the chunk: D[t, s] = b_t - b_s + ĩ_s, s <= t
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=q.device))
    Dlog = (b.unsqueeze(-1) - b.unsqueeze(-2) + i_pre.unsqueeze(-2)).masked_fill(~causal, float("-inf"))

    # each chunk's own (C, n) at its end, in units of exp(m_local)
    g_end = b[..., -1:] - b + i_pre  # (B, H, n, L)
    m_local = g_end.max(-1).values  # (B, H, n)
    kw = k * torch.exp(g_end - m_local.unsqueeze(-1)).unsqueeze(-1)  # (B, H, n, L, d)
    C_local, n_local = kw.transpose(-1, -2) @ v, kw.sum(-2)  # (B, H, n, d, d), (B, H, n, d)

    # carry (C, n, m) from chunk to chunk, m as the recurrence would have it (m_{-1} = 0)
    C, nrm, m = q.new_zeros(Bsz, H, d, d), q.new_zeros(Bsz, H, d), q.new_zeros(Bsz, H)
    Cs, ns, ms = [], [], []
    for b_end, m_loc, C_loc, n_loc in zip(b[..., -1].unbind(2), m_local.unbind(2), C_local.unbind(2),
                                          n_local.unbind(2)):  # unbind: a linear backward
        Cs.append(C)
        ns.append(nrm)
        ms.append(m)
        m_new = torch.maximum(b_end + m, m_loc)
        a_old, a_new = torch.exp(b_end + m - m_new), torch.exp(m_loc - m_new)  # (B, H)
        C = a_old[..., None, None] * C + a_new[..., None, None] * C_loc
        nrm = a_old[..., None] * nrm + a_new[..., None] * n_loc
        m = m_new
    C_prev, n_prev, m_prev = torch.stack(Cs, 2), torch.stack(ns, 2), torch.stack(ms, 2)  # before each chunk

    # outputs: the carried state decayed to t, plus the chunk-local quadratic form, in units of exp(m_t)
    inter = b + m_prev.unsqueeze(-1)  # (B, H, n, L): log weight of the carried state at t
    m_t = torch.maximum(inter, Dlog.max(-1).values)  # (B, H, n, L) = the recurrent m_t
    P = (q @ k.transpose(-1, -2)) * torch.exp(Dlog - m_t.unsqueeze(-1))  # (B, H, n, L, L)
    w_inter = torch.exp(inter - m_t)  # (B, H, n, L)
    num = P @ v + w_inter.unsqueeze(-1) * (q @ C_prev)  # (B, H, n, L, d)
    den = P.sum(-1) + w_inter * (q * n_prev.unsqueeze(-2)).sum(-1)  # (B, H, n, L)
    h = num / (torch.maximum(den.abs(), torch.exp(-m_t)) + EPS).unsqueeze(-1)
    return h.reshape(Bsz, H, n * L, d)[:, :, :T]


class MLSTMMixer(Mixer):
    """The mLSTM block (pre up-projection, NX-AI/xlstm mLSTMLayer layout): (B, T, D) -> (B, T, D)."""

    streamable = True

    def __init__(self, config: XLSTMConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.n_heads
        E = config.expand * D
        self.d_inner, self.n_heads, self.head_dim = E, H, E // H
        self.d_conv, self.chunk_size, self.forget_gate = config.d_conv, config.chunk_size, config.forget_gate
        self.proj_up = nn.Linear(D, 2 * E, bias=False)  # [x, z]
        self.conv1d = nn.Conv1d(E, E, kernel_size=config.d_conv, groups=E, padding=config.d_conv - 1, bias=True)
        self.q_proj = nn.Linear(E, E, bias=False)
        self.k_proj = nn.Linear(E, E, bias=False)
        self.v_proj = nn.Linear(E, E, bias=False)
        self.igate = nn.Linear(3 * E, H)
        self.fgate = nn.Linear(3 * E, H)
        self.outnorm_weight = nn.Parameter(torch.ones(E))
        self.learnable_skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, D, bias=False)
        # NX-AI/xlstm init: gate weights 0, forget bias linspace(3, 6) (remember by default), input bias N(0, 0.1)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, H))
        self.impl = "reference"

    def _inputs(self, x: torch.Tensor, x_c: torch.Tensor):
        """x, x_c (..., E) -> q, k (k / √d), v (..., H, d) and ĩ, log f (..., H)."""
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x)
        qkv = torch.cat([q, k, v], dim=-1)
        i_pre, log_f = self.igate(qkv), log_forget(self.fgate(qkv), self.forget_gate)
        q, k, v = (t.unflatten(-1, (self.n_heads, self.head_dim)) for t in (q, k, v))
        return q, k * self.head_dim**-0.5, v, i_pre, log_f

    def _out(self, h: torch.Tensor, x_c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h (..., H, d) -> proj_down((norm(h) + skip ⊙ x_c) ⊙ silu(z)) (..., D)."""
        h = head_layer_norm(h, self.outnorm_weight) + self.learnable_skip * x_c
        return self.proj_down(h * F.silu(z))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, T, D) -> (B, T, D)."""
        x, z = self.proj_up(u).chunk(2, dim=-1)  # (B, T, E) each
        x_c = F.silu(causal_conv(x, self.conv1d.weight, self.conv1d.bias))
        q, k, v, i_pre, log_f = self._inputs(x, x_c)  # (B, T, H, d), (B, T, H)
        h = mlstm_chunkwise(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            i_pre.transpose(1, 2), log_f.transpose(1, 2), self.chunk_size)  # (B, H, T, d)
        return self._out(h.transpose(1, 2), x_c, z)

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype):
        """(conv window (B, E, d_conv), C (B, H, d, d), n (B, H, d), m (B, H)), zeros."""
        H, d = self.n_heads, self.head_dim
        shapes = [(self.d_inner, self.d_conv), (H, d, d), (H, d), (H,)]
        return tuple(torch.zeros(batch_size, *s, device=device, dtype=dtype) for s in shapes)

    def step(self, u_t: torch.Tensor, state):
        """u_t (B, D) -> (y_t (B, D), state): the stabilised recurrence, one position."""
        window, C, nrm, m = state
        x, z = self.proj_up(u_t).chunk(2, dim=-1)  # (B, E)
        x_c, window = conv_step(window, x, self.conv1d.weight, self.conv1d.bias)
        x_c = F.silu(x_c)
        q, k, v, i_pre, log_f = self._inputs(x, x_c)  # (B, H, d), (B, H)
        m_new = torch.maximum(log_f + m, i_pre)
        f, i = torch.exp(log_f + m - m_new), torch.exp(i_pre - m_new)  # (B, H)
        C = f[..., None, None] * C + i[..., None, None] * k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, d, d)
        nrm = f[..., None] * nrm + i[..., None] * k
        num = (q.unsqueeze(-2) @ C).squeeze(-2)  # (B, H, d)
        den = (q * nrm).sum(-1)  # (B, H)
        h = num / (torch.maximum(den.abs(), torch.exp(-m_new)) + EPS).unsqueeze(-1)
        return self._out(h, x_c, z), (window, C, nrm, m_new)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """conv window E·d_conv + C (H·d·d) + n (H·d) + m (H), whatever seq_len."""
        H, d = self.n_heads, self.head_dim
        return (self.d_inner * self.d_conv + H * d * d + H * d + H) * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """Chunkwise mLSTM per token, L = min(chunk_size, seq_len), H heads of size d (E = H·d):
        chunk-local q kᵀ 2·E·L, log weights, exp and masks ~4·H·L, P v 2·E·L, row sums H·L;
        chunk state C_local 2·E·d, n_local 2·E; readout of the carried C 2·E·d, of n 2·E;
        the carry 4·E·d / L; block: norm, skip, gate ~10·E. Total
        4·E·L + 5·H·L + 4·E·d + 4·E·d / L + 14·E."""
        E, H, d = self.d_inner, self.n_heads, self.head_dim
        L = min(self.chunk_size, max(1, seq_len))
        return 4.0 * E * L + 5.0 * H * L + 4.0 * E * d + 4.0 * E * d / L + 14.0 * E


# ----------------------------------------------------------------------------- sLSTM


class SLSTMMixer(Mixer):
    """The sLSTM layer (conv -> cell with block-diagonal recurrence -> multi-head LayerNorm):
    (B, T, D) -> (B, T, D). Sequential in T (no parallel form)."""

    streamable = True

    def __init__(self, config: XLSTMConfig) -> None:
        super().__init__()
        D, H = config.d_model, config.n_heads
        self.d_model, self.n_heads, self.head_dim = D, H, D // H
        self.d_conv, self.forget_gate = config.d_conv, config.forget_gate
        self.conv1d = nn.Conv1d(D, D, kernel_size=config.d_conv, groups=D, padding=config.d_conv - 1, bias=True)
        self.w_if = nn.Linear(D, 2 * D, bias=False)  # ĩ, f̃ from the convolved x_c
        self.w_zo = nn.Linear(D, 2 * D, bias=False)  # z̃, õ from x
        d = self.head_dim
        # R: per head, h_{t-1} (d) -> its [ĩ, f̃, z̃, õ] (4, d); block-diagonal over heads
        self.R = nn.Parameter(torch.empty(H, d, 4 * d).uniform_(-(d**-0.5), d**-0.5))
        self.bias = nn.Parameter(torch.zeros(4, D))  # [ĩ, f̃, z̃, õ]
        with torch.no_grad():
            self.bias[1] = torch.linspace(3.0, 6.0, H).repeat_interleave(d)  # remember by default
        self.outnorm_weight = nn.Parameter(torch.ones(D))
        self.impl = "reference"

    def _input_preacts(self, x: torch.Tensor, x_c: torch.Tensor) -> torch.Tensor:
        """x, x_c (..., D) -> W x + b as (..., 4, H, d), gates [ĩ, f̃, z̃, õ]."""
        pre = torch.cat([self.w_if(x_c), self.w_zo(x)], dim=-1)  # (..., 4D)
        pre = pre.unflatten(-1, (4, self.d_model)) + self.bias
        return pre.unflatten(-1, (self.n_heads, self.head_dim))

    def _cell(self, pre_t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step: pre_t (B, 4, H, d) input part; state (h, c, n, m) each (B, H, d)."""
        h, c, n, m = state
        rec = (h.unsqueeze(-2) @ self.R).squeeze(-2)  # (B, H, 4d): block-diagonal R h_{t-1}
        pre = pre_t + rec.unflatten(-1, (4, self.head_dim)).transpose(1, 2)  # (B, 4, H, d)
        i_pre, f_pre, z_pre, o_pre = pre.unbind(1)
        log_f = log_forget(f_pre, self.forget_gate)
        m_new = torch.maximum(log_f + m, i_pre)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
        c = f * c + i * torch.tanh(z_pre)
        n = f * n + i
        h = torch.sigmoid(o_pre) * c / n
        return h, (h, c, n, m_new)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D), by a loop over t."""
        Bsz, T, _ = x.shape
        x_c = F.silu(causal_conv(x, self.conv1d.weight, self.conv1d.bias))
        pre = self._input_preacts(x, x_c)  # (B, T, 4, H, d)
        state = tuple(x.new_zeros(Bsz, self.n_heads, self.head_dim) for _ in range(4))
        hs = []
        for t in range(T):
            h, state = self._cell(pre[:, t], state)
            hs.append(h)
        return head_layer_norm(torch.stack(hs, dim=1), self.outnorm_weight)  # (B, T, D)

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype):
        """(conv window (B, D, d_conv), (h, c, n, m) each (B, H, d)), zeros."""
        window = torch.zeros(batch_size, self.d_model, self.d_conv, device=device, dtype=dtype)
        return window, tuple(torch.zeros(batch_size, self.n_heads, self.head_dim, device=device, dtype=dtype)
                             for _ in range(4))

    def step(self, x_t: torch.Tensor, state):
        """x_t (B, D) -> (y_t (B, D), state)."""
        window, cell = state
        x_c, window = conv_step(window, x_t, self.conv1d.weight, self.conv1d.bias)
        h, cell = self._cell(self._input_preacts(x_t, F.silu(x_c)), cell)
        return head_layer_norm(h, self.outnorm_weight), (window, cell)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """conv window D·d_conv + h, c, n, m (4·D), whatever seq_len."""
        return (self.d_model * self.d_conv + 4 * self.d_model) * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """Gates and cell per channel: stabiliser, two exps, tanh, sigmoid, c, n and h updates,
        bias and recurrent adds ~20·D, the LayerNorm ~8·D (R h is counted with the matmuls)."""
        return 28.0 * self.d_model


@register("xlstm", XLSTMConfig)
class XLSTM(BackboneModel):
    """Pre-norm residual stack of mLSTM blocks with sLSTM blocks at `slstm_at` (Beck et al. 2024)."""

    def __init__(self, config: XLSTMConfig) -> None:
        slstm = set(config.slstm_at)
        super().__init__(config, lambda i: SLSTMMixer(config) if i in slstm else MLSTMMixer(config))
