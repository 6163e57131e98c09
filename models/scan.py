"""Shared pieces of the modern recurrent families (mamba2, linear_attention, xlstm, minrnn).

- `causal_conv` / `conv_step`: the short causal depthwise convolution of Mamba-2, DeltaNet and
  the mLSTM block, as a whole sequence and as one streaming step over a window of inputs.
- `pad_time`: zero-pads the time axis to a multiple of the chunk size (chunked forms only
  handle whole chunks; the padded tail comes after every real position, so it changes no
  output and is cropped).
- `chunked_decay_attention`: causal linear attention with a scalar decay per step and head,

      o_t = Σ_{s<=t} exp(a_{s+1} + … + a_t) (q_t · k_s) v_s,

  in the SSD / chunkwise-retention form: the chunk-local part as a masked (L, L) matrix
  (quadratic in the chunk length L), the rest through the state S (K, V) passed from chunk
  to chunk. Mamba-2 (q = C, k = B shared by a group of heads, v = Δx, a = ΔA) and RetNet
  (a = log γ) are both this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv: x (B, T, C), weight (C, 1, W) as in nn.Conv1d(groups=C) -> (B, T, C).

    y[t] = bias + Σ_j weight[:, 0, j] x[t - W + 1 + j]: the newest input meets the last tap.
    """
    T, W = x.shape[1], weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=W - 1, groups=x.shape[2])  # (B, C, T + W - 1)
    return y[..., :T].transpose(1, 2)


def conv_step(window: torch.Tensor, x_t: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of `causal_conv`: window (B, C, W) of the last W inputs, newest last; x_t (B, C).

    Returns (y_t (B, C), the shifted window)."""
    window = torch.cat([window[..., 1:], x_t.unsqueeze(-1)], dim=-1)  # (B, C, W)
    y = (window * weight.squeeze(1)).sum(-1)  # (B, C)
    return (y + bias if bias is not None else y), window


def pad_time(x: torch.Tensor, chunk_size: int, dim: int) -> torch.Tensor:
    """Zero-pad axis `dim` of x up to a multiple of chunk_size."""
    pad = -x.shape[dim] % chunk_size
    if pad == 0:
        return x
    widths = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, pad]
    return F.pad(x, widths)


def chunked_decay_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_a: torch.Tensor,
                            chunk_size: int) -> torch.Tensor:
    """o_t = Σ_{s<=t} exp(Σ_{s<j<=t} log_a_j) (q_t · k_s) v_s, chunk by chunk. Any T >= 1.

    q, k (B, G, T, K); v (B, H, T, V); log_a (B, H, T) or broadcastable, <= 0 -> o (B, H, T, V).
    G divides H: heads h·H/G … (h+1)·H/G - 1 share q and k (Mamba-2's groups of B and C; G = H
    for RetNet). Equivalently h_t = a_t h_{t-1} + k_t v_tᵀ (K, V) and o_t = h_tᵀ q_t, h_{-1} = 0.
    """
    Bsz, G, T, K = q.shape
    H, V, L = v.shape[1], v.shape[-1], chunk_size
    R = H // G  # heads per group
    log_a = log_a.expand(Bsz, H, T)
    q, k, v, log_a = (pad_time(t, L, dim=2) for t in (q, k, v, log_a))
    n = q.shape[2] // L
    q, k = q.view(Bsz, G, 1, n, L, K), k.view(Bsz, G, 1, n, L, K)
    v, log_a = v.view(Bsz, G, R, n, L, V), log_a.reshape(Bsz, G, R, n, L)

    # 1. within each chunk: the masked quadratic form (all chunks at once). The decays
    # exp(cum_t - cum_s) use chunk-local cumulative sums, as mamba_ssm's chunk_scan kernel does.
    cum = log_a.cumsum(-1)  # (B, G, R, n, L): Σ_{j<=t} log_a_j within the chunk
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=q.device))
    seg = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf"))  # (B, G, R, n, L, L)
    scores = (q @ k.transpose(-1, -2)) * torch.exp(seg)  # q kᵀ once per group, decays per head
    o = scores @ v  # (B, G, R, n, L, V)

    # 2. each chunk's own contribution to the state at its end: Σ_s exp(cum_L - cum_s) k_s v_sᵀ
    w_end = torch.exp(cum[..., -1:] - cum)  # (B, G, R, n, L)
    local = (k * w_end.unsqueeze(-1)).transpose(-1, -2) @ v  # (B, G, R, n, K, V)

    # 3. pass the state from chunk to chunk (a loop over T / L chunks, not over T steps)
    chunk_decay = torch.exp(cum[..., -1])  # (B, G, R, n)
    state = q.new_zeros(Bsz, G, R, K, V)
    entering = []
    for decay_c, local_c in zip(chunk_decay.unbind(3), local.unbind(3)):  # unbind: a linear backward
        entering.append(state)
        state = decay_c[..., None, None] * state + local_c
    prev = torch.stack(entering, dim=3)  # (B, G, R, n, K, V): the state before each chunk

    # 4. what the state before the chunk contributes at each position, decayed to it
    o = o + (q * torch.exp(cum).unsqueeze(-1)) @ prev  # (B, G, R, n, L, V)
    return o.reshape(Bsz, H, n * L, V)[:, :, :T]
