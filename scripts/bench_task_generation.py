"""Batch generation cost of every registered task, next to one training step of a small LSTM.

    python scripts/bench_task_generation.py [--batch-size 32] [--reps 10] [--threads N] [--flush-denormal]

For each task at its default params and seq_len (the quick-suite sizes): the
median ms of `task.batch(batch_size, seed=i, split="train")` over fresh seeds,
the first call (which includes loading real data, a one-off setup cost), and
the median ms of one training step (forward + backward + AdamW) of
models.build("lstm", d_model=64, n_layers=2) on that batch. Generation should
be a small fraction of the step. A second table times generation alone at
long test lengths (the extrapolation sizes). Real tasks whose data package is
missing are listed as skipped.

On CPU, tasks scored at one position (induction_heads, long_range_recall)
send tiny gradients back through time that become denormal floats, which
slows the LSTM backward about 10x; --flush-denormal (torch.set_flush_denormal)
shows the step without that effect. On a shared CPU, --threads 1 avoids
OpenMP oversubscription.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from seqbench import models, tasks

MissingDataError = getattr(tasks.base, "MissingDataError", ImportError)

# (task, batch_size, seq_len): generation at test lengths far beyond training
LONG = [
    ("induction_heads", 32, 2 ** 16),
    ("induction_heads", 1, 2 ** 20),
    ("long_range_recall", 32, 2 ** 16),
    ("selective_copy", 32, 4096),
    ("copy", 32, 2 ** 12 + 21),
    ("associative_recall", 32, 2048),
]


def median_ms(fn: Callable[[int], object], reps: int) -> float:
    samples = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def lstm_step_ms(task: tasks.Task, batch: tasks.Batch, reps: int) -> float:
    """Median ms of forward + loss + backward + AdamW step of a 2-layer, d_model=64 LSTM."""
    torch.manual_seed(0)
    model = models.build(
        "lstm", vocab_size=task.vocab_size or 1, d_input=task.d_input, d_output=task.n_outputs,
        d_model=64, n_layers=2,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        task.loss(model(batch.inputs, src_len=batch.src_len), batch).backward()
        opt.step()

    step(0)  # warm-up
    return median_ms(step, reps)


def long_gen_ms(task: tasks.Task, batch_size: int, seq_len: int, reps: int) -> float:
    return median_ms(lambda i: task.batch(batch_size, seq_len=seq_len, seed=i, split="eval"), reps)


def bench_task(name: str, batch_size: int, reps: int) -> dict[str, object]:
    try:
        task = tasks.build(name)
        t0 = time.perf_counter()
        batch = task.batch(batch_size, seed=0, split="train")
        first = (time.perf_counter() - t0) * 1e3
    except (MissingDataError, ImportError) as exc:
        return {"task": name, "skipped": str(exc)}
    gen = median_ms(lambda i: task.batch(batch_size, seed=1 + i, split="train"), reps)
    step = lstm_step_ms(task, batch, reps)
    return {"task": name, "seq_len": batch.seq_len, "first_ms": first, "gen_ms": gen, "step_ms": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flush_denormal {args.flush_denormal}, "
          f"batch_size {args.batch_size}, "
          f"median of {args.reps}; LSTM = models.build('lstm', d_model=64, n_layers=2), AdamW")
    print()
    header = f"{'task':<26} {'seq_len':>7} {'first ms':>9} {'gen ms':>8} {'LSTM step ms':>13} {'gen/step':>9}"
    print(header)
    print("-" * len(header))
    for name in tasks.names():
        r = bench_task(name, args.batch_size, args.reps)
        if "skipped" in r:
            print(f"{name:<26} skipped: {r['skipped']}")
            continue
        ratio = r["gen_ms"] / r["step_ms"]
        print(f"{name:<26} {r['seq_len']:>7} {r['first_ms']:>9.2f} {r['gen_ms']:>8.2f} "
              f"{r['step_ms']:>13.2f} {ratio:>8.1%}")
    print()
    header = f"{'long lengths: task':<26} {'batch':>5} {'seq_len':>9} {'gen ms':>8}"
    print(header)
    print("-" * len(header))
    for name, batch_size, seq_len in LONG:
        if name not in tasks.names():
            continue
        gen = long_gen_ms(tasks.build(name), batch_size, seq_len, max(3, args.reps // 3))
        print(f"{name:<26} {batch_size:>5} {seq_len:>9} {gen:>8.2f}")


if __name__ == "__main__":
    main()
