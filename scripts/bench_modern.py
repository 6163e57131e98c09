"""Speed of the modern recurrent families on CPU, measured in one run, side by side:

1. chunked vs naive: forward+backward of each family's time-mixing core (from the projected
   inputs on) in its chunked / log-space form, against a naive per-step loop of the same
   recurrence under autograd (inputs unbound once, so the loop's backward stays linear in T),
   at T = 1024 and 4096 with the shapes of the family's default config at d_model = 64.
   The naive output is checked against the chunked one first (no time is reported for a
   path that fails); sLSTM has no parallel form, so only its loop is timed.
2. training tokens/s of every new family beside lstm / transformer / mamba at one common
   small config (AdamW steps on random tokens; forward + backward + optimizer step).

Times are wall-clock medians over --repeats runs after a warm-up run (one run for a naive
loop at T >= 4096). Run it alone on the machine, one thread, under the timing lock:

    flock /tmp/seqbench-timing.lock python scripts/bench_modern.py
    flock /tmp/seqbench-timing.lock python scripts/bench_modern.py --lengths 1024 --train-steps 5
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from seqbench import models
from seqbench.models import linear_attention as la  # noqa: F401  (registers the new families)
from seqbench.models import mamba2, minrnn, xlstm  # noqa: F401
from seqbench.models.linear_attention import chunked_delta_rule, chunked_gla
from seqbench.models.mamba2 import ssd
from seqbench.models.minrnn import log_g, log_space_scan
from seqbench.models.scan import chunked_decay_attention
from seqbench.models.xlstm import mlstm_chunkwise

Inputs = list[torch.Tensor]


# ----------------------------------------------------------------------------- naive loops


def naive_ssd(x, dt, A, Bm, Cm):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ, y_t = h_t C_t. x (B, T, H, P), dt (B, T, H), Bm, Cm (B, T, 1, N)."""
    h = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], Bm.shape[-1])
    ys = []
    for x_t, d_t, b_t, c_t in zip(x.unbind(1), dt.unbind(1), Bm.unbind(1), Cm.unbind(1)):
        h = torch.exp(d_t * A)[..., None, None] * h + (d_t[..., None] * x_t).unsqueeze(-1) * b_t.unsqueeze(1)
        ys.append((h @ c_t.unsqueeze(-1)).squeeze(-1))  # (B, H, P)
    return torch.stack(ys, 1)


def naive_mingru(pre):
    """pre (B, T, 2E) = [h̃, z] pre-activations -> h (B, T, E), h_t = (1 - z) h_{t-1} + z g(h̃)."""
    h_pre, k = pre.chunk(2, dim=-1)
    z, h_tilde = torch.sigmoid(k), minrnn.g(h_pre)
    h = pre.new_zeros(pre.shape[0], pre.shape[2] // 2)
    hs = []
    for z_t, ht_t in zip(z.unbind(1), h_tilde.unbind(1)):
        h = (1 - z_t) * h + z_t * ht_t
        hs.append(h)
    return torch.stack(hs, 1)


def chunked_mingru(pre, chunk_size):
    h_pre, k = pre.chunk(2, dim=-1)
    log_z = F.logsigmoid(k)
    return log_space_scan(log_z - k, log_z + log_g(h_pre), chunk_size)


def naive_minlstm(pre):
    """pre (B, T, 3E) = [f, i, h̃] -> h, h_t = f/(f+i) h_{t-1} + i/(f+i) g(h̃)."""
    f_pre, i_pre, h_pre = pre.chunk(3, dim=-1)
    f, i, h_tilde = torch.sigmoid(f_pre), torch.sigmoid(i_pre), minrnn.g(h_pre)
    h = pre.new_zeros(pre.shape[0], pre.shape[2] // 3)
    hs = []
    for f_t, i_t, ht_t in zip(f.unbind(1), i.unbind(1), h_tilde.unbind(1)):
        h = f_t / (f_t + i_t) * h + i_t / (f_t + i_t) * ht_t
        hs.append(h)
    return torch.stack(hs, 1)


def chunked_minlstm(pre, chunk_size):
    f_pre, i_pre, h_pre = pre.chunk(3, dim=-1)
    d = F.logsigmoid(i_pre) - F.logsigmoid(f_pre)
    log_f = F.logsigmoid(-d)
    return log_space_scan(log_f, log_f + d + log_g(h_pre), chunk_size)


def naive_mlstm(q, k, v, i_pre, log_f):
    """The stabilised mLSTM recurrence. q, k, v (B, H, T, d), gates (B, H, T)."""
    Bsz, H, _, d = q.shape
    C, n, m = q.new_zeros(Bsz, H, d, d), q.new_zeros(Bsz, H, d), q.new_zeros(Bsz, H)
    hs = []
    for q_t, k_t, v_t, i_t, lf_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), i_pre.unbind(2), log_f.unbind(2)):
        m_new = torch.maximum(lf_t + m, i_t)
        f, i = torch.exp(lf_t + m - m_new), torch.exp(i_t - m_new)
        C = f[..., None, None] * C + i[..., None, None] * k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        n = f[..., None] * n + i[..., None] * k_t
        den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m_new))
        hs.append((q_t.unsqueeze(-2) @ C).squeeze(-2) / (den + xlstm.EPS).unsqueeze(-1))
        m = m_new
    return torch.stack(hs, 2)


def naive_decay(q, k, v, log_a):
    """S_t = a_t S_{t-1} + k_t v_tᵀ (a scalar per head, or per key channel when log_a is (B, H, T, K)), o_t = S_tᵀ q_t."""
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    per_channel = log_a.dim() == 4
    os_ = []
    for t, (q_t, k_t, v_t) in enumerate(zip(q.unbind(2), k.unbind(2), v.unbind(2))):
        a = torch.exp(log_a[:, :, t]).unsqueeze(-1) if per_channel else torch.exp(log_a[..., t])[..., None, None]
        S = a * S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        os_.append((q_t.unsqueeze(-2) @ S).squeeze(-2))
    return torch.stack(os_, 2)


def naive_delta(q, k, v, beta):
    """S_t = (I - β k kᵀ) S_{t-1} + β k vᵀ, o_t = S_tᵀ q_t."""
    S = q.new_zeros(q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    os_ = []
    for q_t, k_t, v_t, b_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2)):
        v_old = (k_t.unsqueeze(-2) @ S).squeeze(-2)
        S = S + k_t.unsqueeze(-1) * (b_t.unsqueeze(-1) * (v_t - v_old)).unsqueeze(-2)
        os_.append((q_t.unsqueeze(-2) @ S).squeeze(-2))
    return torch.stack(os_, 2)


def slstm_loop(m: xlstm.SLSTMMixer, x: torch.Tensor) -> torch.Tensor:
    return m(x)


# ----------------------------------------------------------------------------- inputs per family


def make_cases(batch: int, T: int, g: torch.Generator) -> dict[str, tuple[Callable, Callable | None, Inputs]]:
    """family -> (chunked fn, naive fn, inputs): shapes and chunk sizes of each default config at d_model = 64."""
    rn = lambda *s: torch.randn(*s, generator=g)
    D = 64
    chunk = {f: models.make(f, d_model=D).chunk_size for f in ("mamba2", "mingru", "minlstm", "xlstm", "linear_attention")}
    cases: dict[str, tuple[Callable, Callable | None, Inputs]] = {}
    # mamba2: E = 128, head_dim 16 -> H = 8, P = 16, N = 16, G = 1
    H, P, N = 8, 16, 16
    A = -torch.exp(rn(H))
    cases["mamba2"] = (lambda x, dt, B_, C_: ssd(x, dt, A, B_, C_, chunk["mamba2"]),
                       lambda x, dt, B_, C_: naive_ssd(x, dt, A, B_, C_),
                       [rn(batch, T, H, P), F.softplus(rn(batch, T, H) - 2), rn(batch, T, 1, N), rn(batch, T, 1, N)])
    # mingru / minlstm: E = d_model = 64
    cases["mingru"] = (lambda p: chunked_mingru(p, chunk["mingru"]), naive_mingru, [rn(batch, T, 2 * D)])
    cases["minlstm"] = (lambda p: chunked_minlstm(p, chunk["minlstm"]), naive_minlstm, [rn(batch, T, 3 * D)])
    # xlstm mLSTM: E = 128, H = 4, d = 32; forget gates near the init (bias 3..6)
    H, d = 4, 32
    cases["xlstm (mLSTM)"] = (
        lambda q, k, v, i, f: mlstm_chunkwise(q, k, v, i, F.logsigmoid(f), chunk["xlstm"]),
        lambda q, k, v, i, f: naive_mlstm(q, k, v, i, F.logsigmoid(f)),
        [rn(batch, H, T, d), rn(batch, H, T, d) / math.sqrt(d), rn(batch, H, T, d), rn(batch, H, T), rn(batch, H, T) + 4],
    )
    # linear attention, fla defaults, H = 4: gla K = 8, V = 16; retnet K = 16, V = 32; deltanet K = V = 16
    H, Lc = 4, chunk["linear_attention"]
    gla_g = lambda s: F.logsigmoid(s) / 16
    cases["gla"] = (lambda q, k, v, s: chunked_gla(q, k, v, gla_g(s), Lc), lambda q, k, v, s: naive_decay(q, k, v, gla_g(s)),
                    [rn(batch, H, T, 8) / math.sqrt(8), rn(batch, H, T, 8), rn(batch, H, T, 16), rn(batch, H, T, 8)])
    log_gamma = torch.log1p(-(2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32))))[:, None]
    cases["retnet"] = (lambda q, k, v: chunked_decay_attention(q, k, v, log_gamma, Lc),
                       lambda q, k, v: naive_decay(q, k, v, log_gamma.expand(H, T)),
                       [rn(batch, H, T, 16) / 4, rn(batch, H, T, 16), rn(batch, H, T, 32)])
    l2 = lambda t: F.normalize(t, dim=-1)
    cases["deltanet"] = (lambda q, k, v, b: chunked_delta_rule(l2(q) / 4, l2(k), v, torch.sigmoid(b), Lc),
                         lambda q, k, v, b: naive_delta(l2(q) / 4, l2(k), v, torch.sigmoid(b)),
                         [rn(batch, H, T, 16), rn(batch, H, T, 16), rn(batch, H, T, 16), rn(batch, H, T)])
    slstm = xlstm.SLSTMMixer(models.make("xlstm", d_model=D))
    cases["xlstm (sLSTM)"] = (None, lambda x: slstm_loop(slstm, x), [rn(batch, T, D)])
    return cases


# ----------------------------------------------------------------------------- timing


def fwd_bwd(fn: Callable, inputs: Inputs) -> tuple[float, torch.Tensor]:
    """Seconds for one forward + backward (sum of outputs) and the output."""
    xs = [x.detach().requires_grad_() for x in inputs]
    t0 = time.perf_counter()
    y = fn(*xs)
    y.sum().backward()
    return time.perf_counter() - t0, y.detach()


def median_time(fn: Callable, inputs: Inputs, repeats: int) -> tuple[float, torch.Tensor]:
    _, y = fwd_bwd(fn, inputs)  # warm-up
    times = [fwd_bwd(fn, inputs)[0] for _ in range(repeats)]
    return statistics.median(times), y


def bench_chunked_vs_naive(lengths: list[int], batch: int, repeats: int) -> list[dict]:
    rows = []
    for T in lengths:
        cases = make_cases(batch, T, torch.Generator().manual_seed(T))
        for name, (chunked, naive, inputs) in cases.items():
            row: dict = {"family": name, "T": T}
            if chunked is not None:
                row["chunked_s"], y = median_time(chunked, inputs, repeats)
            n_rep = 1 if T >= 4096 else repeats
            t_naive, y_naive = median_time(naive, inputs, n_rep) if n_rep > 1 else fwd_bwd(naive, inputs)
            if chunked is not None:
                row["rel_err"] = ((y - y_naive).abs().max() / y_naive.abs().max()).item()
                if row["rel_err"] > 1e-3:
                    print(f"  {name} T={T}: chunked and naive disagree (rel err {row['rel_err']:.1e}); no time reported")
                    row["chunked_s"] = None
            row["naive_s"] = t_naive
            rows.append(row)
            print(f"  {name:15s} T={T:5d}  chunked {fmt_s(row.get('chunked_s'))}  naive {fmt_s(t_naive)}", flush=True)
    return rows


def fmt_s(s: float | None) -> str:
    return "   n/a  " if s is None else f"{s * 1e3:8.1f} ms"


TRAIN_FAMILIES = [
    ("lstm", {}), ("transformer", {}), ("mamba", {}),
    ("mamba2", {}), ("mingru", {}), ("minlstm", {}),
    ("xlstm", {}), ("xlstm", {"slstm_at": [1]}),
    ("linear_attention", {"kind": "gla"}), ("linear_attention", {"kind": "retnet"}),
    ("linear_attention", {"kind": "deltanet"}),
]


def bench_training(d_model: int, n_layers: int, batch: int, T: int, steps: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (batch, T), generator=g)
    y = torch.randint(0, 16, (batch, T), generator=g)
    for family, extra in TRAIN_FAMILIES:
        torch.manual_seed(0)
        m = models.build(family, vocab_size=16, d_model=d_model, n_layers=n_layers, **extra).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)

        def train_step(m: models.SequenceModel = m, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x).reshape(-1, 16), y.reshape(-1)).backward()
            opt.step()

        train_step()  # warm-up
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step()
            times.append(time.perf_counter() - t0)
        label = family + ("" if not extra else "(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")")
        rows.append({"model": label, "params": m.n_params, "impl": m.impl,
                     "tokens_per_s": batch * T / statistics.median(times)})
        print(f"  {label:40s} {rows[-1]['tokens_per_s']:10.0f} tokens/s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--batch", type=int, default=2, help="batch size of the chunked-vs-naive comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-d-model", type=int, default=64)
    ap.add_argument("--train-layers", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-len", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} thread(s), load average {load0[0]:.2f} at start")

    print(f"\n1. chunked vs naive loop, forward+backward, batch {args.batch} (medians of {args.repeats})")
    rows = bench_chunked_vs_naive(args.lengths, args.batch, args.repeats)
    print(f"\n{'family':16s}" + "".join(f"  {'T=' + str(T):>26s}" for T in args.lengths))
    print(f"{'':16s}" + "".join(f"  {'chunked / naive ms  ratio':>26s}" for _ in args.lengths))
    for name in dict.fromkeys(r["family"] for r in rows):
        line = f"{name:16s}"
        for T in args.lengths:
            r = next(r for r in rows if r["family"] == name and r["T"] == T)
            c = r.get("chunked_s")
            if c is None:
                line += f"  {'loop only':>9s} {r['naive_s'] * 1e3:8.0f}   {'n/a':>6s}"
            else:
                line += f"  {c * 1e3:7.1f} / {r['naive_s'] * 1e3:7.0f}  {r['naive_s'] / c:6.1f}x"
        print(line)
    errs = [r["rel_err"] for r in rows if "rel_err" in r]
    print(f"(naive vs chunked outputs: max relative error {max(errs):.1e}; sLSTM has no parallel form)")

    print(f"\n2. training tokens/s, d_model={args.train_d_model}, n_layers={args.train_layers}, "
          f"batch {args.train_batch} x T={args.train_len}, vocab 16, AdamW (median of {args.train_steps} steps)")
    train = bench_training(args.train_d_model, args.train_layers, args.train_batch, args.train_len, args.train_steps)
    ref = next(r["tokens_per_s"] for r in train if r["model"] == "transformer")
    print(f"\n{'model':40s} {'params':>8s} {'impl':>10s} {'tokens/s':>10s} {'vs transformer':>15s}")
    for r in train:
        print(f"{r['model']:40s} {r['params']:8d} {r['impl']:>10s} {r['tokens_per_s']:10.0f} "
              f"{r['tokens_per_s'] / ref:14.2f}x")
    load1 = os.getloadavg()
    print(f"\nload average {load1[0]:.2f} at the end (2 cores: above ~1.5 means other work shared the CPU)")


if __name__ == "__main__":
    main()
