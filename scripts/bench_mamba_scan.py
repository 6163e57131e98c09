"""Forward+backward time of one Mamba block on CPU, three ways, on the same weights:

  ours     models.mamba.MambaMixer, backend "reference" (chunked scan, custom autograd)
  mambapy  mambapy.mamba.MambaBlock (Blelloch parallel scan, pscan=True): it has the
           mamba_simple parameter layout too, so it loads our state_dict unchanged
  naive    mamba-ssm's selective_scan_ref algorithm (exp(ΔA) and ΔBu materialised as
           (B, E, T, N), then a Python loop over t indexing [:, :, t] under autograd),
           written here as a per-step loop, inside the same block

Outputs and input gradients of mambapy and naive are checked against ours first (no time
is reported for a path that fails the check). Times are wall-clock medians over --repeats
timed runs after one warm-up run; the naive loop gets one timed run at long lengths and is
skipped where its quadratic backward would take longer than --naive-budget-s.

    python scripts/bench_mamba_scan.py                 # B=8, d_model=128, d_state=16, T=256,1024,4096
    python scripts/bench_mamba_scan.py --threads 1 --lengths 256 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from seqbench import models
from seqbench.models.mamba import SCAN_CHUNK_ELEMS, MambaMixer


def naive_block(m: MambaMixer, u: torch.Tensor) -> torch.Tensor:
    """The Mamba block on m's weights with selective_scan_ref's per-step loop. u (B, T, D) -> (B, T, D)."""
    T = u.shape[1]
    xz = m.in_proj(u).transpose(1, 2)  # (B, 2E, T)
    x, z = xz.chunk(2, dim=1)  # (B, E, T)
    x = F.silu(m.conv1d(x)[..., :T])
    dt, Bm, Cm = m.x_proj(x.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(m.dt_proj(dt)).transpose(1, 2)  # (B, E, T)
    A = -torch.exp(m.A_log)  # (E, N)
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (B, E, T, N)
    delta_B_u = torch.einsum("bdl,bln,bdl->bdln", delta, Bm, x)  # (B, E, T, N)
    h = u.new_zeros(u.shape[0], m.d_inner, m.d_state)  # (B, E, N)
    ys = []
    for i in range(T):
        h = delta_A[:, :, i] * h + delta_B_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, Cm[:, i]))
    y = torch.stack(ys, dim=2) + x * m.D[:, None]  # (B, E, T)
    y = y * F.silu(z)
    return m.out_proj(y.transpose(1, 2))


def mambapy_block(ours: MambaMixer, d_model: int, d_state: int) -> torch.nn.Module | None:
    """mambapy's MambaBlock with our weights (same names and shapes), or None when not installed."""
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        print("mambapy is not installed (pip install mambapy): skipping it")
        return None
    theirs = MambaBlock(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state))
    theirs.load_state_dict(ours.state_dict())
    return theirs


def fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, gy: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One forward+backward: (seconds, output, grad of u)."""
    u = u.detach().requires_grad_()
    t0 = time.perf_counter()
    y = fn(u)
    y.backward(gy)
    return time.perf_counter() - t0, y.detach(), u.grad


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path (after one warm-up)")
    p.add_argument("--naive-budget-s", type=float, default=300.0, help="skip naive where it would take longer")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--paths", nargs="+", choices=["naive", "mambapy"], default=["naive", "mambapy"],
                   help="paths to compare with ours")
    p.add_argument("--tol", type=float, default=1e-4, help="max relative error against ours")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = MambaMixer(models.make("mamba", d_model=args.d_model, d_state=args.d_state, backend="reference"))
    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"ours": ours}
    if "naive" in args.paths:
        paths["naive"] = lambda u: naive_block(ours, u)
    if "mambapy" in args.paths:
        theirs = mambapy_block(ours, args.d_model, args.d_state)
        if theirs is not None:
            paths["mambapy"] = theirs

    B, D, E, N = args.batch_size, args.d_model, ours.d_inner, args.d_state
    print(f"Mamba block forward+backward, B={B} d_model={D} d_inner={E} d_state={N}, fp32, CPU")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
          f"ours: chunk {max(1, min(64, SCAN_CHUNK_ELEMS // (B * E * N)))} steps")
    print(f"{'T':>6} {'path':>8} {'median s':>9} {'min s':>8} {'runs':>4} {'rel err':>8} {'ours faster':>11}")
    naive_last: tuple[int, float] | None = None
    for T in args.lengths:
        u, gy = torch.randn(B, T, D), torch.randn(B, T, D)
        results: dict[str, tuple[list[float], float]] = {}
        ref = None
        for name, fn in paths.items():
            repeats = args.repeats
            if name == "naive" and naive_last is not None:
                estimate = naive_last[1] * (T / naive_last[0]) ** 2  # its backward is quadratic
                if estimate > args.naive_budget_s:
                    print(f"{T:>6} {name:>8}  skipped: one run would take ~{estimate:.0f} s (--naive-budget-s)")
                    continue
                if estimate > 10:
                    repeats = 0  # the checked run is the one timed run
            t_first, y, gu = fwd_bwd(fn, u, gy)
            if ref is None:
                ref, err = (y, gu), 0.0
            else:
                err = max(rel_err(y, ref[0]), rel_err(gu, ref[1]))
            times = [fwd_bwd(fn, u, gy)[0] for _ in range(repeats)] or [t_first]
            if name == "naive":
                naive_last = (T, statistics.median(times))
            if err > args.tol:
                print(f"{T:>6} {name:>8}  FAILED check: relative error {err:.2e} > {args.tol:g} (no time reported)")
                continue
            results[name] = (times, err)
        t_ours = statistics.median(results["ours"][0])
        for name, (times, err) in results.items():
            med = statistics.median(times)
            speedup = "" if name == "ours" else f"{med / t_ours:.1f}x"
            print(f"{T:>6} {name:>8} {med:>9.3f} {min(times):>8.3f} {len(times):>4} {err:>8.1e} {speedup:>11}")


if __name__ == "__main__":
    main()
