"""What the model-zoo wrapper costs: forward throughput of models.build("lstm"/"gru", residual=False)
against a bare nn.Embedding -> nn.LSTM/nn.GRU(num_layers=L) -> nn.Linear with the same weights.

    python scripts/bench_rnn_wrapper.py                      # B=16, T=256, D=128, L=2, CPU
    python scripts/bench_rnn_wrapper.py --threads 1 --clock cpu --rounds 15   # on a busy shared machine

Inference (torch.no_grad), torch.utils.benchmark.Timer.blocked_autorange. Bare and wrapper are
timed in alternating rounds (order flipped every round) so drift on a shared machine hits both;
the overhead is the median over rounds of (wrapper time / bare time) - 1. Outputs are checked
equal before anything is timed. Goal: overhead < 5%.

On a machine shared with other jobs, wall-clock samples mostly measure preemption; with
--threads 1 --clock cpu each sample is the process's CPU time (time.process_time), which
preemption does not inflate. tokens/s is then per CPU-second of one thread.

glibc's malloc hands large blocks (the (B, T, 4D) gate buffers) to mmap below a threshold
that it raises on the fly, so whichever model happens to run first can pay page faults on
every call for the whole run (measured: the bare LSTM 21% slower than the wrapper when
timed first, equal when timed second). The script fixes the threshold (mallopt) before
timing, so both models allocate from the heap; --keep-malloc leaves glibc's default.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time
import timeit

import torch
from torch import nn
from torch.utils.benchmark import Timer

from seqbench import models
from seqbench.models.rnn import RNN_MODULES, state_dict_from_stacked


class Bare(nn.Module):
    """The reference: embedding -> one multi-layer torch RNN -> linear head."""

    def __init__(self, family: str, vocab_size: int, d_model: int, n_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.rnn = RNN_MODULES[family](d_model, d_model, n_layers, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0])  # (B, T, V)


def build_pair(family: str, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    wrapped = models.build(family, vocab_size=args.vocab_size, d_model=args.d_model,
                           n_layers=args.n_layers, residual=False)
    bare = Bare(family, args.vocab_size, args.d_model, args.n_layers)
    weights = {**state_dict_from_stacked(bare.rnn),
               "embed.weight": bare.embed.weight, "head.weight": bare.head.weight, "head.bias": bare.head.bias}
    wrapped.load_state_dict(weights)
    return wrapped.to(device).eval(), bare.to(device).eval()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def pin_glibc_malloc(threshold: int = 32 << 20) -> bool:
    """Serve blocks below `threshold` from the heap and never trim it; False if not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


CLOCKS = {"wall": timeit.default_timer, "cpu": time.process_time}


def time_once(model: nn.Module, x: torch.Tensor, min_run_time: float, clock: str) -> float:
    """Median seconds per forward."""
    timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads(),
                  timer=CLOCKS[clock])
    return timer.blocked_autorange(min_run_time=min_run_time).median


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated q-quantile (0 <= q <= 1)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["lstm", "gru"], choices=sorted(RNN_MODULES))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall clock, or process CPU time (use with --threads 1 on a busy machine)")
    p.add_argument("--keep-malloc", action="store_true", help="leave glibc's dynamic mmap threshold on")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per blocked_autorange")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pinned = False if args.keep_malloc else pin_glibc_malloc()
    device = torch.device(args.device)
    B, T = args.batch_size, args.seq_len
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"B={B} T={T} D={args.d_model} L={args.n_layers} V={args.vocab_size}, rounds {args.rounds}, clock {args.clock}, "
          f"malloc {'pinned' if pinned else 'default'}")
    rows = []
    for family in args.families:
        wrapped, bare = build_pair(family, args, device)
        x = torch.randint(0, args.vocab_size, (B, T), device=device)
        with torch.no_grad():
            torch.testing.assert_close(wrapped(x), bare(x))
            bare_s, wrap_s = [], []
            for r in range(args.rounds):
                pair = [(bare, bare_s), (wrapped, wrap_s)]
                for model, out in pair if r % 2 == 0 else pair[::-1]:
                    out.append(time_once(model, x, args.min_run_time, args.clock))
        ratios = [w / b - 1.0 for w, b in zip(wrap_s, bare_s)]
        rows.append((family, wrapped.impl, B * T / statistics.median(bare_s), B * T / statistics.median(wrap_s),
                     ratios))
    print("\n| family | impl | bare tokens/s | wrapper tokens/s | overhead (median over rounds) | p20 .. p80 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for family, impl, bare_tps, wrap_tps, ratios in rows:
        lo, hi = percentile(ratios, 0.2), percentile(ratios, 0.8)
        print(f"| {family} | {impl} | {bare_tps:,.0f} | {wrap_tps:,.0f} | {100 * statistics.median(ratios):+.1f}% "
              f"| {100 * lo:+.1f}% .. {100 * hi:+.1f}% |")


if __name__ == "__main__":
    main()
