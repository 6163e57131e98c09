"""throughput: inference and training tokens/s at the cell's (batch_size, seq_len).

Workloads (seqbench.bench.measures.train.workload_fn) on random inputs of the model's vocabulary:
    inference   one forward pass under torch.no_grad(), model in eval mode
                (encoder-decoder models decode greedily from src_len = seq_len // 2)
    training    zero_grad + forward + cross-entropy on random targets + backward +
                AdamW step, model in train mode (teacher forcing for encoder-decoders)
Timing follows bench/measures/timing.py: `warmup` untimed calls, then `repeats` samples of
enough back-to-back calls to last `min_time_s`; CUDA samples use CUDA events.
A sample's tokens/s is batch_size x seq_len / (seconds per call).

Settings: ThroughputSettings below. `min_time_s` is long enough to make the clock's
overhead negligible and short enough that on a shared machine most samples fit between
the scheduler's preemptions (the median then reports the undisturbed speed, as
blocked_autorange's does). `guard` (CPU only): a sample is retaken (up to 3 x repeats
times) when a probe timed just before or after it ran more than this fraction slower than
the quiet reference (seqbench.bench.measures.timing.QuietGuard: the machine was busy).

Rows per mode (column mode):
    tokens_per_s     value = median sample; samples (tokens/s each); stats (+ inner:
                     calls per sample; busy: samples set aside by the guard; busy_kept:
                     busy samples kept because the retries ran out)
    achieved_flops   tokens/s x model.flops_per_token(seq_len), x3 for training
                     (backward ~ 2x forward); samples and stats likewise
    mfu              achieved_flops / the matmul FLOP/s ceiling measured on the same
                     device and dtype in this process (seqbench.bench.measures.timing.matmul_ceiling)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from seqbench.bench.measures import MeasureContext, measure
from seqbench.bench.measures.timing import (
    GUARD_TOLERANCE,
    matmul_ceiling,
    measure_samples,
    quiet_guard,
    row,
    summarize,
)
from seqbench.bench.measures.train import random_batch, workload_fn
from seqbench.config import NONEMPTY, NonNegFloat, NonNegInt, PosFloat, PosInt
from seqbench.errors import SettingsError

Mode = Literal["inference", "training"]
Modes = Annotated[tuple[Mode, ...], NONEMPTY]


@dataclass(frozen=True)
class ThroughputSettings:
    modes: Modes = ("inference", "training")  # workloads timed, each on a fresh model
    warmup: NonNegInt = 3  # untimed calls before calibration
    repeats: PosInt = 10  # samples kept per mode
    min_time_s: NonNegFloat = 0.01  # minimum duration of one sample (calls are repeated to reach it)
    lr: PosFloat = 1e-3  # AdamW learning rate of the training step
    guard: NonNegFloat = GUARD_TOLERANCE  # CPU: retake samples next to a probe this much slower; 0: off


FLOPS_FACTOR = {"inference": 1.0, "training": 3.0}


def cell_shape(ctx: MeasureContext, measure_name: str) -> tuple[int, int]:
    """(batch_size, seq_len) of a speed cell; both must be set by the suite's shapes."""
    b, t = ctx.cell.batch_size, ctx.cell.seq_len
    if b is None or t is None:
        raise SettingsError(f"measure {measure_name!r} needs shapes.batch_size and shapes.seq_len in the suite")
    return int(b), int(t)


@measure("throughput", ThroughputSettings, axes=("batch_size", "seq_len"))
def throughput(ctx: MeasureContext) -> list[dict]:
    s: ThroughputSettings = ctx.settings
    batch_size, seq_len = cell_shape(ctx, "throughput")
    slowdown = float(ctx.faults.get("slowdown", 1.0))
    tokens = batch_size * seq_len
    guard = quiet_guard(ctx.device, s.guard)
    rows: list[dict] = []
    for mode in s.modes:
        model = ctx.build_model()
        fn = workload_fn(model, mode, random_batch(model, batch_size, seq_len, ctx.device, ctx.cell.seed), lr=s.lr)
        ctx.progress(f"throughput {mode}")
        seconds, inner, busy = measure_samples(
            fn, ctx.device, warmup=s.warmup, repeats=s.repeats, min_time_s=s.min_time_s,
            slowdown=slowdown, progress=ctx.progress, guard=guard,
        )
        tps = [tokens / sec for sec in seconds]
        stats = {**summarize(tps), "inner": inner, **busy}
        rows.append(row("tokens_per_s", stats["median"], samples=tps, stats=stats, mode=mode))
        flops = model.flops_per_token(seq_len) * FLOPS_FACTOR[mode]
        achieved = [t * flops for t in tps]
        a_stats = summarize(achieved)
        rows.append(row("achieved_flops", a_stats["median"], samples=achieved, stats=a_stats, mode=mode))
        ceiling = matmul_ceiling(ctx.device, ctx.dtype)
        rows.append(row("mfu", a_stats["median"] / ceiling, mode=mode))
        del fn, model
    return rows
