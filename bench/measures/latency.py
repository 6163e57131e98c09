"""latency: per-token streaming step() times at batch 1, against position.

Protocol: the model in eval mode under no_grad; random inputs of its vocabulary.
Warm-up: a throw-away stream of `warmup` step() calls (and one prefill forward).
Then, `repeats` times: init_state(batch_size, prefill_len + seq_len); when
prefill_len > 0 a timed forward() over the prompt (prefill_ms: the parallel compute
a server does on a prompt; the interface has no forward that returns a state, so the
state is then filled by stepping the prompt untimed); then seq_len timed step() calls.
Each step is timed on its own with time.perf_counter and, on CUDA, a synchronize
after it: a streamed token is only done when it is on the host.

Settings: LatencySettings below. `guard` (CPU only): a stream is retimed (up to 3 x
repeats times) when a probe timed just before or after it ran more than this fraction
slower than the quiet reference (seqbench.bench.measures.timing.QuietGuard).

Rows:
    latency_p50_ms, latency_p90_ms, latency_p99_ms   percentiles of all per-token step
                     times (samples: all of them, in ms, on the p50 row; stats on each,
                     with busy / busy_kept: streams the guard set aside / had to keep)
    first_token_ms   prefill_ms + the first step (the first step alone when prefill_len = 0)
    prefill_ms       only when prefill_len > 0
    latency_ms       per position bucket: median step time, column position = the middle
                     position of the bucket (tokens already in the state), samples = the
                     bucket's step times
A model that is not streamable (bidirectional, pooled, encoder-decoder) is skipped.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seqbench.bench.measures import MeasureContext, Skip, measure
from seqbench.bench.measures.timing import (
    GUARD_TOLERANCE,
    busy_wait,
    gc_paused,
    guarded,
    quiet_guard,
    row,
    summarize,
    synchronize,
)
from seqbench.bench.measures.train import random_batch
from seqbench.config import NonNegFloat, NonNegInt, PosInt
from seqbench.errors import SettingsError


@dataclass(frozen=True)
class LatencySettings:
    batch_size: PosInt = 1  # streams stepped together
    prefill_len: NonNegInt = 0  # prompt tokens before the timed steps
    warmup: NonNegInt = 8  # untimed warm-up steps
    repeats: PosInt = 1  # streams timed (per-token samples = repeats x seq_len)
    n_buckets: PosInt = 16  # log-spaced position buckets of the latency-vs-position rows
    guard: NonNegFloat = GUARD_TOLERANCE  # CPU: retime streams next to a probe this much slower; 0: off


def position_buckets(seq_len: int, n_buckets: int) -> list[tuple[int, int]]:
    """Log-spaced [start, end) buckets covering 0..seq_len-1 (no empty bucket)."""
    edges = np.unique(np.floor(np.geomspace(1, seq_len + 1, n_buckets + 1)).astype(int) - 1)
    edges[0], edges[-1] = 0, seq_len
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def stream_step_times(model: Any, x: torch.Tensor, prefill_len: int, device: torch.device,
                      slowdown: float = 1.0) -> tuple[float | None, list[float]]:
    """One timed stream: (prefill seconds or None, seconds of each step after the prompt).

    x (B, P + T) tokens or (B, P + T, F) floats."""
    total = x.shape[1]
    state = model.init_state(x.shape[0], total)
    prefill_s = None
    if prefill_len > 0:
        synchronize(device)
        t0 = time.perf_counter()
        model(x[:, :prefill_len])
        synchronize(device)
        prefill_s = time.perf_counter() - t0
        for t in range(prefill_len):
            _, state = model.step(x[:, t], state)
    synchronize(device)
    times = []
    for t in range(prefill_len, total):
        x_t = x[:, t]
        t0 = time.perf_counter()
        _, state = model.step(x_t, state)
        synchronize(device)
        if slowdown > 1.0:
            busy_wait((slowdown - 1.0) * (time.perf_counter() - t0))
        times.append(time.perf_counter() - t0)
    return prefill_s, times


@measure("latency", LatencySettings, axes=("seq_len",))
def latency(ctx: MeasureContext) -> list[dict]:
    s: LatencySettings = ctx.settings
    if ctx.cell.seq_len is None:
        raise SettingsError("measure 'latency' needs shapes.seq_len in the suite")
    seq_len = int(ctx.cell.seq_len)
    batch_size, prefill_len, repeats, warmup = s.batch_size, s.prefill_len, s.repeats, s.warmup
    slowdown = float(ctx.faults.get("slowdown", 1.0))
    tolerance = s.guard
    model = ctx.build_model()
    if not model.streamable:
        raise Skip(f"{model.family} is not streamable (bidirectional, pooled or encoder-decoder): "
                   "it has no per-token step()")
    guard = quiet_guard(ctx.device, tolerance)  # after the skip: a first guard learns for 1 s
    model.eval()
    total = prefill_len + seq_len
    x = random_batch(model, batch_size, total, ctx.device, ctx.cell.seed).inputs
    with torch.no_grad(), gc_paused():
        state = model.init_state(batch_size, total)
        for t in range(min(warmup, total)):
            _, state = model.step(x[:, t], state)
        if prefill_len > 0:
            model(x[:, :prefill_len])
        synchronize(ctx.device)
        done = 0

        def take() -> tuple[float | None, list[float]]:
            nonlocal done
            done += 1
            ctx.progress(f"latency stream {done}/{repeats}" if done <= repeats else f"latency stream {done} (retiming)")
            return stream_step_times(model, x, prefill_len, ctx.device, slowdown)

        taken, busy = guarded(take, guard, repeats, 3 * repeats)
        prefills = [p for p, _ in taken]
        streams = [t for _, t in taken]
    ms = np.asarray(streams) * 1e3  # (repeats, T)
    flat = ms.ravel().tolist()
    stats = {**summarize(flat), **busy}
    rows = [row("latency_p50_ms", stats["median"], samples=flat, stats=stats)]
    for q in (90, 99):
        rows.append(row(f"latency_p{q}_ms", float(np.percentile(ms, q)), stats=stats))
    first = ms[:, 0]
    if prefill_len > 0:
        prefill_ms = np.asarray(prefills, dtype=float) * 1e3
        rows.append(row("prefill_ms", float(np.median(prefill_ms)), samples=prefill_ms.tolist(),
                        stats=summarize(prefill_ms)))
        first = first + prefill_ms
    rows.append(row("first_token_ms", float(np.median(first)), samples=first.tolist(), stats=summarize(first)))
    for a, b in position_buckets(seq_len, s.n_buckets):
        vals = ms[:, a:b].ravel().tolist()
        rows.append(row("latency_ms", float(np.median(vals)), samples=vals, stats=summarize(vals),
                        position=prefill_len + (a + b - 1) // 2))
    return rows
