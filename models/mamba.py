"""Mamba: the selective state-space block of Gu & Dao 2023, "Mamba: Linear-Time
Sequence Modeling with Selective State Spaces" (arXiv:2312.00752), Algorithm 2.

Per layer (D = d_model, E = D_inner = expand * D, N = d_state, R = dt_rank):

    x, z   = in_proj(u).chunk(2)                       # (B, T, E) each
    x      = silu(causal depthwise conv1d(x))          # width d_conv
    Δ, B, C = x_proj(x).split(R, N, N);  Δ = softplus(dt_proj(Δ))
    h_t    = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t        # (B, E, N), A = -exp(A_log)
    y_t    = C_t · h_t + D ⊙ x_t;   out = out_proj(y ⊙ silu(z))

The parameter names and shapes are those of mamba_ssm.modules.mamba_simple.Mamba
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), with its initialisation
(Δ bias = softplus⁻¹ of a log-uniform dt in [1e-3, 0.1], A = 1..N per channel), so
one state_dict loads into both.

Two backends compute the same function:
- "reference": pure PyTorch, runs anywhere. Its selective scan is a custom
  autograd.Function that walks time-major chunks: per chunk it materialises
  exp(ΔA) and ΔBx as (L, B, E, N), runs the recurrence with one fused
  `addcmul_` per step, contracts with C, and keeps only the state at chunk starts;
  backward recomputes each chunk and runs the adjoint recurrence in reverse.
  Memory is O(T/L · B·E·N) instead of the O(T · B·E·N) of autograd through a loop
  or a parallel scan, and backward is linear in T (indexing x[:, t] in a Python
  loop under autograd makes it quadratic).
- "mamba_ssm": the official CUDA kernels (selective_scan_fn / mamba_inner_fn,
  causal_conv1d), imported under a guard; `pip install 'seqbench[mamba]'`.
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
from torch.autograd.function import once_differentiable

from seqbench.config import NonNegFloat, PosInt
from seqbench.models.base import BackboneModel, KernelBackendError, Mixer, ModelConfig, use_kernel
from seqbench.models.registry import register

INSTALL_HINT = "pip install 'seqbench[mamba]'  (mamba-ssm and causal-conv1d; needs a CUDA GPU)"
# The reference scan works on time chunks of about this many (B, E, N) elements per buffer, so a
# chunk's buffers stay in L2 cache: 2**18 fp32 = 1 MiB, i.e. 8 steps at B=8, E=256, N=16. Measured
# there (scan forward+backward, T=1024, 1 thread, CPU seconds on the 2-core Xeon): 8 steps 0.24,
# 4: 0.25, 16: 0.25, 32: 0.29, 64: 0.42, 128: 0.49; a two-level scan (local scans of all
# chunks at once, then cumulative decay products across chunks; O(T·B·E·N) buffers) took 1.05.
SCAN_CHUNK_ELEMS = 2**18


class MambaBackendError(KernelBackendError):
    """The requested mamba backend cannot run here (package missing or tensors not on CUDA)."""


@dataclass(frozen=True)
class MambaConfig(ModelConfig):
    d_state: PosInt = 16  # N: SSM state size per inner channel
    d_conv: PosInt = 4  # width of the causal depthwise convolution
    expand: PosInt = 2  # D_inner = expand * d_model
    dt_rank: PosInt | None = None  # R: rank of the Δ projection; None = ceil(d_model / 16) ("auto")
    backend: Literal["auto", "reference", "mamba_ssm"] = "auto"  # scan kernel; see module docstring
    mlp_ratio: NonNegFloat = 0.0  # Mamba blocks have no MLP (the gated SSM replaces it)


# ----------------------------------------------------------------------------- mamba_ssm guard


@functools.lru_cache(maxsize=1)
def _mamba_ssm_kernels() -> tuple[dict[str, Any] | None, str]:
    """({name: fn} of the official kernels, or None, and the import error message)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except (ImportError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: CUDA libs missing
        return None, f"{type(exc).__name__}: {exc}"
    kernels: dict[str, Any] = {"selective_scan_fn": selective_scan_fn, "mamba_inner_fn": mamba_inner_fn}
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError, RuntimeError):
        causal_conv1d_fn = None  # mamba_ssm works without it (nn.Conv1d instead)
    kernels["causal_conv1d_fn"] = causal_conv1d_fn
    return kernels, ""


def mamba_ssm_available() -> bool:
    return _mamba_ssm_kernels()[0] is not None


# ----------------------------------------------------------------------------- reference scan


def _discretize(delta: torch.Tensor, x: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-major chunk: delta, x (L, B, E), A (E, N), Bm (L, B, N) -> exp(ΔA), ΔBx, each (L, B, E, N)."""
    dA = torch.exp(delta.unsqueeze(-1) * A)  # (L, B, E, N)
    dBx = (delta * x).unsqueeze(-1) * Bm.unsqueeze(2)  # (L, B, E, N)
    return dA, dBx


def _scan_chunk_(dA: torch.Tensor, dBx: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """In place: dBx[i] <- h_i = dA[i] * h_{i-1} + dBx[i], with h_{-1} = h0 (B, E, N). Returns dBx."""
    dBx[0].addcmul_(dA[0], h0)
    for i in range(1, dA.shape[0]):
        dBx[i].addcmul_(dA[i], dBx[i - 1])  # unbound slices of a no-grad buffer: O(1) per step
    return dBx


class SelectiveScan(torch.autograd.Function):
    """y_t = C_t · h_t, h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, h_{-1} = 0, in chunks of time steps.

    Saves the inputs and the state at every chunk start; backward recomputes a chunk's
    states and runs the adjoint g_t = C_t ⊗ gy_t + exp(Δ_{t+1} A) g_{t+1} backwards in time.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor,
                Cm: torch.Tensor, chunk_size: int) -> torch.Tensor:
        xs, ds = x.transpose(0, 1).contiguous(), delta.transpose(0, 1).contiguous()  # (T, B, E)
        Bs, Cs = Bm.transpose(0, 1).contiguous(), Cm.transpose(0, 1).contiguous()  # (T, B, N)
        T, batch, E = xs.shape
        h = xs.new_zeros(batch, E, A.shape[1])  # (B, E, N)
        starts = range(0, T, chunk_size)
        h0s = xs.new_empty(len(starts), batch, E, A.shape[1])  # state entering each chunk
        ys = xs.new_empty(T, batch, E)
        for c, t0 in enumerate(starts):
            sl = slice(t0, t0 + chunk_size)
            h0s[c] = h
            dA, hs = _discretize(ds[sl], xs[sl], A, Bs[sl])
            hs = _scan_chunk_(dA, hs, h)  # (L, B, E, N)
            torch.matmul(hs, Cs[sl].unsqueeze(-1), out=ys[sl].unsqueeze(-1))  # (L, B, E, 1)
            h = hs[-1]
        ctx.save_for_backward(xs, ds, A, Bs, Cs, h0s)
        ctx.chunk_size = chunk_size
        return ys.transpose(0, 1)  # (B, T, E)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xs, ds, A, Bs, Cs, h0s = ctx.saved_tensors
        L = ctx.chunk_size
        gys = gy.transpose(0, 1).contiguous()  # (T, B, E)
        T = xs.shape[0]
        gx, gd = torch.empty_like(xs), torch.empty_like(ds)
        gB, gC = torch.empty_like(Bs), torch.empty_like(Cs)
        gA = torch.zeros_like(A)
        carry = torch.zeros_like(h0s[0])  # exp(Δ_{t1} A) g_{t1}: adjoint flowing in from the next chunk
        for c in reversed(range(h0s.shape[0])):
            sl = slice(c * L, min(T, (c + 1) * L))
            x, d, Bm, Cm, g_y = xs[sl], ds[sl], Bs[sl], Cs[sl], gys[sl]
            dA, hs = _discretize(d, x, A, Bm)
            hs = _scan_chunk_(dA, hs, h0s[c])  # recomputed states (L, B, E, N)
            gC[sl] = (g_y.unsqueeze(-2) @ hs).squeeze(-2)  # (L, B, 1, E) @ (L, B, E, N) -> (L, B, N)
            g = g_y.unsqueeze(-1) * Cm.unsqueeze(-2)  # dy/dh: (L, B, E, N)
            g[-1] += carry
            for i in range(g.shape[0] - 2, -1, -1):
                g[i].addcmul_(dA[i + 1], g[i + 1])  # adjoint recurrence, backwards in time
            carry = dA[0] * g[0]
            # dL/d(ΔA) = g_t * h_{t-1} * exp(Δ_t A), reusing the dA buffer
            gdA = dA.mul_(g)
            gdA[1:].mul_(hs[:-1])
            gdA[0].mul_(h0s[c])
            gA += (gdA * d.unsqueeze(-1)).sum((0, 1))
            gdx = (g @ Bm.unsqueeze(-1)).squeeze(-1)  # dL/d(Δx): (L, B, E)
            gB[sl] = (g.transpose(-1, -2) @ (d * x).unsqueeze(-1)).squeeze(-1)  # (L, B, N)
            gd[sl] = (gdA * A).sum(-1) + gdx * x
            gx[sl] = gdx * d
        return gx.transpose(0, 1), gd.transpose(0, 1), gA, gB.transpose(0, 1), gC.transpose(0, 1), None


def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   chunk_size: int | None = None) -> torch.Tensor:
    """Reference selective scan, y_t = C_t · h_t with h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t.

    x, delta: (B, T, E); A: (E, N); Bm, Cm: (B, T, N) -> y (B, T, E). Any T >= 1.
    chunk_size: time steps per chunk; None sizes chunks to SCAN_CHUNK_ELEMS.
    """
    if chunk_size is None:
        chunk_size = max(1, min(64, SCAN_CHUNK_ELEMS // (x.shape[0] * x.shape[2] * A.shape[1])))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return SelectiveScan.apply(x, delta, A, Bm, Cm, chunk_size)


# ----------------------------------------------------------------------------- the mixer


class MambaMixer(Mixer):
    """The Mamba block (mamba_simple.Mamba layout): (B, T, D) -> (B, T, D)."""

    streamable = True

    def __init__(self, config: MambaConfig, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        D, N = config.d_model, config.d_state
        E = config.expand * D
        R = config.dt_rank if config.dt_rank is not None else math.ceil(D / 16)
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = E, N, config.d_conv, R
        self.backend = config.backend
        if self.backend == "mamba_ssm" and not mamba_ssm_available():
            raise MambaBackendError(
                f"mamba backend 'mamba_ssm' was requested but does not import "
                f"({_mamba_ssm_kernels()[1]}); install it with {INSTALL_HINT}, or set backend='reference' "
                "(pure PyTorch, any device) or 'auto'"
            )

        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, kernel_size=config.d_conv, groups=E, padding=config.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, D, bias=False)

        # Δ projection: weights uniform in ±R^-1/2; bias = softplus⁻¹(dt), dt log-uniform in [dt_min, dt_max]
        nn.init.uniform_(self.dt_proj.weight, -R**-0.5, R**-0.5)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        # S4D-real: A[e, n] = -(n + 1), stored as its log, kept in fp32
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))  # skip connection
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    # -- backend choice

    def _use_mamba_ssm(self, device: torch.device) -> bool:
        return use_kernel("mamba", self.backend, "mamba_ssm", device, mamba_ssm_available, MambaBackendError)

    @property
    def impl(self) -> str:
        """The scan that forward runs for this module's current device: 'mamba_ssm' or 'reference'."""
        return "mamba_ssm" if self._use_mamba_ssm(self.A_log.device) else "reference"

    def _A(self) -> torch.Tensor:
        """A = -exp(A_log), (E, N), in at least fp32 (as mamba_simple keeps it)."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    # -- forward

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, T, D) -> (B, T, D)."""
        if self._use_mamba_ssm(u.device):
            return self._forward_mamba_ssm(u)
        return self._forward_reference(u)

    def _forward_reference(self, u: torch.Tensor) -> torch.Tensor:
        T = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, T, E) each
        x = self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)  # causal: drop the right padding
        x = F.silu(x)
        dt, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, T, E)
        y = selective_scan(x, delta, self._A().to(x.dtype), Bm, Cm)  # (B, T, E)
        y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y)

    def _forward_mamba_ssm(self, u: torch.Tensor) -> torch.Tensor:
        kernels = _mamba_ssm_kernels()[0]
        T = u.shape[1]
        xz = self.in_proj(u).transpose(1, 2).contiguous()  # (B, 2E, T), the kernels' layout
        A = self._A()  # (E, N)
        if kernels["causal_conv1d_fn"] is not None:  # the fused path of mamba_simple
            return kernels["mamba_inner_fn"](
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            )
        x, z = xz.chunk(2, dim=1)  # (B, E, T)
        x = F.silu(self.conv1d(x)[..., :T])
        dt, Bm, Cm = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, E, T), bias added in the kernel
        y = kernels["selective_scan_fn"](
            x, dt, A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(), self.D.float(),
            z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
        )  # (B, E, T)
        return self.out_proj(y.transpose(1, 2))

    # -- streaming: conv window + SSM state, constant in T

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv_state (B, E, d_conv), ssm_state (B, E, N)), zeros; max_len is irrelevant."""
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype)
        return conv_state, ssm_state

    def step(self, u_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """u_t (B, D) -> (y_t (B, D), (conv_state, ssm_state))."""
        conv_state, ssm_state = state
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (B, E) each
        conv_state = torch.cat([conv_state[..., 1:], x.unsqueeze(-1)], dim=-1)  # (B, E, W), newest last
        x = F.silu((conv_state * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias)  # (B, E)
        dt, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, E)
        A = self._A().to(x.dtype)  # (E, N)
        ssm_state = torch.exp(delta.unsqueeze(-1) * A) * ssm_state + (delta * x).unsqueeze(-1) * Bm.unsqueeze(1)
        y = (ssm_state @ Cm.unsqueeze(-1)).squeeze(-1) + self.D * x  # (B, E)
        return self.out_proj(y * F.silu(z)), (conv_state, ssm_state)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        """conv window + SSM state: (d_conv + N) * E elements per sequence, whatever seq_len."""
        return (self.d_conv + self.d_state) * self.d_inner * batch_size * bytes_per_elem

    def extra_flops_per_token(self, seq_len: int) -> float:
        """The scan, per token: exp(ΔA), ΔBx (1 mul; Δx is per channel), h update (2), C·h (2):
        5 FLOPs per (E, N) element (exp counted as one) plus Δx, D-skip, SiLU gate: ~6 per channel.
        matmul_params already counts A_log (E, N) as a 2·E·N matmul, so that is subtracted.
        (conv1d's weight is counted there too: 2·E·d_conv, which is right.)"""
        E, N = self.d_inner, self.d_state
        return 5.0 * E * N + 6.0 * E - 2.0 * E * N


@register("mamba", MambaConfig)
class Mamba(BackboneModel):
    """Pre-norm residual stack of Mamba blocks (Gu & Dao 2023)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__(config, lambda layer_idx: MambaMixer(config))
