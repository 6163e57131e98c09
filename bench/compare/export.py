"""Keep and export runs: `baseline save` and the github-action-benchmark format."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from seqbench.bench import stats
from seqbench.bench.compare.judge import (
    DEFAULT_METRICS,
    _extras,
    _group,
    _higher_is_better,
    _samples,
    _value,
    cell_label,
)
from seqbench.bench.compare.load import _load_one, load_side
from seqbench.bench.compare.render import metric_text
from seqbench.errors import CompareInputError

# --- baseline save and export -------------------------------------------------------------------


def save_baseline(run_dir: str | Path, name: str, root: str | Path = "results/baselines") -> Path:
    """Copy a run's rows to ROOT/<machine_class>/NAME.jsonl (+ NAME.env.json beside it)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise CompareInputError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it becomes a file name)")
    run = Path(run_dir)
    if not run.is_dir():
        raise CompareInputError(f"{run}: not a run directory")
    side = _load_one(run)
    machine = side.env.get("machine_class")
    if not machine:
        raise CompareInputError(f"{run}: env.json has no machine_class (run it with seqbench run)")
    out = Path(root) / str(machine) / f"{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = (run / "results.jsonl").read_text(encoding="utf-8")
    out.write_text(rows if rows.endswith("\n") else rows + "\n", encoding="utf-8")
    out.with_suffix(".env.json").write_text(json.dumps(side.env, indent=2, default=str) + "\n", encoding="utf-8")
    return out


def export_github_action_benchmark(run_dir: str | Path, direction: str = "bigger",
                                   metrics: Iterable[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """Entries {name, unit, value, range, extra} for benchmark-action/github-action-benchmark.

    One file per direction, because the action takes one tool per file:
    direction "bigger" -> the higher-is-better metrics (tokens_per_s, accuracy) for
    `tool: customBiggerIsBetter`; "smaller" -> the lower-is-better ones (latency_*,
    time_s, peak_bytes) for `tool: customSmallerIsBetter`.
    """
    if direction not in ("bigger", "smaller"):
        raise CompareInputError(f"--direction {direction!r}: use bigger or smaller")
    side = load_side(run_dir)
    groups = _group(side.rows, metrics)
    out = []
    for (cell_id, metric, *_), rows in groups.items():
        row = rows[0]
        if _higher_is_better(row) != (direction == "bigger"):
            continue
        value = _value(rows)
        if value is None:
            continue
        entry: dict[str, Any] = {"name": f"{cell_label(row)} {metric_text(metric, _extras(row))}",
                                 "unit": row.get("unit") or "", "value": value}
        samples = _samples(rows)
        if len(samples) >= 2:
            entry["range"] = f"± {(stats.quantile(samples, 0.75) - stats.quantile(samples, 0.25)) / 2:.4g}"
        entry["extra"] = "\n".join(f"{k}: {row.get(k)}" for k in ("cell_id", "model", "task", "measure", "batch_size",
                                                                   "seq_len", "device", "dtype", "device_name",
                                                                   "git_sha") if row.get(k) is not None)
        out.append(entry)
    return out
