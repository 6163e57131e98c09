"""Load one side of a comparison: a run directory, a results .jsonl, a pytest-benchmark .json,
or several of one kind joined by commas (pooled, as CI does with interleaved runs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqbench.bench import stats
from seqbench.errors import CompareInputError, ResultsError

FINGERPRINT = ("device_name", "torch_version")  # runs that differ here are not comparable in speed


# --- loading ------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of a comparison: its rows (dicts, None for missing) and environment."""

    source: str
    rows: list[dict[str, Any]]
    env: dict[str, Any] = field(default_factory=dict)
    parts: list[Side] = field(default_factory=list)  # the runs pooled into this side ('a,b'), in order
    warnings: list[str] = field(default_factory=list)  # what reading skipped (torn lines, incomplete cells)


def _clean(value: Any) -> Any:
    """pandas' NaN/NA for a missing cell -> None; numpy scalars -> Python scalars."""
    if isinstance(value, (list, dict, str)) or value is None:
        return value
    if hasattr(value, "item"):
        value = value.item()
    if (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def _read_jsonl(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """Rows of a run's complete cells; what the reader skipped (torn lines, …) goes to `warnings`."""
    from seqbench.bench.results.io import load_rows

    try:
        df = load_rows(path)
    except ResultsError as exc:
        raise CompareInputError(str(exc)) from None
    warnings += df.attrs.get("warnings", [])
    return [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict("records")]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CompareInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def rows_from_pytest_benchmark(doc: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows from pytest-benchmark's JSON: one per benchmark, matched by extra_info cell_id + metric.

    `stats.data` (raw seconds per call; present with --benchmark-json or
    --benchmark-save-data) become the samples. With extra_info["tokens_per_call"] the
    metric is tokens_per_s (samples tokens / seconds), otherwise time_s.
    """
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise CompareInputError(f"{source}: not pytest-benchmark JSON (no 'benchmarks' list)")
    cpu = (doc.get("machine_info") or {}).get("cpu") or {}
    rows = []
    for i, bench in enumerate(benchmarks):
        st = bench.get("stats") if isinstance(bench, dict) else None
        if not isinstance(st, dict) or "median" not in st:
            raise CompareInputError(f"{source}: benchmarks[{i}] has no stats.median")
        info = dict(bench.get("extra_info") or {})
        times = [float(t) for t in st.get("data") or []]
        tokens = info.get("tokens_per_call")
        row: dict[str, Any] = {k: info.get(k) for k in ("model", "family", "task", "measure", "batch_size",
                                                        "seq_len", "device", "dtype", "seed", "mode",
                                                        "device_name", "torch_version")}
        if tokens:
            row.update(metric="tokens_per_s", unit="tokens/s", higher_is_better=True,
                       value=tokens / st["median"], samples=[tokens / t for t in times if t > 0])
        else:
            row.update(metric="time_s", unit="s", higher_is_better=False, value=float(st["median"]),
                       samples=times)
        row.update(cell_id=str(info.get("cell_id") or bench.get("fullname") or bench.get("name")),
                   status="ok", error=None, name=bench.get("name"))
        row["device_name"] = row["device_name"] or cpu.get("brand_raw")
        rows.append(row)
    first = rows[0] if rows else {}
    env = {"device_name": first.get("device_name"), "torch_version": first.get("torch_version"),
           "pytest_benchmark": True}
    return rows, env


def _env_from_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for key in FINGERPRINT + ("cuda_version", "git_sha", "threads"):
        env[key] = next((r[key] for r in rows if r.get(key) is not None), None)
    return env


def _load_one(path: Path) -> Side:
    from seqbench.bench.results.io import load_env

    if not path.exists():
        raise CompareInputError(f"{path}: no such file or directory (give a run directory, a results "
                                ".jsonl file or a pytest-benchmark .json file)")
    warnings: list[str] = []
    try:
        if path.is_dir():
            rows, env = _read_jsonl(path, warnings), load_env(path)
        elif path.suffix == ".jsonl":
            rows = _read_jsonl(path, warnings)
            sibling = path.with_suffix(".env.json") if path.name != "results.jsonl" else path.parent / "env.json"
            env = _read_json(sibling) if sibling.is_file() else {}
        elif path.suffix == ".json":
            rows, env = rows_from_pytest_benchmark(_read_json(path), str(path))
        else:
            raise CompareInputError(f"{path}: unsupported input (expected a run directory, .jsonl or "
                                    "pytest-benchmark .json)")
    except ResultsError as exc:  # an unreadable env.json
        raise CompareInputError(str(exc)) from None
    if not rows:
        raise CompareInputError(f"{path}: holds no result rows")
    if not isinstance(env, dict):
        raise CompareInputError(f"{path}: its env.json is not a JSON object")
    missing = [i for i, r in enumerate(rows) if not r.get("cell_id")]
    if missing:
        raise CompareInputError(f"{path}: row {missing[0] + 1} has no cell_id (not seqbench results?)")
    merged = _env_from_rows(rows)
    merged.update({k: v for k, v in env.items() if v is not None})
    return Side(str(path), rows, merged, warnings=warnings)


def load_side(spec: str | Path) -> Side:
    """A run directory, results .jsonl or pytest-benchmark .json; 'a,b' pools several runs."""
    parts = [p for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise CompareInputError("empty path given as BASELINE or CURRENT")
    sides = [_load_one(Path(p.strip())) for p in parts]
    if len(sides) == 1:
        return sides[0]
    env = dict(sides[0].env)
    for s in sides[1:]:
        for key in FINGERPRINT:
            if s.env.get(key) != env.get(key):
                raise CompareInputError(f"cannot pool {sides[0].source} and {s.source}: {key} differs "
                                        f"({env.get(key)!r} vs {s.env.get(key)!r})")
    cals = [s.env.get("calibration_s") for s in sides]
    env["calibration_s"] = stats.quantile(cals) if all(c is not None for c in cals) else None
    return Side(",".join(s.source for s in sides), [r for s in sides for r in s.rows], env, sides,
                [w for s in sides for w in s.warnings])
