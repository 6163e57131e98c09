"""throughput: inference and training tokens/s at the cell's (batch_size, seq_len).

Workloads (bench.train.workload_fn) on random inputs of the model's vocabulary:
    inference   one forward pass under torch.no_grad(), model in eval mode
                (encoder-decoder models decode greedily from src_len = seq_len // 2)
    training    zero_grad + forward + cross-entropy on random targets + backward +
                AdamW step, model in train mode (teacher forcing for encoder-decoders)
Timing follows bench/timing.py: `warmup` untimed calls, then `repeats` samples of
enough back-to-back calls to last `min_time_s`; CUDA samples use CUDA events.
A sample's tokens/s is batch_size x seq_len / (seconds per call).

Settings (all optional):
    modes: [inference, training]
    warmup: 3          untimed calls before calibration
    repeats: 10        samples kept per mode
    min_time_s: 0.01   minimum duration of one sample: long enough to make the clock's
                       overhead negligible, short enough that on a shared machine most
                       samples fit between the scheduler's preemptions (the median then
                       reports the undisturbed speed, as blocked_autorange's does)
    lr: 1e-3           AdamW learning rate of the training step
    guard: 0.2         CPU only: a sample is retaken (up to 3 x repeats times) when a
                       probe timed just before or after it ran more than this fraction
                       slower than the quiet reference (bench.timing.QuietGuard: the
                       machine was busy); 0 turns the guard off

Rows per mode (column mode):
    tokens_per_s     value = median sample; samples (tokens/s each); stats (+ inner:
                     calls per sample; busy: samples set aside by the guard; busy_kept:
                     busy samples kept because the retries ran out)
    achieved_flops   tokens/s x model.flops_per_token(seq_len), x3 for training
                     (backward ~ 2x forward); samples and stats likewise
    mfu              achieved_flops / the matmul FLOP/s ceiling measured on the same
                     device and dtype in this process (bench.timing.matmul_ceiling)
"""

from __future__ import annotations

from typing import Any

from bench.measures import MeasureContext, register
from bench.timing import (
    GUARD_TOLERANCE,
    SettingsError,
    matmul_ceiling,
    measure,
    merge_settings,
    positive,
    quiet_guard,
    row,
    summarize,
)
from bench.train import random_batch, workload_fn

DEFAULTS: dict[str, Any] = {
    "modes": ["inference", "training"],
    "warmup": 3,
    "repeats": 10,
    "min_time_s": 0.01,
    "lr": 1e-3,
    "guard": GUARD_TOLERANCE,
}
MODES = ("inference", "training")
FLOPS_FACTOR = {"inference": 1.0, "training": 3.0}


def cell_shape(ctx: MeasureContext, measure_name: str) -> tuple[int, int]:
    """(batch_size, seq_len) of a speed cell; both must be set by the suite's shapes."""
    b, t = ctx.cell.batch_size, ctx.cell.seq_len
    if b is None or t is None:
        raise SettingsError(f"measure {measure_name!r} needs shapes.batch_size and shapes.seq_len in the suite")
    return int(b), int(t)


def check_modes(measure_name: str, modes: list[str]) -> list[str]:
    for m in modes:
        if m not in MODES:
            raise SettingsError(f"measures.{measure_name}: mode {m!r} is not one of {', '.join(MODES)}")
    return list(modes)


@register("throughput")
def throughput(ctx: MeasureContext) -> list[dict]:
    s = merge_settings("throughput", ctx.settings, DEFAULTS)
    modes = check_modes("throughput", s["modes"])
    batch_size, seq_len = cell_shape(ctx, "throughput")
    slowdown = float(ctx.faults.get("slowdown", 1.0))
    tokens = batch_size * seq_len
    guard = quiet_guard(ctx.device, positive("throughput", "guard", s["guard"], integer=False, allow_zero=True))
    rows: list[dict] = []
    for mode in modes:
        model = ctx.build_model()
        fn = workload_fn(model, mode, random_batch(model, batch_size, seq_len, ctx.device, ctx.cell.seed),
                         lr=float(s["lr"]))
        ctx.progress(f"throughput {mode}")
        seconds, inner, busy = measure(
            fn, ctx.device, warmup=positive("throughput", "warmup", s["warmup"], allow_zero=True),
            repeats=positive("throughput", "repeats", s["repeats"]),
            min_time_s=positive("throughput", "min_time_s", s["min_time_s"], integer=False, allow_zero=True),
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
