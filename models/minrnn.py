"""minGRU and minLSTM: Feng et al. 2024, "Were RNNs All We Needed?" (arXiv:2410.01201).

Both drop the hidden-state dependence of the gates, so the recurrence is linear in h and
trains with a parallel scan (E = expand * d_model channels, all gates from x_t alone):

    minGRU   z_t = σ(W_z x_t),  h̃_t = g(W_h x_t)
             h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t                       (paper §3.1, eq. for minGRU)
    minLSTM  f_t = σ(W_f x_t),  i_t = σ(W_i x_t),  h̃_t = g(W_h x_t)
             f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)             (length-independent scaling)
             h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t                            (paper §3.2)

    g(x) = x + 0.5 if x >= 0 else σ(x)   keeps h̃ > 0, so every term has a real logarithm

then out_proj (E -> D). With h_{-1} = 0, h_t = a_t h_{t-1} + b_t is computed in log space
(Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential Computation",
arXiv:2311.06281; the paper's Listing for the log-space versions):

    log h_t = A_t + logcumsumexp_{s<=t}(log b_s - A_s),   A_t = Σ_{j<=t} log a_j

with log z = logsigmoid(k), log(1 - z) = log z - k for z = σ(k), and for minLSTM
d = log i - log f = logsigmoid(ĩ) - logsigmoid(f̃), log f' = -softplus(d), log i' = log f' + d.
The scan runs within chunks of chunk_size steps (so |A_t| stays bounded by one chunk and
float32 keeps its precision at any length) and carries h across chunks in a loop over
T / chunk_size chunks. Its backward is the adjoint recurrence, in closed form (LogSpaceScan).
`step` is the sequential recurrence above, in linear space.

There is no official kernel; the layout is one fused input projection (in_proj, with bias,
rows [h̃, z] or [f, i, h̃]) and out_proj.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from seqbench.config import NonNegFloat, PosInt

from .base import BackboneModel, Mixer, ModelConfig
from .registry import register
from .scan import pad_time


@dataclass(frozen=True)
class MinRNNConfig(ModelConfig):
    expand: PosInt = 1  # E = expand * d_model recurrent channels (2 or 4 learn slower at small widths)
    chunk_size: PosInt = 64  # steps per log-space scan chunk; h is carried between chunks
    mlp_ratio: NonNegFloat = 4.0  # the RNN mixes time only, so each block gets a channel MLP


@dataclass(frozen=True)
class MinGRUConfig(MinRNNConfig):
    pass


@dataclass(frozen=True)
class MinLSTMConfig(MinRNNConfig):
    pass


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive activation: x + 0.5 for x >= 0, σ(x) below (continuous at 0)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), without forming g for x < 0: log σ(x) = logsigmoid(x)."""
    return torch.where(x >= 0, torch.log(x.clamp(min=0) + 0.5), F.logsigmoid(x))


def _logcumsumexp_chunks(x: torch.Tensor, max_range: float = 60.0) -> torch.Tensor:
    """torch.logcumsumexp(x, dim=2) for x (B, n, L, E), fast: M + log cumsum exp(x - M) with M the
    chunk's max. Exact to rounding where x_0 >= M - max_range (every partial sum >= e^-60, so the
    terms exp(x - M) that underflow weigh < L e^-27 of it); the other (chunk, channel) rows take
    torch.logcumsumexp (3-20x slower on CPU), so the result never depends on the range of x."""
    M = x.amax(dim=2, keepdim=True)  # (B, n, 1, E)
    out = M + torch.log(torch.exp(x - M).cumsum(dim=2))
    wide = (x[:, :, :1] - M < -max_range).squeeze(2)  # (B, n, E): rows whose early sums underflow
    if wide.any():
        b, c, e = wide.nonzero(as_tuple=True)
        out[b, c, :, e] = torch.logcumsumexp(x[b, c, :, e], dim=-1)  # (rows, L)
    return out


def _heinsen_chunks(log_a: torch.Tensor, log_b: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t, h_{-1} = 0, from log a, log b (B, T, E): Heinsen's log-space scan
    within chunks, h carried between them. No autograd (LogSpaceScan.backward has its own)."""
    Bsz, T, E = log_a.shape
    L = chunk_size
    log_a, log_b = pad_time(log_a, L, dim=1), pad_time(log_b, L, dim=1)  # the padded tail is cropped
    n = log_a.shape[1] // L
    log_a, log_b = log_a.view(Bsz, n, L, E), log_b.view(Bsz, n, L, E)
    A = log_a.cumsum(dim=2)  # (B, n, L, E): Σ log a from the chunk start to t
    h = torch.exp(A + _logcumsumexp_chunks(log_b - A))  # (B, n, L, E): each chunk from h = 0
    decay = torch.exp(A)  # (B, n, L, E): product of a from the chunk start to t
    carry = log_a.new_zeros(Bsz, E)
    for c in range(n):  # h entering chunk c, then h at its end
        h_end = h[:, c, -1] + decay[:, c, -1] * carry
        h[:, c].addcmul_(decay[:, c], carry.unsqueeze(1))
        carry = h_end
    return h.view(Bsz, n * L, E)[:, :T]


def _linear_scan_reverse(a: torch.Tensor, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """y_t = x_t + a_{t+1} y_{t+1} (y_T = 0) for a in (0, 1], x of any sign, (B, T, E): the adjoint
    recurrence. Blocked: a loop over the L positions of all chunks at once, then over the chunks."""
    Bsz, T, E = x.shape
    L = chunk_size
    coef = torch.cat([a[:, 1:], a.new_zeros(Bsz, 1, E)], dim=1).flip(1)  # a_{t+1}, in reversed time
    x = x.flip(1)
    coef, x = pad_time(coef, L, dim=1), pad_time(x, L, dim=1)
    n = x.shape[1] // L
    coef, y = coef.view(Bsz, n, L, E), x.view(Bsz, n, L, E).clone()
    prod = coef.clone()  # (B, n, L, E): product of the coefficients from the chunk start to j
    for j in range(1, L):
        y[:, :, j].addcmul_(coef[:, :, j], y[:, :, j - 1])
        prod[:, :, j].mul_(prod[:, :, j - 1])
    carry = x.new_zeros(Bsz, E)
    for c in range(n):
        y_end = y[:, c, -1] + prod[:, c, -1] * carry
        y[:, c].addcmul_(prod[:, c], carry.unsqueeze(1))
        carry = y_end
    return y.view(Bsz, n * L, E)[:, :T].flip(1)


class LogSpaceScan(torch.autograd.Function):
    """h = scan(log a, log b) by `_heinsen_chunks`; backward by the adjoint recurrence
    λ_t = ∂L/∂h_t + a_{t+1} λ_{t+1}:  ∂L/∂log b_t = λ_t b_t,  ∂L/∂log a_t = λ_t a_t h_{t-1}.
    λ has both signs, so it runs in linear space, where products of a in (0, 1] cannot overflow
    (autograd through logcumsumexp costs two more log-space scans and most of the time)."""

    @staticmethod
    def forward(ctx: Any, log_a: torch.Tensor, log_b: torch.Tensor, chunk_size: int) -> torch.Tensor:
        h = _heinsen_chunks(log_a, log_b, chunk_size)
        ctx.save_for_backward(log_a, log_b, h)
        ctx.chunk_size = chunk_size
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        log_a, log_b, h = ctx.saved_tensors
        a = torch.exp(log_a)
        lam = _linear_scan_reverse(a, grad_h.contiguous(), ctx.chunk_size)  # (B, T, E)
        h_prev = torch.cat([h.new_zeros(h.shape[0], 1, h.shape[2]), h[:, :-1]], dim=1)
        return lam * a * h_prev, lam * torch.exp(log_b), None


def log_space_scan(log_a: torch.Tensor, log_b: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t with h_{-1} = 0, from log a, log b (B, T, E) -> h (B, T, E). Any T >= 1.

    Within each chunk: h_t = exp(A_t + logcumsumexp(log b - A)_t) + exp(A_t) h_before, with
    A the chunk-local cumulative sum of log a; h_before is carried from chunk to chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return LogSpaceScan.apply(log_a, log_b, chunk_size)


class MinRNNMixer(Mixer):
    """minGRU (cell="gru") or minLSTM (cell="lstm"): (B, T, D) -> (B, T, D)."""

    streamable = True

    def __init__(self, config: MinRNNConfig, cell: str) -> None:
        super().__init__()
        D = config.d_model
        E = config.expand * D
        self.cell, self.d_inner, self.chunk_size = cell, E, config.chunk_size
        n_in = 2 if cell == "gru" else 3
        self.in_proj = nn.Linear(D, n_in * E, bias=True)  # gru: [h̃, z]; lstm: [f, i, h̃]
        self.out_proj = nn.Linear(E, D, bias=False)
        self.impl = "reference"

    def _log_coeffs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> log a, log b (B, T, E) of h_t = a_t h_{t-1} + b_t."""
        if self.cell == "gru":
            h_pre, k = self.in_proj(x).chunk(2, dim=-1)
            log_z = F.logsigmoid(k)
            return log_z - k, log_z + log_g(h_pre)  # log(1 - z) = log σ(-k) = log z - k;  log z + log h̃
        f_pre, i_pre, h_pre = self.in_proj(x).chunk(3, dim=-1)
        d = F.logsigmoid(i_pre) - F.logsigmoid(f_pre)  # log i - log f
        log_f = F.logsigmoid(-d)  # log f' = -softplus(d)
        return log_f, log_f + d + log_g(h_pre)  # log i' = log f' + d;  log i' + log h̃

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        log_a, log_b = self._log_coeffs(x)
        return self.out_proj(log_space_scan(log_a, log_b, self.chunk_size))

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """h (B, E) = 0; max_len is irrelevant."""
        return torch.zeros(batch_size, self.d_inner, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, D) -> (y_t (B, D), h (B, E)): the paper's sequential recurrence."""
        if self.cell == "gru":
            h_pre, k = self.in_proj(x_t).chunk(2, dim=-1)
            z = torch.sigmoid(k)
            h = (1 - z) * h + z * g(h_pre)
        else:
            f_pre, i_pre, h_pre = self.in_proj(x_t).chunk(3, dim=-1)
            f, i = torch.sigmoid(f_pre), torch.sigmoid(i_pre)
            h = f / (f + i) * h + i / (f + i) * g(h_pre)
        return self.out_proj(h), h

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """h: E values per sequence, whatever seq_len."""
        return self.d_inner * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """The log-space scan per channel, counting each exp / log / softplus as one FLOP:
        gate logs and log g ~5 (minGRU) or ~8 (minLSTM), log b, the cumsum, log b - A, the
        logcumsumexp (~4), A + ·, exp, exp(A), the carry multiply-add (2): 13·E + 5·E = 18·E
        for minGRU, 21·E for minLSTM."""
        return (18.0 if self.cell == "gru" else 21.0) * self.d_inner


@register("mingru", MinGRUConfig)
class MinGRU(BackboneModel):
    """Pre-norm residual stack of minGRU layers (Feng et al. 2024)."""

    def __init__(self, config: MinGRUConfig) -> None:
        super().__init__(config, lambda layer_idx: MinRNNMixer(config, "gru"))


@register("minlstm", MinLSTMConfig)
class MinLSTM(BackboneModel):
    """Pre-norm residual stack of minLSTM layers (Feng et al. 2024)."""

    def __init__(self, config: MinLSTMConfig) -> None:
        super().__init__(config, lambda layer_idx: MinRNNMixer(config, "lstm"))
