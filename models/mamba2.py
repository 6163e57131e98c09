"""Mamba-2: the SSD (state-space duality) block of Dao & Gu 2024, "Transformers are SSMs:
Generalized Models and Efficient Algorithms Through Structured State Space Duality"
(arXiv:2405.21060), Section 7 (the Mamba-2 block) and Listing 1 (the SSD chunked algorithm).

Per layer (D = d_model, E = expand * D, H = E / head_dim heads of P = head_dim channels,
N = d_state, G = n_groups sharing B and C):

    z, xBC, dt = in_proj(u).split(E, E + 2GN, H)          # order [z, x, B, C, dt] as in mamba_ssm
    x, B, C    = silu(causal depthwise conv1d(xBC)).split(E, GN, GN)
    Δ          = softplus(dt + dt_bias)                    # (B, T, H), one step size per head
    h_t        = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ         # (B, H, P, N), A = -exp(A_log) a scalar per head
    y_t        = h_t C_t + D x_t                           # (B, H, P)
    out        = out_proj(RMSNormGated(y, z))              # rmsnorm(y ⊙ silu(z)) · weight, per group

Unlike Mamba-1 the decay exp(Δ_t A) is one scalar per head, so the sequence map is a masked
(semiseparable) attention-like matrix M[t, s] = C_t·B_s exp(Σ_{s<j<=t} Δ_j A), and SSD
evaluates it chunk by chunk (models/scan.py chunked_decay_attention): a quadratic masked
matmul inside each chunk of length Q = chunk_size, plus the state (H, P, N) passed between
chunks. Lengths that are not a multiple of Q are zero-padded internally.

The parameter names and shapes are those of mamba_ssm.modules.mamba2.Mamba2 (in_proj, conv1d,
dt_bias, A_log, D, norm.weight, out_proj; rmsnorm=True, norm_before_gate=False, D_has_hdim=False,
d_ssm=None, bias=False, conv_bias=True), with its initialisation (dt log-uniform in
[1e-3, 0.1] stored as softplus⁻¹, A uniform in [1, 16]), so
`Mamba2(d_model, d_state, d_conv, expand=expand, headdim=head_dim, ngroups=n_groups,
chunk_size=chunk_size, use_mem_eff_path=False).load_state_dict(mixer.state_dict())` works.

Backends:
- "reference": pure PyTorch SSD (any device, any T).
- "mamba_ssm": mamba_ssm's Triton SSD kernel `mamba_chunk_scan_combined` (the
  use_mem_eff_path=False path of Mamba2.forward); conv and the gated norm stay in torch.
  `pip install 'seqbench[mamba]'`; needs CUDA.
"auto" takes mamba_ssm when it imports and the input is on CUDA, else reference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.config import NonNegFloat, PosInt
from seqbench.errors import ConfigError

from .base import BackboneModel, KernelBackendError, Mixer, ModelConfig, use_kernel
from .registry import register
from .scan import causal_conv, chunked_decay_attention, conv_step

INSTALL_HINT = "pip install 'seqbench[mamba]'  (mamba-ssm; its Triton kernels need a CUDA GPU)"


class Mamba2BackendError(KernelBackendError):
    """The requested Mamba-2 backend cannot run here (package missing or tensors not on CUDA)."""


@dataclass(frozen=True)
class Mamba2Config(ModelConfig):
    d_state: PosInt = 16  # N: state size per head channel (mamba_ssm's default is 128)
    d_conv: PosInt = 4  # width of the causal depthwise convolution over x, B, C
    expand: PosInt = 2  # E = expand * d_model inner channels
    head_dim: PosInt = 16  # P: channels per head; n_heads = E / head_dim (mamba_ssm: headdim=64)
    n_groups: PosInt = 1  # G: groups of heads sharing B and C (like grouped-query attention)
    chunk_size: PosInt = 32  # Q: SSD chunk length, CPU-tuned (mamba_ssm: 256); any T works (padded)
    backend: Literal["auto", "reference", "mamba_ssm"] = "auto"  # SSD kernel; see module docstring
    mlp_ratio: NonNegFloat = 0.0  # Mamba-2 blocks have no MLP (the gated SSM replaces it)

    def __post_init__(self) -> None:
        super().__post_init__()
        E = self.expand * self.d_model
        if E % self.head_dim != 0:
            raise ConfigError(
                f"expand * d_model = {self.expand} * {self.d_model} = {E} must be divisible by head_dim "
                f"({self.head_dim}); pick head_dim from {[p for p in range(1, min(E, 128) + 1) if E % p == 0]}"
            )
        n_heads = E // self.head_dim
        if n_heads % self.n_groups != 0:
            raise ConfigError(
                f"n_heads = expand * d_model / head_dim = {n_heads} must be divisible by n_groups "
                f"({self.n_groups}); pick n_groups from {[g for g in range(1, n_heads + 1) if n_heads % g == 0]}"
            )


# ----------------------------------------------------------------------------- mamba_ssm guard


@functools.lru_cache(maxsize=1)
def _ssd_kernel() -> tuple[Any, str]:
    """(mamba_chunk_scan_combined or None, the import error message)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except (ImportError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: CUDA or Triton missing
        return None, f"{type(exc).__name__}: {exc}"
    return mamba_chunk_scan_combined, ""


def mamba_ssm_ssd_available() -> bool:
    return _ssd_kernel()[0] is not None


# ----------------------------------------------------------------------------- pieces


class RMSNormGated(nn.Module):
    """mamba_ssm.ops.triton.layernorm_gated.RMSNorm with norm_before_gate=False:
    y = rmsnorm(x ⊙ silu(z)) · weight, the mean square taken over groups of group_size channels."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z (..., d) -> (..., d)."""
        x = x * F.silu(z)
        xg = x.unflatten(-1, (-1, self.group_size))  # (..., G, d / G)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        return xg.flatten(-2) * self.weight


def ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
        chunk_size: int) -> torch.Tensor:
    """SSD chunked scan (Listing 1): y_t = h_t C_t with h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ.

    x (B, T, H, P); dt = Δ (B, T, H), already softplus'ed; A (H,) negative; Bm, Cm (B, T, G, N)
    -> y (B, T, H, P), without the D skip. Any T >= 1 (padded to a multiple of chunk_size).
    """
    v = (x * dt.unsqueeze(-1)).transpose(1, 2)  # (B, H, T, P): Δ_t x_t
    log_a = (dt * A).transpose(1, 2)  # (B, H, T): Δ_t A <= 0
    # the heads of a group share B and C: q = C, k = B with G "heads"
    y = chunked_decay_attention(Cm.transpose(1, 2), Bm.transpose(1, 2), v, log_a, chunk_size)  # (B, H, T, P)
    return y.transpose(1, 2)


# ----------------------------------------------------------------------------- the mixer


class Mamba2Mixer(Mixer):
    """The Mamba-2 block (mamba_ssm.modules.mamba2.Mamba2 layout): (B, T, D) -> (B, T, D)."""

    streamable = True

    def __init__(self, config: Mamba2Config, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, A_init_range: tuple[float, float] = (1.0, 16.0)) -> None:
        super().__init__()
        D, N, G = config.d_model, config.d_state, config.n_groups
        E = config.expand * D
        H = E // config.head_dim
        self.d_inner, self.d_state, self.d_conv, self.n_groups = E, N, config.d_conv, G
        self.n_heads, self.head_dim, self.chunk_size = H, config.head_dim, config.chunk_size
        self.conv_dim = E + 2 * G * N
        self.backend = config.backend
        if self.backend == "mamba_ssm" and not mamba_ssm_ssd_available():
            raise Mamba2BackendError(
                f"mamba2 backend 'mamba_ssm' was requested but its SSD kernel does not import "
                f"({_ssd_kernel()[1]}); install it with {INSTALL_HINT}, or set backend='reference' "
                "(pure PyTorch, any device) or 'auto'"
            )

        self.in_proj = nn.Linear(D, 2 * E + 2 * G * N + H, bias=False)  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=config.d_conv, groups=self.conv_dim,
                                padding=config.d_conv - 1, bias=True)
        # Δ bias = softplus⁻¹(dt), dt log-uniform in [dt_min, dt_max]; A uniform in A_init_range, stored as log
        dt = torch.exp(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (H,)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(*A_init_range)))  # (H,)
        self.D = nn.Parameter(torch.ones(H))  # skip connection, one per head
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = RMSNormGated(E, group_size=E // G)
        self.out_proj = nn.Linear(E, D, bias=False)

    # -- backend choice

    def _use_mamba_ssm(self, device: torch.device) -> bool:
        return use_kernel("mamba2", self.backend, "mamba_ssm", device, mamba_ssm_ssd_available, Mamba2BackendError)

    @property
    def impl(self) -> str:
        """The SSD that forward runs for this module's current device: 'mamba_ssm' or 'reference'."""
        return "mamba_ssm" if self._use_mamba_ssm(self.A_log.device) else "reference"

    def _A(self) -> torch.Tensor:
        """A = -exp(A_log), (H,), in at least fp32 (as Mamba2 keeps it)."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        E = self.d_inner
        return zxbcdt.split([E, self.conv_dim, self.n_heads], dim=-1)  # z, xBC, dt

    # -- forward

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, T, D) -> (B, T, D)."""
        Bsz, T, _ = u.shape
        E, G, N, H, P = self.d_inner, self.n_groups, self.d_state, self.n_heads, self.head_dim
        z, xBC, dt = self._split(self.in_proj(u))  # (B, T, E), (B, T, E + 2GN), (B, T, H)
        xBC = F.silu(causal_conv(xBC, self.conv1d.weight, self.conv1d.bias))
        x, Bm, Cm = xBC.split([E, G * N, G * N], dim=-1)
        x = x.view(Bsz, T, H, P)  # (B, T, H, P)
        Bm, Cm = Bm.view(Bsz, T, G, N), Cm.view(Bsz, T, G, N)  # (B, T, G, N)
        if self._use_mamba_ssm(u.device):
            kernel = _ssd_kernel()[0]
            y = kernel(x, dt, self._A(), Bm, Cm, chunk_size=self.chunk_size, D=self.D, z=None,
                       dt_bias=self.dt_bias, dt_softplus=True)  # (B, T, H, P), D skip included
        else:
            delta = F.softplus(dt + self.dt_bias)  # (B, T, H)
            y = ssd(x, delta, self._A().to(x.dtype), Bm, Cm, self.chunk_size) + x * self.D.view(H, 1)
        y = self.norm(y.reshape(Bsz, T, E), z)
        return self.out_proj(y)

    # -- streaming: conv window + SSM state, constant in T

    def init_state(self, batch_size: int, max_len: int, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv_state (B, E + 2GN, d_conv), ssm_state (B, H, P, N)), zeros; max_len is irrelevant."""
        conv_state = torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch_size, self.n_heads, self.head_dim, self.d_state, device=device, dtype=dtype)
        return conv_state, ssm_state

    def step(self, u_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """u_t (B, D) -> (y_t (B, D), (conv_state, ssm_state)): the recurrence, one position."""
        conv_state, ssm_state = state
        Bsz = u_t.shape[0]
        E, G, N, H, P = self.d_inner, self.n_groups, self.d_state, self.n_heads, self.head_dim
        z, xBC, dt = self._split(self.in_proj(u_t))
        xBC, conv_state = conv_step(conv_state, xBC, self.conv1d.weight, self.conv1d.bias)
        x, Bm, Cm = F.silu(xBC).split([E, G * N, G * N], dim=-1)
        x = x.view(Bsz, H, P)  # (B, H, P)
        Bm = Bm.view(Bsz, G, N).repeat_interleave(H // G, dim=1)  # (B, H, N)
        Cm = Cm.view(Bsz, G, N).repeat_interleave(H // G, dim=1)  # (B, H, N)
        delta = F.softplus(dt + self.dt_bias)  # (B, H)
        dA = torch.exp(delta * self._A().to(x.dtype))  # (B, H)
        ssm_state = dA[..., None, None] * ssm_state + (delta.unsqueeze(-1) * x).unsqueeze(-1) * Bm.unsqueeze(2)
        y = (ssm_state @ Cm.unsqueeze(-1)).squeeze(-1) + self.D.view(H, 1) * x  # (B, H, P)
        y = self.norm(y.reshape(Bsz, E), z)
        return self.out_proj(y), (conv_state, ssm_state)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """conv window (E + 2GN) * d_conv + SSM state H * P * N = E * N values per sequence, whatever seq_len."""
        return (self.conv_dim * self.d_conv + self.n_heads * self.head_dim * self.d_state) * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """SSD per token, with Q = min(chunk_size, seq_len), E = H·P channels, G groups of B, C:
        intra-chunk scores C·B over the Q positions of the chunk, 2·G·N·Q (once per group),
        their decay mask H·Q and the weighted sum of Δx, 2·E·Q; the chunk state contribution
        B ⊗ Δx, 2·E·N; the readout C · state, 2·E·N; the state passed between chunks,
        2·E·N / Q; Δx, D skip, gate and norm ~6·E. Total
        2·G·N·Q + H·Q + 2·E·Q + 4·E·N + 2·E·N/Q + 6·E (conv1d is counted with the matmuls)."""
        E, N, H, G = self.d_inner, self.d_state, self.n_heads, self.n_groups
        Q = min(self.chunk_size, max(1, seq_len))
        return 2.0 * G * N * Q + H * Q + 2.0 * E * Q + 4.0 * E * N + 2.0 * E * N / Q + 6.0 * E


@register("mamba2", Mamba2Config)
class Mamba2(BackboneModel):
    """Pre-norm residual stack of Mamba-2 blocks (Dao & Gu 2024)."""

    def __init__(self, config: Mamba2Config) -> None:
        super().__init__(config, lambda layer_idx: Mamba2Mixer(config))
