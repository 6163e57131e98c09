"""How long cells take, before they run: per-measure cost models for the ETA and `seqbench validate`.

The cost of a model call is a fitted law per family, in seconds, with L = n_layers, B = batch size,
T = sequence length and d = d_model:

    t = c0 + c1·L + c2·L·T + c3·L·B·T·(d/64)² + c4·L·B·T²·(d/64)

(fixed overhead, per-layer overhead, per-step overhead of recurrent loops, the matmul work, and
attention's T² term), one set of coefficients for a training step (forward, backward, AdamW) and
one for a forward pass. The coefficients (FAMILY_COST, in µs) were fitted by non-negative least
squares to 24 shapes per family (B ∈ {8, 32}, T ∈ {16, 64, 256}, d ∈ {32, 64}, L ∈ {1, 2}) on the
2-core development CPU with 1 thread; median error 10-20%, worst 45%; training loops are scaled by
SUSTAINED (long loops ran slower per step than the few calls of the fit). Families not in the table
(user models, new families) use DEFAULT_COST, a slow recurrent family's, so they are not underestimated.

A measure's cost is then its number of calls of each kind (accuracy: lrs × (steps training steps +
the validation evaluations of the learning curve + the test evaluations at every length); throughput:
(warm-up + calibration + repeats) samples of at least min_time_s per mode; …) plus a per-cell
overhead. Estimates are for planning (the expected duration printed at the start of a run and by
`seqbench validate`), not measurements: the runner's ETA rescales them by how the finished cells
compare with their estimates on the machine at hand.
"""

from __future__ import annotations

import functools
import heapq
import json
import math
from collections.abc import Iterable
from typing import Any

from seqbench.bench.run.matrix import Cell

# family -> (training step, forward) coefficients c0..c4 in µs (see the module docstring)
FAMILY_COST: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "rnn": ((297.8, 559.6, 50.48, 3.373, 0.0), (127.9, 0.0, 8.439, 0.835, 0.0007751)),
    "lstm": ((1157.0, 739.1, 11.22, 4.053, 0.002173), (77.58, 262.8, 1.279, 1.091, 0.001181)),
    "gru": ((881.9, 1315.0, 172.6, 6.207, 0.0), (426.6, 81.88, 17.67, 1.796, 0.002648)),
    "transformer": ((807.6, 1659.0, 30.23, 10.41, 0.01728), (234.7, 392.9, 3.034, 2.923, 0.01137)),
    "mamba": ((2733.0, 3296.0, 48.73, 29.79, 0.02979), (231.4, 864.7, 14.59, 10.22, 0.008714)),
    "seq2seq": ((5910.0, 0.0, 314.9, 7.807, 0.1284), (1251.0, 0.0, 95.15, 1.452, 0.07311)),
}
DEFAULT_COST = FAMILY_COST["mamba"]
# the fit's shapes were timed over a few calls each; long training loops on the same machine ran about
# 1.3-1.5x slower per step (the quick suite's accuracy cells: 1.47x), so training budgets are scaled up
SUSTAINED = 1.4
CELL_OVERHEAD_S = 0.3  # building the task and model, messages between the runner and its worker
RUN_OVERHEAD_S = 30.0  # starting the workers (importing torch) and writing the report at the end
STATIC_S = 0.4  # params, FLOPs and the matmul ceiling (measured once per worker)
MEMORY_OVERHEAD_S = 0.25  # per mode: a fresh model, the reset of the peak counters
LATENCY_STEP_S = {"rnn": 3e-5, "lstm": 8e-5, "gru": 5e-5, "transformer": 4.5e-4, "mamba": 2.5e-4}  # per layer, token
LATENCY_DEFAULT_S = 2.5e-4


def _model_dims(family: str, config: dict[str, Any]) -> tuple[int, int, float]:
    """(d_model, n_layers, width factor) of a model entry: the family's defaults where the entry is silent;
    a bidirectional model or an encoder-decoder does about twice the work."""
    from seqbench import models

    cfg = {k: v for k, v in config.items() if k != "match"}
    try:
        made = models.make(family, **cfg)
        d, n = int(getattr(made, "d_model", 64)), int(getattr(made, "n_layers", 1))
        factor = 2.0 if getattr(made, "bidirectional", False) else 1.0
    except Exception:  # noqa: BLE001 - an estimate never fails a run; the suite was validated already
        d, n, factor = int(cfg.get("d_model", 64)), int(cfg.get("n_layers", 1)), 1.0
    return d, n, factor


def call_s(family: str, config: dict[str, Any], batch_size: int, seq_len: int, training: bool) -> float:
    """Seconds of one training step (training=True) or one forward pass of the model on (B, T)."""
    d, L, factor = _model_dims_cached(family, json.dumps(config, sort_keys=True, default=str))
    coef = FAMILY_COST.get(family, DEFAULT_COST)[0 if training else 1]
    B, T, w = float(batch_size), float(seq_len), d / 64.0
    us = coef[0] + coef[1] * L + coef[2] * L * T + coef[3] * L * B * T * w * w + coef[4] * L * B * T * T * w
    return factor * us * 1e-6


@functools.lru_cache(maxsize=1024)
def _model_dims_cached(family: str, config_json: str) -> tuple[int, int, float]:
    return _model_dims(family, json.loads(config_json))


@functools.lru_cache(maxsize=256)
def _task_len(kind: str, params_json: str) -> int:
    """The task's configured length, without loading real data when the suite gives seq_len."""
    params = json.loads(params_json)
    if isinstance(params.get("seq_len"), int):
        return int(params["seq_len"])
    try:
        from seqbench import tasks

        return int(tasks.build(kind, **params).seq_len)
    except Exception:  # noqa: BLE001 - missing data, an odd task: assume a mid-sized length
        return 256


def _settings(cell: Cell) -> Any:
    from seqbench.bench.measures import MEASURES

    try:
        return MEASURES[cell.measure].make_settings(cell.settings)
    except Exception:  # noqa: BLE001
        return MEASURES[cell.measure].settings()


def accuracy_s(cell: Cell, s: Any) -> float:
    T = int(s.seq_len or _task_len(cell.task_kind or "", json.dumps(cell.task_params, sort_keys=True, default=str)))
    f, cfg = cell.family, cell.model_config
    train = SUSTAINED * s.steps * call_s(f, cfg, s.batch_size, T, True)
    if getattr(s, "budget_s", None):
        train = min(train, float(s.budget_s))
    every = s.eval_every or max(1, s.steps // 10)
    eval_bs = s.eval_batch_size or s.batch_size
    n_curve = s.steps // every + 1  # validation evaluations of the learning curve (the last is the final)
    valid = n_curve * s.eval_batches * call_s(f, cfg, eval_bs, T, False)
    test = sum(s.eval_batches * call_s(f, cfg, eval_bs, max(1, round(T * k)), False) for k in s.length_factors)
    return len(s.lrs) * (train + valid + test)


def throughput_s(cell: Cell, s: Any) -> float:
    B, T = cell.batch_size or 8, cell.seq_len or 128
    total = 0.0
    for mode in s.modes:
        one = call_s(cell.family, cell.model_config, B, T, mode == "training")
        samples = s.warmup + 2 + s.repeats  # warm-up, calibration, kept samples
        total += samples * max(one, s.min_time_s) * (1.0 + 0.3 * (s.guard > 0)) + 0.2
    return total


def memory_s(cell: Cell, s: Any) -> float:
    B, T = cell.batch_size or 8, cell.seq_len or 128
    return sum(2 * call_s(cell.family, cell.model_config, B, T, m == "training") + MEMORY_OVERHEAD_S for m in s.modes)


def latency_s(cell: Cell, s: Any) -> float:
    _, L, factor = _model_dims_cached(cell.family, json.dumps(cell.model_config, sort_keys=True, default=str))
    T = (cell.seq_len or 128) + s.prefill_len
    per_token = LATENCY_STEP_S.get(cell.family, LATENCY_DEFAULT_S) * L * factor
    return (s.warmup + T * s.repeats) * per_token * (1.0 + 0.3 * (s.guard > 0)) + 0.2


def gradient_flow_s(cell: Cell, s: Any) -> float:
    T = int(s.seq_len or _task_len(cell.task_kind or "", json.dumps(cell.task_params, sort_keys=True, default=str)))
    train = SUSTAINED * s.steps * call_s(cell.family, cell.model_config, s.batch_size, T, True)
    probes = 2 * call_s(cell.family, cell.model_config, s.probe_batch_size, T, True)  # before and after training
    return train + probes


COST = {"accuracy": accuracy_s, "throughput": throughput_s, "memory": memory_s, "latency": latency_s,
        "gradient_flow": gradient_flow_s, "static": lambda cell, s: STATIC_S}


def cell_seconds(cell: Cell) -> float:
    """Estimated wall seconds of one cell on the reference CPU (1 thread)."""
    fn = COST.get(cell.measure)
    if fn is None:
        return CELL_OVERHEAD_S + 1.0
    return CELL_OVERHEAD_S + fn(cell, _settings(cell))


def cell_estimates(cells: Iterable[Cell]) -> dict[str, float]:
    """cell_id -> estimated seconds, for the runner's Progress."""
    return {c.cell_id: cell_seconds(c) for c in cells}


def makespan(durations: list[float], parallel: int) -> float:
    """Wall time of running `durations` in order on `parallel` workers, each taking the next job when free."""
    workers = [0.0] * max(1, parallel)
    for d in durations:
        heapq.heapreplace(workers, workers[0] + d)
    return max(workers) if durations else 0.0


def suite_seconds(cells: list[Cell], parallel: int) -> tuple[float, dict[str, float]]:
    """(estimated wall seconds with `parallel` workers, estimated cell-seconds per measure)."""
    per = [cell_seconds(c) for c in cells]
    by_measure: dict[str, float] = {}
    for c, t in zip(cells, per):
        by_measure[c.measure] = by_measure.get(c.measure, 0.0) + t
    return makespan(per, parallel), by_measure


def describe(seconds: float) -> str:
    """'7m30s', '45s', '1h05m'."""
    seconds = max(0, int(math.ceil(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
