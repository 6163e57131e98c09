"""The tidy result row: one JSON object per line of RUN_DIR/results.jsonl.

`pd.read_json(RUN_DIR / "results.jsonl", lines=True)` loads a run; nothing else is
needed to read it. Every row has every key of ROW_FIELDS (None where it does not
apply). Measures return partial rows (`MeasureRow`s: metric, value, unit, … plus
measure-specific columns from EXTRA_FIELDS); the runner fills identity, cell and
environment fields.

Identity     run_id, cell_id, suite
Environment  device_name, torch_version, cuda_version, git_sha, threads (full copy in env.json)
Cell         model (suite name), family, impl, task (suite name; None for speed cells),
             task_kind (registry name), measure, batch_size, seq_len, device, dtype, seed,
             params (parameter count)
Measurement  metric, value, unit, higher_is_better, samples (raw list), stats (dict:
             median, iqr, mean, std, p20, p80, n …)
Outcome      status (ok | skipped | oom | error | timeout), error (message or None),
             cell_rows (how many rows the cell wrote: a shorter block is an interrupted write)
Extras       mode (inference | training), lr, step, eval_seq_len, length_factor, distance,
             position, split, best (bool: the best lr of a sweep), wall_s
Accuracy     chance (the task's chance level at eval_seq_len: the best input-blind predictor, or for
             mse the predict-the-mean baseline), ci_low, ci_high (95% interval of this seed's value
             over its n_scored positions or sequences: Wilson for fractions, mean ± 1.96 se for
             error metrics), n_scored, train_s (training seconds, evaluation excluded),
             time_limited (bool: a wall-clock budget stopped training before `steps`)
Sizing       match ("params=50000" or "state_bytes=4096": the target a model's width was fitted to),
             d_model (the width used)
"""

from __future__ import annotations

IDENTITY = ("run_id", "cell_id", "suite")
ENVIRONMENT = ("device_name", "torch_version", "cuda_version", "git_sha", "threads")
CELL = ("model", "family", "impl", "task", "task_kind", "measure", "batch_size", "seq_len",
        "device", "dtype", "seed", "params")
MEASUREMENT = ("metric", "value", "unit", "higher_is_better", "samples", "stats")
OUTCOME = ("status", "error", "cell_rows")
EXTRA_FIELDS = ("mode", "lr", "step", "eval_seq_len", "length_factor", "distance", "position",
                "split", "best", "wall_s", "chance", "ci_low", "ci_high", "n_scored", "train_s",
                "time_limited", "match", "d_model")
ROW_FIELDS = IDENTITY + ENVIRONMENT + CELL + MEASUREMENT + OUTCOME + EXTRA_FIELDS

STATUSES = ("ok", "skipped", "oom", "error", "timeout")
FAILED_STATUSES = ("oom", "error", "timeout")

# Metric names carry their unit; the unit column repeats it for plots and tables.
METRICS: dict[str, tuple[str, bool]] = {
    # name: (unit, higher_is_better)
    "accuracy": ("fraction", True),  # the task's primary accuracy (token or sequence) on eval
    "token_accuracy": ("fraction", True),
    "sequence_accuracy": ("fraction", True),
    "mse": ("mse", False),
    "nmse": ("ratio", False),
    "bits_per_char": ("bits", False),
    "eval_loss": ("nats", False),
    "train_loss": ("nats", False),
    "steps_to_90pct": ("steps", False),
    "tokens_per_s": ("tokens/s", True),
    "latency_ms": ("ms", False),  # per-token streaming step, samples = per-token times
    "latency_p50_ms": ("ms", False),
    "latency_p90_ms": ("ms", False),
    "latency_p99_ms": ("ms", False),
    "first_token_ms": ("ms", False),
    "prefill_ms": ("ms", False),
    "peak_bytes": ("bytes", False),
    "state_bytes": ("bytes", False),
    "params": ("count", False),
    "flops_per_token": ("FLOP", False),
    "achieved_flops": ("FLOP/s", True),
    "mfu": ("fraction", True),
    "matmul_flops_ceiling": ("FLOP/s", True),
    "calibration_s": ("s", False),
    "grad_norm": ("norm", True),
}


def blank_row() -> dict:
    return {k: None for k in ROW_FIELDS}
