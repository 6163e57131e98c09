"""Mamba: the reference scan and block against naive loops written here, the mamba_simple
parameter layout, a second implementation (mambapy) on the same weights, and backends."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqbench import models
from seqbench.models.mamba import MambaBackendError, MambaMixer, mamba_ssm_available, selective_scan

LENGTHS = [1, 7, 33, 100]  # not multiples of any chunk size tried below (except 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def naive_scan(x, delta, A, Bm, Cm):
    """Sequential h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = <C_t, h_t>; one position at a time."""
    batch, T, E = x.shape
    h = torch.zeros(batch, E, A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(T):
        dA = torch.exp(delta[:, t, :, None] * A[None])  # (B, E, N)
        dBx = delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]  # (B, E, N)
        h = dA * h + dBx
        ys.append(torch.einsum("ben,bn->be", h, Cm[:, t]))
    return torch.stack(ys, dim=1)  # (B, T, E)


def naive_block(m: MambaMixer, u: torch.Tensor) -> torch.Tensor:
    """The Mamba block from the paper's equations, on m's parameters, with an explicit conv loop."""
    E, N, R, W = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    T = u.shape[1]
    xz = u @ m.in_proj.weight.T
    x, z = xz[..., :E], xz[..., E:]
    conv = torch.zeros_like(x)
    for t in range(T):  # causal depthwise conv: tap k looks k steps back (weight index W-1-k)
        for k in range(min(W, t + 1)):
            conv[:, t] = conv[:, t] + x[:, t - k] * m.conv1d.weight[:, 0, W - 1 - k]
    x = F.silu(conv + m.conv1d.bias)
    proj = x @ m.x_proj.weight.T
    dt, Bm, Cm = proj[..., :R], proj[..., R : R + N], proj[..., R + N :]
    delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    y = naive_scan(x, delta, -torch.exp(m.A_log), Bm, Cm) + x * m.D
    return (y * F.silu(z)) @ m.out_proj.weight.T


def random_scan_inputs(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batch, E, N = 2, 5, 3
    x = torch.randn(batch, T, E, generator=g, dtype=torch.float64)
    delta = F.softplus(torch.randn(batch, T, E, generator=g, dtype=torch.float64))
    A = -torch.exp(torch.randn(E, N, generator=g, dtype=torch.float64))
    Bm = torch.randn(batch, T, N, generator=g, dtype=torch.float64)
    Cm = torch.randn(batch, T, N, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, delta, A, Bm, Cm)]


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 16])
@pytest.mark.parametrize("T", LENGTHS)
def test_reference_scan_equals_naive_loop(T: int, chunk_size: int | None) -> None:
    inputs = random_scan_inputs(T)
    y = selective_scan(*inputs, chunk_size=chunk_size)
    y_ref = naive_scan(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, gy)
    grads_ref = torch.autograd.grad(y_ref, inputs, gy)
    for name, g, g_ref in zip(["x", "delta", "A", "B", "C"], grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"grad {name}: {m}")


def test_reference_scan_gradcheck() -> None:
    inputs = random_scan_inputs(6, seed=1)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk_size=4), inputs)


def count_graph_nodes(t: torch.Tensor) -> int:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        todo.extend(next_fn for next_fn, _ in fn.next_functions)
    return len(seen)


def test_autograd_graph_does_not_grow_with_length() -> None:
    """No per-step autograd nodes: backward is linear in T, not quadratic (x[:, t] under autograd)."""
    m = models.build("mamba", d_model=8, n_layers=1, backend="reference")
    sizes = [count_graph_nodes(m(torch.randint(0, 8, (1, T))).sum()) for T in (5, 50)]
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("T", [1, 3, 33])
def test_block_equals_naive_block_with_parameter_gradients(T: int) -> None:
    torch.manual_seed(0)
    m = MambaMixer(models.make("mamba", d_model=8, d_state=4, backend="reference")).double()
    u = torch.randn(2, T, 8, dtype=torch.float64, requires_grad=True)
    params = [u, *m.parameters()]
    out, ref = m(u), naive_block(m, u)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    for p, a, b in zip(["u", *dict(m.named_parameters())], torch.autograd.grad(out, params, g),
                       torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda msg, p=p: f"grad {p}: {msg}")


def test_parameter_layout_is_mamba_simple() -> None:
    """Names and shapes of mamba_ssm.modules.mamba_simple.Mamba(d_model=32) (defaults d_state=16,
    d_conv=4, expand=2, dt_rank='auto' = ceil(32/16) = 2, conv_bias=True, bias=False)."""
    D, E, N, R, W = 32, 64, 16, 2, 4
    expected = {
        "in_proj.weight": (2 * E, D),
        "conv1d.weight": (E, 1, W),
        "conv1d.bias": (E,),
        "x_proj.weight": (R + 2 * N, E),
        "dt_proj.weight": (E, R),
        "dt_proj.bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj.weight": (D, E),
    }
    m = MambaMixer(models.make("mamba", d_model=D))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    # initialisation as there: A = -(1..N) per channel, D = 1, softplus(dt bias) in [1e-3, 0.1]
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1.0, N + 1)).expand(E, N))
    torch.testing.assert_close(m.D, torch.ones(E))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= R**-0.5


def test_same_weights_as_mambapy_give_same_outputs() -> None:
    """A second implementation: mambapy's MambaBlock (pscan) loads our state_dict unchanged."""
    mambapy = pytest.importorskip("mambapy.mamba")
    torch.manual_seed(0)
    ours = MambaMixer(models.make("mamba", d_model=16, backend="reference"))
    theirs = mambapy.MambaBlock(mambapy.MambaConfig(d_model=16, n_layers=1))
    theirs.load_state_dict(ours.state_dict())
    u = torch.randn(2, 37, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(u), theirs(u), rtol=1e-4, atol=1e-5)


def test_explicit_mamba_ssm_backend_on_cpu_raises_with_install_hint() -> None:
    with pytest.raises(MambaBackendError, match=r"pip install 'seqbench\[mamba\]'|needs CUDA tensors"):
        m = models.build("mamba", d_model=8, backend="mamba_ssm")  # raises here when mamba_ssm is missing
        m(torch.randint(0, 8, (1, 4)))  # else here: CPU tensors
    if not mamba_ssm_available():
        with pytest.raises(MambaBackendError, match=r"pip install 'seqbench\[mamba\]'"):
            models.build("mamba", d_model=8, backend="mamba_ssm")


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_cpu_runs_reference(backend: str) -> None:
    m = models.build("mamba", d_model=8, backend=backend)
    assert m.impl == "reference"
    assert m(torch.randint(0, 8, (2, 5))).shape == (2, 5, 16)


def test_state_bytes_constant_in_length() -> None:
    m = models.build("mamba", d_model=8, d_state=4, d_conv=3, expand=2, n_layers=3)
    per_layer = (3 + 4) * 16 * 4  # (d_conv + N) * E fp32 values: conv window + SSM state
    assert m.state_bytes(1) == m.state_bytes(10_000) == 3 * per_layer
    assert m.state_bytes(7, batch_size=5) == 5 * 3 * per_layer


@pytest.mark.parametrize("T", [2, 9])  # shorter and longer than the conv window
def test_step_equals_forward_short_sequences(T: int) -> None:
    torch.manual_seed(0)
    m = models.build("mamba", d_model=8, d_conv=4, n_layers=2).double().eval()
    x = torch.randint(0, 16, (3, T))
    with torch.no_grad():
        full = m(x)
        state, steps = m.init_state(3, T), []
        for t in range(T):
            y, state = m.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-10, atol=1e-10)


def test_dt_rank_auto_and_config_errors() -> None:
    assert MambaMixer(models.make("mamba", d_model=40)).dt_rank == math.ceil(40 / 16)
    assert MambaMixer(models.make("mamba", d_model=40, dt_rank=7)).dt_rank == 7
    with pytest.raises(models.ConfigError, match="d_state"):
        models.build("mamba", d_state=0)
    with pytest.raises(models.ConfigError, match=r"'backend' must be one of .*did you mean 'mamba_ssm'"):
        models.build("mamba", backend="mamba-ssm")
