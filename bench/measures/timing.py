"""Shared helpers of the measures: timing, summary statistics, settings and rows.

Timing protocol (the one of timeit, pytest-benchmark and torch.utils.benchmark):

1. `warmup` untimed calls (lazy allocation, autotuning, caches);
2. calibration: one timed call gives `inner`, the number of calls that makes one
   sample last at least `min_time_s` (capped at `max_inner`);
3. `repeats` samples, each `inner` back-to-back calls; a sample is the elapsed time
   divided by `inner` (seconds per call). All samples are kept.

CPU samples are timed with `time.perf_counter`. CUDA samples are timed with a pair of
`torch.cuda.Event`s recorded on the current stream around the calls, then
synchronized, so the GPU's own timeline is measured and queued work cannot leak
into the next sample. Python's garbage collector is off inside timed regions (as in
timeit), so a collection triggered by an unrelated allocation does not land in one
sample.

The test-only `slowdown` fault (seqbench.bench.measures.MeasureContext.faults) multiplies a
sample by busy-waiting (slowdown - 1) x its elapsed time inside the timed region.
"""

from __future__ import annotations

import gc
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from seqbench.bench.results.schema import EXTRA_FIELDS, METRICS

# --- rows ---------------------------------------------------------------------------

_ROW_KEYS = frozenset(EXTRA_FIELDS) | {"samples", "stats"}


def row(metric: str, value: float, **extra: Any) -> dict[str, Any]:
    """A partial result row: metric, value, unit, higher_is_better (from seqbench.bench.results.schema.METRICS)
    plus `samples`, `stats` and EXTRA_FIELDS columns."""
    if metric not in METRICS:
        raise KeyError(f"metric {metric!r} is not in seqbench.bench.results.schema.METRICS")
    unknown = set(extra) - _ROW_KEYS
    assert not unknown, f"row columns {sorted(unknown)} are not in seqbench.bench.results.schema.EXTRA_FIELDS"
    unit, higher = METRICS[metric]
    return {"metric": metric, "value": float(value), "unit": unit, "higher_is_better": higher, **extra}


# --- statistics ---------------------------------------------------------------------


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    """median, iqr (p75 - p25), p20, p80, p25, p75, mean, std (ddof=1), min, max, n."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize() needs at least one value")
    p20, p25, p50, p75, p80 = np.percentile(x, [20, 25, 50, 75, 80])
    return {
        "median": float(p50),
        "iqr": float(p75 - p25),
        "p20": float(p20),
        "p80": float(p80),
        "p25": float(p25),
        "p75": float(p75),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "n": int(x.size),
    }


# --- clocks -------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_wait(seconds: float) -> None:
    """Spin (not sleep: a sleeping thread frees the core and distorts the next timing)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_calls(fn: Callable[[], Any], device: torch.device, inner: int = 1, slowdown: float = 1.0) -> float:
    """Seconds per call of `fn` over `inner` back-to-back calls (one sample)."""
    with gc_paused():
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            synchronize(device)
            t0 = time.perf_counter()
            start.record()
            for _ in range(inner):
                fn()
            if slowdown > 1.0:
                synchronize(device)
                busy_wait((slowdown - 1.0) * (time.perf_counter() - t0))
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            if slowdown > 1.0:
                busy_wait((slowdown - 1.0) * (time.perf_counter() - t0))
            elapsed = time.perf_counter() - t0
    return elapsed / inner


# --- quiet guard ----------------------------------------------------------------------

GUARD_TOLERANCE = 0.2  # the measures' default `guard` setting


class QuietGuard:
    """Tells whether this CPU runs at its usual speed right now.

    On a shared or virtualised machine a core slows down for a fraction of a second
    to a few seconds at a time (another tenant of the host, memory reclaim, a
    neighbour's burst of memory traffic): every sample a cell takes in such a window
    is slow together, and so is its median. No statistic computed inside one run can
    see this; across runs it is the largest source of false regressions (seqbench's
    own A/A check on a 2-vCPU VM: 9 of 10 single-run comparisons flagged a cell whose
    every sample ran 1.5-2.5x slow; with the guard, 1 in 30).

    The guard times a fixed probe (a chain of 8 matmuls of 128 x 128, about 0.3 ms on
    the 2-vCPU Xeon) between samples; a probe's ratio is its time over the quiet
    reference (the 10th percentile of its last 200 probes). A sample whose probe before
    or after exceeds 1 + tolerance was taken while the machine was busy; the measures
    set it aside and take it again. The probe sees most, not all, of a window (its
    slowdown correlates with a workload's at about 0.5 sample by sample), which is
    enough to keep a whole cell out of one. CPU only: CUDA samples are timed on the
    GPU's own clock.
    """

    def __init__(self, tolerance: float = GUARD_TOLERANCE, size: int = 128, chain: int = 8, window: int = 200,
                 learn_s: float = 1.0) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(size, size, generator=g) / size**0.5
        self.b = torch.randn(size, size, generator=g) / size**0.5
        self.chain = chain
        self.tolerance = tolerance
        self.recent: deque[float] = deque(maxlen=window)
        self.reference = math.inf
        # Learn the quiet speed from 25 probes spread over `learn_s` seconds: a busy window
        # shorter than that leaves enough quiet probes for the 10th percentile. (Learned in
        # 25 ms, a reference taken inside a window made that window look quiet: the first
        # cell of one A/A run ran 1.7x slow unflagged.)
        for _ in range(25):
            self.probe()
            time.sleep(learn_s / 25)

    def _work(self) -> None:
        c = self.a
        for _ in range(self.chain):
            c = torch.tanh(c @ self.b)

    def probe(self) -> float:
        """Run the probe once untimed (the sample before it evicted it from the caches),
        then time it twice; the faster time over the quiet reference.

        Taking the faster of two ignores a single interrupt (a window lasts longer). The
        reference is the 10th percentile of the last `window` probes: not their minimum,
        which keeps falling as a long-lived worker probes thousands of times until every
        probe looks slow."""
        with gc_paused():
            self._work()
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                self._work()
                times.append(time.perf_counter() - t0)
        elapsed = min(times)
        self.recent.append(elapsed)
        self.reference = float(np.quantile(np.fromiter(self.recent, float), 0.1))
        return elapsed / self.reference

    def quiet(self, *ratios: float) -> bool:
        return max(ratios) <= 1.0 + self.tolerance


_GUARDS: dict[float, QuietGuard] = {}


def quiet_guard(device: torch.device, tolerance: float) -> QuietGuard | None:
    """The process's guard for CPU timing (None on CUDA, or when tolerance <= 0: off)."""
    if torch.device(device).type != "cpu" or tolerance <= 0:
        return None
    if tolerance not in _GUARDS:
        _GUARDS[tolerance] = QuietGuard(tolerance)
    return _GUARDS[tolerance]


def guarded(take: Callable[[], Any], guard: QuietGuard | None, want: int, max_retries: int,
            pause_s: float = 0.05) -> tuple[list[Any], dict[str, int]]:
    """Call `take()` until `want` results were taken on a quiet machine.

    A result whose guard probes (before and after) say the machine was busy is set
    aside and taken again after `pause_s`, at most `max_retries` times in all; if the
    retries run out the busy results fill the gap, least disturbed first. Returns the
    quiet results in the order taken, then any busy ones kept, and {"busy": results
    set aside, "busy_kept": busy results kept}."""
    if guard is None:
        return [take() for _ in range(want)], {"busy": 0, "busy_kept": 0}
    kept: list[Any] = []
    busy: list[tuple[float, Any]] = []
    retries = 0
    before = guard.probe()
    while len(kept) < want:
        result = take()
        after = guard.probe()  # also the next sample's "before"
        if guard.quiet(before, after):
            kept.append(result)
            before = after
            continue
        busy.append((max(before, after), result))
        if retries >= max_retries:
            break
        retries += 1
        time.sleep(pause_s)
        before = guard.probe()
    busy_kept = [r for _, r in sorted(busy, key=lambda x: x[0])[: want - len(kept)]]
    return kept + busy_kept, {"busy": len(busy), "busy_kept": len(busy_kept)}


def measure_samples(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int = 3,
    repeats: int = 10,
    min_time_s: float = 0.01,
    max_inner: int = 10_000,
    slowdown: float = 1.0,
    progress: Callable[[str], None] | None = None,
    guard: QuietGuard | None = None,
    max_retries: int | None = None,
) -> tuple[list[float], int, dict[str, int]]:
    """Warm up, calibrate, then time `repeats` samples of `fn`, each checked by `guard`
    (see `guarded`; `max_retries` defaults to 3 x repeats).

    Returns (seconds per call for each sample, inner calls per sample, guard counts).
    """
    if slowdown < 1.0:
        raise ValueError(f"fault 'slowdown' must be >= 1, got {slowdown}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    once = time_calls(fn, device, 1)
    inner = max(1, min(max_inner, math.ceil(min_time_s / max(once, 1e-9))))
    done = 0

    def take() -> float:
        nonlocal done
        sample = time_calls(fn, device, inner, slowdown)
        done += 1
        if progress is not None:
            progress(f"sample {done}/{repeats}" if done <= repeats else f"sample {done} (retaking busy samples)")
        return sample

    retries = 3 * repeats if max_retries is None else max_retries
    samples, counts = guarded(take, guard, repeats, retries)
    return samples, inner, counts


# --- matmul ceiling -----------------------------------------------------------------

_CEILING: dict[tuple[str, torch.dtype, int], float] = {}


def default_ceiling_size(device: torch.device, dtype: torch.dtype) -> int:
    """Square matmul size for the ceiling: big enough to be compute-bound, small enough to be quick."""
    if device.type == "cuda":
        return 8192 if dtype in (torch.float16, torch.bfloat16) else 4096
    return 1024


def matmul_ceiling(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul on `device` in `dtype`, measured once per
    process (cached): the denominator of MFU. Counts 2 n^3 FLOPs per matmul and takes the
    fastest of 5 samples (a ceiling, not a typical value). On CUDA it runs under the
    process's current TF32 setting, like the models do."""
    device = torch.device(device)
    n = size or default_ceiling_size(device, dtype)
    key = (str(device), dtype, n)
    if key not in _CEILING:
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        samples, _, _ = measure_samples(lambda: torch.mm(a, b), device, warmup=2, repeats=5, min_time_s=0.05)
        _CEILING[key] = 2.0 * n**3 / min(samples)
    return _CEILING[key]
