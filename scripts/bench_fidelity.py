"""Measurement fidelity: does the harness report what an independent timer sees?

(1) Throughput. The tokens/s that seqbench.bench.measures.throughput reports for an LSTM
    (models.build("lstm", residual=False): embedding -> plain nn.LSTM layers -> head) vs
    torch.utils.benchmark.Timer(...).blocked_autorange on the exact same workload (the
    same seeded model, inputs and callable from seqbench.bench.measures.train.workload_fn) in the same
    process, for inference and training. Goal: within 5%. The two are interleaved
    round by round, alternating which goes first, so a drift in machine load shows up
    as a spread between rounds rather than as a bias; the summary is the median of the
    per-round paired differences. Both the median sample (what each tool reports) and
    the fastest sample are compared: on a shared machine other processes stretch some
    samples by 2-3x, which moves medians between rounds but leaves the fastest sample,
    the undisturbed speed, in place.
(2) Streaming latency. The median per-token step() time that seqbench.bench.measures.latency
    reports for the same LSTM vs bare PyTorch loops over the same width and depth: an
    nn.LSTM called on one token (1, 1, D) at a time with its (h, c) state, and a stack
    of nn.LSTMCell. The harness's step adds the embedding and the head to the cells,
    so it should be no faster than the LSTMCell loop; nn.LSTM's per-call overhead
    (the full sequence kernel for T = 1) can make it the slowest of the three.

    python scripts/bench_fidelity.py [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.utils.benchmark as tbench

from seqbench import models
from seqbench.bench.measures import MEASURES, MeasureContext
from seqbench.bench.measures.timing import synchronize
from seqbench.bench.measures.train import random_batch, workload_fn
from seqbench.bench.run.matrix import Cell


def build_lstm(args: argparse.Namespace) -> models.SequenceModel:
    torch.manual_seed(0)
    model = models.build("lstm", residual=False, vocab_size=args.vocab_size, d_model=args.d_model,
                         n_layers=args.n_layers)
    return model.to(args.device)


def context(args: argparse.Namespace, measure: str, settings: dict, batch_size: int | None,
            seq_len: int) -> MeasureContext:
    cfg = {"residual": False, "vocab_size": args.vocab_size, "d_model": args.d_model, "n_layers": args.n_layers}
    cell = Cell(model="lstm", family="lstm", model_config=cfg, task=None, task_kind=None, task_params={},
                measure=measure, settings=settings, batch_size=batch_size, seq_len=seq_len, device=args.device)
    return MeasureContext(cell=cell, build_model=lambda: build_lstm(args), task=None,
                          device=torch.device(args.device), dtype=torch.float32,
                          settings=MEASURES[measure].make_settings(settings))


def harness_tokens_per_s(args: argparse.Namespace, mode: str) -> tuple[float, float]:
    """(median, best) tokens/s over the samples of seqbench.bench.measures.throughput's default protocol."""
    settings = {"modes": [mode]}
    rows = MEASURES["throughput"].fn(context(args, "throughput", settings, args.batch_size, args.seq_len))
    row = next(r for r in rows if r["metric"] == "tokens_per_s")
    return row["value"], max(row["samples"])


def timer_tokens_per_s(args: argparse.Namespace, mode: str) -> tuple[float, float]:
    """(median, best) tokens/s over blocked_autorange's blocks."""
    model = build_lstm(args)
    device = torch.device(args.device)
    fn = workload_fn(model, mode, random_batch(model, args.batch_size, args.seq_len, device, seed=0))
    for _ in range(3):
        fn()
    # Timer's clock synchronizes CUDA at block boundaries, like the harness's events.
    m = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=args.min_run_time)
    tokens = args.batch_size * args.seq_len
    return tokens / m.median, tokens / (min(m.raw_times) / m.number_per_run)


def harness_step_ms(args: argparse.Namespace) -> float:
    rows = MEASURES["latency"].fn(context(args, "latency", {"warmup": 16}, None, args.stream_len))
    return next(r["value"] for r in rows if r["metric"] == "latency_p50_ms")


def _median_step_ms(step, x: torch.Tensor, device: torch.device) -> float:
    """Median per-token ms of `state = step(x[:, t], state)` over the stream x (1, T, D)."""
    times = []
    with torch.no_grad():
        state = None
        for t in range(16):  # warm-up
            state = step(x[:, t], state)
        state = None
        for t in range(x.shape[1]):
            t0 = time.perf_counter()
            state = step(x[:, t], state)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bare_step_ms(args: argparse.Namespace) -> tuple[float, float]:
    """Median per-token ms of (a) a bare nn.LSTM(D, D, n_layers) called on (1, 1, D) with its
    (h, c) state, (b) n_layers nn.LSTMCell(D, D) called on (1, D)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    D, L = args.d_model, args.n_layers
    lstm = torch.nn.LSTM(D, D, num_layers=L, batch_first=True).to(device).eval()
    cells = [torch.nn.LSTMCell(D, D).to(device).eval() for _ in range(L)]
    x = torch.randn(1, args.stream_len, D, device=device)

    def module_step(x_t: torch.Tensor, state):
        return lstm(x_t.unsqueeze(1), state)[1]

    def cell_step(x_t: torch.Tensor, state):
        state = state or [None] * L
        new = []
        for cell, s in zip(cells, state):
            h, c = cell(x_t, s)
            new.append((h, c))
            x_t = h
        return new

    return _median_step_ms(module_step, x, device), _median_step_ms(cell_step, x, device)


def pct(a: float, b: float) -> str:
    return f"{100.0 * (a - b) / b:+.1f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (reported)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=32)
    p.add_argument("--min-run-time", type=float, default=0.5, help="blocked_autorange's min_run_time")
    p.add_argument("--rounds", type=int, default=6, help="interleaved harness/Timer rounds")
    p.add_argument("--stream-len", type=int, default=256, help="tokens stepped in the latency comparison")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"lstm(residual=False) B={args.batch_size} T={args.seq_len} D={args.d_model} L={args.n_layers} "
          f"V={args.vocab_size}")

    print("\n(1) tokens/s: harness (seqbench.bench.measures.throughput) vs torch.utils.benchmark blocked_autorange")
    print("median: the median sample of each (what each reports); best: the fastest sample of each")
    print(f"{'mode':<10} {'round':>5} {'harness':>10} {'Timer':>10} {'diff':>7} {'harness':>10} {'Timer':>10} {'diff':>7}")
    print(f"{'':<10} {'':>5} {'median':>10} {'median':>10} {'':>7} {'best':>10} {'best':>10}")
    for mode in ("inference", "training"):
        med_ratios, best_ratios = [], []
        for r in range(args.rounds):
            if r % 2 == 0:  # alternate which timer goes first, so an order effect cancels
                (hm, hb), (tm, tbest) = harness_tokens_per_s(args, mode), timer_tokens_per_s(args, mode)
            else:
                (tm, tbest), (hm, hb) = timer_tokens_per_s(args, mode), harness_tokens_per_s(args, mode)
            med_ratios.append(hm / tm)
            best_ratios.append(hb / tbest)
            print(f"{mode:<10} {r + 1:>5} {hm:>10.0f} {tm:>10.0f} {pct(hm, tm):>7} {hb:>10.0f} {tbest:>10.0f} "
                  f"{pct(hb, tbest):>7}")
        print(f"{mode:<10} median of the paired differences: median {100.0 * (statistics.median(med_ratios) - 1):+.1f}%, "
              f"best {100.0 * (statistics.median(best_ratios) - 1):+.1f}%")

    print(f"\n(2) streaming step at batch 1 over {args.stream_len} tokens, median ms per token")
    print(f"{'round':>5} {'harness lstm.step':>18} {'bare nn.LSTM':>13} {'diff':>8} {'bare LSTMCell':>14} {'diff':>8}")
    for r in range(args.rounds):
        h = harness_step_ms(args)
        module, cell = bare_step_ms(args)
        print(f"{r + 1:>5} {h:>18.4f} {module:>13.4f} {pct(h, module):>8} {cell:>14.4f} {pct(h, cell):>8}")


if __name__ == "__main__":
    main()
