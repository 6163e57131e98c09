"""Compare two runs and gate CI on real regressions of speed, memory or accuracy — not on noise.

    seqbench compare BASELINE CURRENT [--fail METRIC:±N%]… [--format table|markdown|json]
                     [--allow-env-change] [--normalize] [--strict] [--accuracy-drop 0.02]
    seqbench baseline save RUN_DIR --name NAME
    seqbench export --format github-action-benchmark RUN_DIR [--direction bigger|smaller]

BASELINE and CURRENT are each a run directory, a results.jsonl file (e.g. a saved
baseline, results/baselines/<machine_class>/NAME.jsonl), or a pytest-benchmark JSON
file (`--benchmark-json`, or `--benchmark-autosave --benchmark-save-data`); several of
one kind joined by commas (`runA,runB`) are pooled into one side, as CI does with
interleaved runs. Rows match on MATCH_KEYS; rows present on one side only are listed.

Compared by default (DEFAULT_METRICS): tokens_per_s, per-token latency (latency_ms
samples, latency_p50_ms, latency_p99_ms), pytest-benchmark times (time_s), peak_bytes
and final accuracy (metric accuracy, best lr of a sweep). Not gated: learning curves
(split "curve"), rows of a non-best lr, per-position and per-distance breakdowns.
`--fail METRIC:±N%` adds METRIC to the compared set and sets its threshold.

Verdicts (bench.stats has the timing statistics):
  timing    regression when the ratio of medians is past the threshold (default 10%
            CPU, 5% CUDA) AND the Mann–Whitney U test is significant after Holm
            correction across all timing comparisons AND the bootstrap 95% interval
            excludes the threshold; pass when the interval lies inside the tolerance;
            otherwise inconclusive. Pooled interleaved runs (a1,a2 vs b1,b2): a regression
            must also show in every pair (a_i, b_i) on its own. Different device_name or
            torch_version on the two sides: "not comparable" unless --allow-env-change.
            A warning when nearly all timings moved the same way (the machine changed speed)
            or when the samples are too few for any test to survive Holm correction.
  memory    peak_bytes: CUDA fails above baseline x 1.02 + 1 MiB (allocator counts are
            deterministic), CPU above baseline x 1.10 + 16 MiB (high-water mark).
  accuracy  fails below baseline - 0.02 absolute (--accuracy-drop; deterministic on CPU
            with fixed seeds).
  failed    the cell errored, ran out of memory or timed out on the current side only.

Exit code: 0 pass, 1 a regression or a failed cell, 2 bad input (CompareInputError);
inconclusive is 0 unless --strict.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import stats
from bench.schema import FAILED_STATUSES, METRICS

MiB = 1024 * 1024
MATCH_KEYS = ("cell_id", "metric", "mode", "position", "distance", "step", "split", "eval_seq_len",
              "length_factor", "lr")
EXTRA_KEYS = MATCH_KEYS[2:]
TIMING_METRICS = ("tokens_per_s", "latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
                  "first_token_ms", "prefill_ms", "time_s")
MEMORY_METRICS = ("peak_bytes",)
ACCURACY_METRICS = ("accuracy", "token_accuracy", "sequence_accuracy")
DEFAULT_METRICS = ("tokens_per_s", "latency_ms", "latency_p50_ms", "latency_p99_ms", "time_s", "peak_bytes",
                   "accuracy")
TIMING_THRESHOLD = {"cpu": 0.10, "cuda": 0.05}  # tolerated relative slowdown
MEMORY_TOLERANCE = {"cpu": (0.10, 16 * MiB), "cuda": (0.02, 1 * MiB)}  # (relative, absolute bytes)
ACCURACY_DROP = 0.02  # tolerated absolute drop
MIN_SAMPLES = 3  # fewer raw samples on a side: no significance test, a point comparison only
MIN_TAIL = 10  # a tail quantile q needs n * (1 - q) >= MIN_TAIL samples beyond it (p99: n >= 1000)
FINGERPRINT = ("device_name", "torch_version")
Rows = list[dict[str, Any]]
Index = dict[tuple, Rows]  # match key -> the rows of one side with that key
SEVERITY = ("failed", "regression", "inconclusive", "not comparable", "improvement", "pass")


class CompareInputError(ValueError):
    """Bad input to compare, baseline or export; the message is one line and the CLI exits 2."""


# --- loading ------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of a comparison: its rows (dicts, None for missing) and environment."""

    source: str
    rows: list[dict[str, Any]]
    env: dict[str, Any] = field(default_factory=dict)
    parts: list[Side] = field(default_factory=list)  # the runs pooled into this side ('a,b'), in order


def _clean(value: Any) -> Any:
    """pandas' NaN/NA for a missing cell -> None; numpy scalars -> Python scalars."""
    if isinstance(value, (list, dict, str)) or value is None:
        return value
    if hasattr(value, "item"):
        value = value.item()
    if (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from bench.results import load_rows

    try:
        df = load_rows(path)
    except ValueError as exc:  # bench.results' error for a missing or corrupt results file
        raise CompareInputError(str(exc)) from None
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
    from bench.results import load_env

    if not path.exists():
        raise CompareInputError(f"{path}: no such file or directory (give a run directory, a results "
                                ".jsonl file or a pytest-benchmark .json file)")
    try:
        if path.is_dir():
            rows, env = _read_jsonl(path), load_env(path)
        elif path.suffix == ".jsonl":
            rows = _read_jsonl(path)
            sibling = path.with_suffix(".env.json") if path.name != "results.jsonl" else path.parent / "env.json"
            env = _read_json(sibling) if sibling.is_file() else {}
        elif path.suffix == ".json":
            rows, env = rows_from_pytest_benchmark(_read_json(path), str(path))
        else:
            raise CompareInputError(f"{path}: unsupported input (expected a run directory, .jsonl or "
                                    "pytest-benchmark .json)")
    except CompareInputError:
        raise
    except ValueError as exc:  # bench.results' error for an unreadable env.json
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
    return Side(str(path), rows, merged)


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
    return Side(",".join(s.source for s in sides), [r for s in sides for r in s.rows], env, sides)


# --- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailRule:
    """One `--fail METRIC:±N%`: the tolerated change of METRIC in its bad direction."""

    metric: str
    amount: float  # fraction (0.10 for 10%); for accuracy metrics an absolute drop
    sign: int  # +1 / -1 as written, 0 when unsigned
    spec: str


_FAIL_RE = re.compile(r"^([A-Za-z0-9_]+):([+-]?)(\d+(?:\.\d*)?|\.\d+)(%?)$")


def parse_fail(spec: str) -> FailRule:
    """'tokens_per_s:-10%' -> FailRule('tokens_per_s', 0.10, -1); 'accuracy:-0.03' (absolute) too."""
    m = _FAIL_RE.match(spec.strip())
    if not m:
        raise CompareInputError(f"--fail {spec!r}: expected METRIC:±N%, e.g. tokens_per_s:-10% or "
                                "latency_p99_ms:+15%")
    metric, sign, number, pct = m.groups()
    amount = float(number) / 100.0 if pct else float(number)
    if not pct and metric not in ACCURACY_METRICS:
        raise CompareInputError(f"--fail {spec!r}: give a percentage for {metric} (e.g. {metric}:{sign or '+'}"
                                f"{number}%); a bare number is an absolute drop for accuracy metrics only")
    return FailRule(metric, amount, {"+": 1, "-": -1, "": 0}[sign], spec)


def _higher_is_better(row: dict[str, Any]) -> bool:
    if row.get("higher_is_better") is not None:
        return bool(row["higher_is_better"])
    if row.get("metric") in METRICS:
        return METRICS[row["metric"]][1]
    return False


def _on_cuda(row: dict[str, Any]) -> bool:
    return str(row.get("device") or "").startswith("cuda")


def _check_sign(rule: FailRule, higher: bool) -> None:
    bad = -1 if higher else 1
    if rule.sign and rule.sign != bad:
        word = "drop" if higher else "rise"
        raise CompareInputError(f"--fail {rule.spec!r}: {rule.metric} is {'higher' if higher else 'lower'}-is-better, "
                                f"so a regression is a {word}: use {rule.metric}:{'-' if higher else '+'}"
                                f"{rule.amount * 100:g}%")


# --- comparing --------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The verdict for one (cell, metric, extras) present on both sides."""

    cell_id: str
    label: str
    metric: str
    extras: dict[str, Any]
    kind: str  # timing | memory | accuracy | value | status
    baseline: float | None
    current: float | None
    change: float | None  # relative (current / baseline - 1), or absolute for accuracy
    ci_low: float | None = None  # bootstrap 95% interval of the change (relative)
    ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm across the timing comparisons
    threshold: str = ""
    verdict: str = "pass"
    note: str = ""
    unit: str | None = None
    higher_is_better: bool | None = None


@dataclass
class CompareResult:
    baseline: str
    current: str
    comparisons: list[Comparison]
    only_baseline: list[dict[str, Any]]
    only_current: list[dict[str, Any]]
    warnings: list[str]
    strict: bool = False

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in SEVERITY}
        for c in self.comparisons:
            out[c.verdict] += 1
        return out

    @property
    def exit_code(self) -> int:
        n = self.counts()
        if n["regression"] or n["failed"]:
            return 1
        if self.strict and n["inconclusive"]:
            return 1
        return 0


def _key(row: dict[str, Any]) -> tuple:
    """The match key. The best lr of a sweep is matched whatever lr won (and however many
    steps a time cap allowed): the gate compares the best final accuracy of each side."""
    if row.get("best") is True:
        return tuple(None if k in ("lr", "step") else row.get(k) for k in MATCH_KEYS)
    return tuple(row.get(k) for k in MATCH_KEYS)


def cell_label(row: dict[str, Any]) -> str:
    """'throughput lstm B=8 T=64 inference [1a2b3c4d]': enough to find the cell."""
    parts = [str(row.get("measure") or ""), str(row.get("model") or "")]
    if row.get("task"):
        parts.append(str(row["task"]))
    if row.get("batch_size") is not None:
        parts.append(f"B={int(row['batch_size'])}")
    if row.get("seq_len") is not None:
        parts.append(f"T={int(row['seq_len'])}")
    if row.get("mode"):
        parts.append(str(row["mode"]))
    for k in ("eval_seq_len", "length_factor"):
        if row.get(k) is not None:
            parts.append(f"{k}={row[k]:g}")
    if row.get("dtype") and row.get("dtype") != "float32":
        parts.append(str(row["dtype"]))
    text = " ".join(p for p in parts if p)
    return f"{text} [{str(row.get('cell_id'))[:8]}]" if text else str(row.get("cell_id"))


def is_gated(row: dict[str, Any], metrics: Iterable[str]) -> bool:
    """True for the rows compare judges: a compared metric, a final (not curve / per-lr /
    per-position / per-distance) value, status ok."""
    if row.get("metric") not in set(metrics) or row.get("status") not in (None, "ok"):
        return False
    if row.get("split") == "curve" or row.get("best") is False:
        return False
    if row.get("lr") is not None and row.get("best") is not True:
        return False
    return row.get("position") is None and row.get("distance") is None


def _group(rows: list[dict[str, Any]], metrics: Iterable[str]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if is_gated(r, metrics):
            out.setdefault(_key(r), []).append(r)
    return out


def _samples(rows: list[dict[str, Any]]) -> list[float]:
    return [float(x) for r in rows for x in (r.get("samples") or []) if x is not None]


def _value(rows: list[dict[str, Any]]) -> float | None:
    vals = [float(r["value"]) for r in rows if r.get("value") is not None]
    return stats.quantile(vals) if vals else None


def _timing_samples(key: tuple, rows: list[dict[str, Any]], index: dict[tuple, list[dict[str, Any]]]
                    ) -> tuple[list[float], float]:
    """Raw samples for a timing row and the quantile to compare: its own samples (median),
    or for latency_pNN_ms without samples the per-token times of its latency_p50_ms (or
    latency_ms) sibling at quantile NN."""
    own = _samples(rows)
    if own:
        return own, 0.5
    m = re.fullmatch(r"latency_p(\d+)_ms", key[1] or "")
    if m:
        for metric in ("latency_p50_ms", "latency_ms"):  # the rows that carry every per-token time
            sibling = _samples(index.get((key[0], metric) + key[2:], []))
            if sibling:
                return sibling, int(m.group(1)) / 100.0
    return [], 0.5


def _env_warnings(b: Side, c: Side, normalize: bool) -> tuple[list[str], bool]:
    """(warnings, comparable) from the device_name / torch_version fingerprints."""
    warnings, comparable = [], True
    for key in FINGERPRINT:
        bv, cv = b.env.get(key), c.env.get(key)
        if bv is None or cv is None:
            warnings.append(f"{key} unknown on the {'baseline' if bv is None else 'current'} side: "
                            "timings are compared as if the environments matched")
        elif bv != cv:
            comparable = False
            warnings.append(f"environment differs: {key} {bv!r} (baseline) vs {cv!r} (current)")
    if normalize and b.env.get("machine_class") != c.env.get("machine_class"):
        warnings.append(f"--normalize across machine classes {b.env.get('machine_class')!r} and "
                        f"{c.env.get('machine_class')!r}: calibration corrects clock speed, not architecture")
    return warnings, comparable


def _speed_factor(b: Side, c: Side) -> float:
    """How much faster the current machine ran the calibration workload (baseline_s / current_s)."""
    cb, cc = b.env.get("calibration_s"), c.env.get("calibration_s")
    for side, cal in (("baseline", cb), ("current", cc)):
        if not cal or cal <= 0:
            raise CompareInputError(f"--normalize needs calibration_s in the {side}'s env.json "
                                    f"({b.source if side == 'baseline' else c.source}); rerun with seqbench run")
    return float(cb) / float(cc)


def _fmt_limit(amount: float, higher: bool) -> str:
    return f"{'-' if higher else '+'}{amount * 100:g}%"


def _timing(key: tuple, brows: Rows, crows: Rows, bidx: Index, cidx: Index, rule: FailRule | None, speed: float,
            comparable: bool) -> tuple[Comparison, stats.RatioTest | None, float]:
    row = brows[0]
    higher = _higher_is_better(row)
    if rule is not None:
        _check_sign(rule, higher)
    threshold = rule.amount if rule is not None else TIMING_THRESHOLD["cuda" if _on_cuda(crows[0]) else "cpu"]
    bs, q = _timing_samples(key, brows, bidx)
    cs, qc = _timing_samples(key, crows, cidx)
    scale = 1.0 / speed if higher else speed  # normalized current = what the baseline machine would show
    cs = [x * scale for x in cs]
    comp = Comparison(key[0], cell_label(row), key[1], _extras(row), "timing", None, None, None,
                      threshold=_fmt_limit(threshold, higher), unit=row.get("unit"), higher_is_better=higher)
    test = None
    n_min = MIN_SAMPLES if q == 0.5 else max(MIN_SAMPLES, math.ceil(MIN_TAIL / (1.0 - q)))
    if len(bs) >= n_min and len(cs) >= n_min and q == qc:
        test = stats.ratio_test(bs, cs, q=q)
        comp.baseline, comp.current = stats.quantile(bs, q), stats.quantile(cs, q)
        comp.ci_low, comp.ci_high, comp.p_value = test.ci_low - 1.0, test.ci_high - 1.0, test.p_value
    elif bs and cs and q == qc:
        # a tail quantile of too few samples is its last few values: report it, never gate on it
        comp.baseline, comp.current = stats.quantile(bs, q), stats.quantile(cs, q)
        comp.note = (f"p{round(q * 100)} of {min(len(bs), len(cs))} samples (< {n_min}): "
                     "point comparison, no significance test")
    else:
        bv, cv = _value(brows), _value(crows)
        comp.baseline, comp.current = bv, None if cv is None else cv * scale
        comp.note = f"fewer than {MIN_SAMPLES} raw samples: point comparison, no significance test"
    if comp.baseline and comp.current is not None:
        comp.change = comp.current / comp.baseline - 1.0
    if not comparable:
        comp.verdict = "not comparable"
        comp.note = "environments differ (use --allow-env-change to judge anyway)"
    elif test is None:
        past = comp.change is not None and (comp.change < -threshold if higher else comp.change > threshold)
        comp.verdict = "inconclusive" if past or comp.change is None else "pass"
    return comp, test, threshold


def _memory(brows: Rows, crows: Rows, rule: FailRule | None) -> Comparison:
    row = brows[0]
    rel, slack = MEMORY_TOLERANCE["cuda" if _on_cuda(crows[0]) else "cpu"]
    if rule is not None:
        _check_sign(rule, False)
        rel = rule.amount
    b, c = _value(brows), _value(crows)
    comp = Comparison(row["cell_id"], cell_label(row), row["metric"], _extras(row), "memory", b, c, None,
                      threshold=f"+{rel * 100:g}% + {slack / MiB:g} MiB", unit=row.get("unit"),
                      higher_is_better=False)
    if b is None or c is None:
        comp.verdict, comp.note = "inconclusive", "value missing"
        return comp
    comp.change = c / b - 1.0 if b else None
    if c > b * (1.0 + rel) + slack:
        comp.verdict = "regression"
    elif c < b / (1.0 + rel) - slack:
        comp.verdict = "improvement"
    return comp


def _accuracy(brows: Rows, crows: Rows, drop: float) -> Comparison:
    row = brows[0]
    b, c = _value(brows), _value(crows)
    comp = Comparison(row["cell_id"], cell_label(row), row["metric"], _extras(row), "accuracy", b, c, None,
                      threshold=f"-{drop:g}", unit=row.get("unit"), higher_is_better=True)
    if b is None or c is None:
        comp.verdict, comp.note = "inconclusive", "value missing"
        return comp
    comp.change = c - b
    eps = 1e-12  # float noise of a deterministic value
    if c < b - drop - eps:
        comp.verdict = "regression"
    elif c > b + drop + eps:
        comp.verdict = "improvement"
    return comp


def _value_comparison(brows: Rows, crows: Rows, rule: FailRule) -> Comparison:
    """A deterministic metric named by --fail (state_bytes, params, mse, …): relative change."""
    row = brows[0]
    higher = _higher_is_better(row)
    _check_sign(rule, higher)
    b, c = _value(brows), _value(crows)
    comp = Comparison(row["cell_id"], cell_label(row), row["metric"], _extras(row), "value", b, c, None,
                      threshold=_fmt_limit(rule.amount, higher), unit=row.get("unit"), higher_is_better=higher)
    if b is None or c is None or b == 0:
        comp.verdict, comp.note = "inconclusive", "value missing or zero baseline"
        return comp
    comp.change = c / b - 1.0
    if (comp.change < -rule.amount) if higher else (comp.change > rule.amount):
        comp.verdict = "regression"
    return comp


def _extras(row: dict[str, Any]) -> dict[str, Any]:
    """The extra columns that are part of the row's match key (not lr/step of a best-lr row)."""
    return {k: v for k, v in zip(MATCH_KEYS, _key(row)) if k in EXTRA_KEYS and v is not None}


def _failed_cells(b: Side, c: Side) -> tuple[list[Comparison], set[str]]:
    """Cells that failed (error / oom / timeout) on the current side and ran on the baseline."""
    base_ok = {r["cell_id"] for r in b.rows if r.get("status") in (None, "ok")}
    base_failed = {r["cell_id"] for r in b.rows if r.get("status") in FAILED_STATUSES}
    out, seen = [], set()
    for r in c.rows:
        cid = r["cell_id"]
        if r.get("status") not in FAILED_STATUSES or cid in seen:
            continue
        seen.add(cid)
        if cid in base_ok:
            out.append(Comparison(cid, cell_label(r), "-", {}, "status", None, None, None, verdict="failed",
                                  note=f"{r['status']}: {r.get('error') or ''}".strip()))
        elif cid in base_failed:
            out.append(Comparison(cid, cell_label(r), "-", {}, "status", None, None, None, verdict="inconclusive",
                                  note=f"failed on both sides ({r['status']}: {r.get('error') or ''})"))
    return out, seen


def _drift_warning(timings: list[Comparison], min_count: int = 5, shift: float = 0.05) -> str | None:
    """A warning when nearly every timing moved the same way: the machine's speed changed
    between the runs (load, clock, thermal) as much as the code did, or a change touched
    every model; verdicts are unchanged, the reader should look twice."""
    slower = []  # > 0: slower in the metric's own terms
    for c in timings:
        if c.change is not None and math.isfinite(c.change):
            slower.append(-c.change if c.higher_is_better else c.change)
    if len(slower) < min_count:
        return None
    median = stats.quantile(slower)
    same_way = sum((x > 0) == (median > 0) for x in slower) / len(slower)
    if abs(median) > shift and same_way >= 0.8:
        word = "slower" if median > 0 else "faster"
        return (f"{same_way:.0%} of {len(slower)} timings moved the same way (median {abs(median):.0%} {word}): "
                "the machine may have changed speed between the runs; compare interleaved runs (a,b) or rerun")
    return None


def _check_pairs(comp: Comparison, key: tuple, baseline: Side, current: Side, metrics: Iterable[str],
                 threshold: float, speed: float) -> None:
    """Pooled interleaved runs (a1,a2 vs b1,b2): a timing regression must show in every pair
    (a_i, b_i) on its own, else it is downgraded to inconclusive — a load spike during one
    run must not fail the gate."""
    if len(baseline.parts) < 2 or len(baseline.parts) != len(current.parts):
        return
    higher = bool(comp.higher_is_better)
    changes = []
    for b, c in zip(baseline.parts, current.parts):
        bidx, cidx = _group(b.rows, metrics), _group(c.rows, metrics)
        bs, q = _timing_samples(key, bidx.get(key, []), bidx)
        cs, _ = _timing_samples(key, cidx.get(key, []), cidx)
        if not bs or not cs:
            continue
        scale = 1.0 / speed if higher else speed
        changes.append(stats.quantile(cs, q) * scale / stats.quantile(bs, q) - 1.0)
    if any((x >= -threshold) if higher else (x <= threshold) for x in changes):
        comp.verdict = "inconclusive"
        comp.note = ("not reproduced in every interleaved pair (pair changes "
                     + ", ".join(f"{x * 100:+.1f}%" for x in changes) + ")")


def _busy_kept(rows: Rows) -> dict[tuple, int]:
    """(cell_id, mode) -> samples the quiet guard could not retake (stats.busy_kept of the
    throughput / latency rows; bench.timing.QuietGuard)."""
    out: dict[tuple, int] = {}
    for r in rows:
        n = (r.get("stats") or {}).get("busy_kept") or 0
        if n:
            k = (r.get("cell_id"), r.get("mode"))
            out[k] = max(out.get(k, 0), int(n))
    return out


def _check_busy(comp: Comparison, key: tuple, busy: tuple[dict[tuple, int], dict[tuple, int]]) -> None:
    """A regression measured while the machine was busy (the guard ran out of retries on
    either side) is downgraded to inconclusive: the slowdown may be the machine's."""
    k = (key[0], key[MATCH_KEYS.index("mode")])
    counts = [side.get(k, 0) for side in busy]
    if any(counts):
        comp.verdict = "inconclusive"
        comp.note = (f"samples taken while the machine was busy (baseline {counts[0]}, current {counts[1]}): "
                     "rerun on a quieter machine")


def _listing(rows: list[dict[str, Any]]) -> dict[str, Any]:
    r = rows[0]
    return {"cell_id": r["cell_id"], "label": cell_label(r), "metric": r.get("metric"), "extras": _extras(r),
            "value": _value(rows)}


def compare(baseline: Side, current: Side, *, fail: Iterable[FailRule] = (), allow_env_change: bool = False,
            normalize: bool = False, strict: bool = False, accuracy_drop: float = ACCURACY_DROP,
            metrics: Iterable[str] = DEFAULT_METRICS, alpha: float = stats.ALPHA) -> CompareResult:
    """Judge every (cell, metric) present on both sides; list the rows present on one side only."""
    if accuracy_drop < 0:
        raise CompareInputError(f"--accuracy-drop must be >= 0, got {accuracy_drop}")
    rules = {r.metric: r for r in fail}
    metrics = tuple(dict.fromkeys([*metrics, *rules]))
    warnings, comparable = _env_warnings(baseline, current, normalize)
    comparable = comparable or allow_env_change
    if allow_env_change and not all(baseline.env.get(k) == current.env.get(k) for k in FINGERPRINT):
        warnings.append("--allow-env-change: timings across different environments are judged anyway")
    speed = 1.0
    if normalize:
        speed = _speed_factor(baseline, current)
        warnings.append(f"--normalize: current machine ran the calibration workload {speed:.3f}x as fast; "
                        "timings rescaled to the baseline machine")
    failed, failed_ids = _failed_cells(baseline, current)
    bidx = _group(baseline.rows, metrics)
    cidx = _group(current.rows, metrics)
    comparisons: list[Comparison] = list(failed)
    timed: list[tuple[Comparison, stats.RatioTest, float]] = []
    busy = (_busy_kept(baseline.rows), _busy_kept(current.rows))
    keys: dict[int, tuple] = {}  # id(comparison) -> its match key
    for key, brows in bidx.items():
        crows = cidx.get(key)
        if crows is None:
            continue
        metric = key[1]
        rule = rules.get(metric)
        if metric in ACCURACY_METRICS:
            drop = rule.amount if rule is not None else accuracy_drop
            if rule is not None:
                _check_sign(rule, True)
            comparisons.append(_accuracy(brows, crows, drop))
        elif metric in MEMORY_METRICS:
            comparisons.append(_memory(brows, crows, rule))
        elif metric in TIMING_METRICS:
            comp, test, threshold = _timing(key, brows, crows, bidx, cidx, rule, speed, comparable)
            comparisons.append(comp)
            keys[id(comp)] = key
            if test is not None and comparable:
                timed.append((comp, test, threshold))
        elif rule is not None:
            comparisons.append(_value_comparison(brows, crows, rule))
    adjusted = stats.holm([t.p_value for _, t, _ in timed]) if timed else []
    if timed:
        n_min = min(min(t.n_baseline, t.n_current) for _, t, _ in timed)
        if stats.min_p_value(n_min, n_min) * len(timed) >= alpha:
            warnings.append(f"{len(timed)} timing metrics with as few as {n_min} samples per side: no difference "
                            "can be significant after Holm correction; raise the measures' repeats or pool runs "
                            "(BASELINE a,b)")
    for (comp, test, threshold), p_adj in zip(timed, adjusted):
        comp.p_adjusted = p_adj
        comp.verdict = stats.timing_verdict(test, p_adj, threshold, bool(comp.higher_is_better), alpha)
        if comp.verdict == "regression":
            _check_pairs(comp, keys[id(comp)], baseline, current, metrics, threshold, speed)
        if comp.verdict == "regression":
            _check_busy(comp, keys[id(comp)], busy)
        if comp.verdict == "inconclusive":
            comp.note = comp.note or "too noisy to tell: the 95% interval straddles the threshold"
    drift = _drift_warning([c for c in comparisons if c.kind == "timing" and c.verdict != "not comparable"])
    if drift:
        warnings.append(drift)
    only_b = [_listing(rows) for k, rows in bidx.items() if k not in cidx and k[0] not in failed_ids]
    only_c = [_listing(rows) for k, rows in cidx.items() if k not in bidx and k[0] not in failed_ids]
    comparisons.sort(key=lambda c: (SEVERITY.index(c.verdict), c.label, c.metric))
    return CompareResult(baseline.source, current.source, comparisons, only_b, only_c, warnings, strict)


# --- rendering -------------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str | None) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / MiB:.1f} MiB"
    if unit == "fraction":
        return f"{value:.3f}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.4g}"


def _fmt_change(c: Comparison) -> str:
    if c.change is None:
        return "-"
    return f"{c.change:+.3f}" if c.kind == "accuracy" else f"{c.change * 100:+.1f}%"


def _fmt_ci(c: Comparison) -> str:
    if c.ci_low is None or c.ci_high is None:
        return "-"
    return f"[{c.ci_low * 100:+.1f}%, {c.ci_high * 100:+.1f}%]"


def _fmt_p(c: Comparison) -> str:
    return "-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}"


def metric_text(metric: str, extras: dict[str, Any]) -> str:
    """'accuracy split=eval': the metric plus the extras the cell label does not already show."""
    shown = {k: v for k, v in extras.items() if k not in ("mode", "eval_seq_len", "length_factor")
             and not (k == "split" and v == "eval")}
    extra = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    return f"{metric} {extra}".strip()


HEADER = ("verdict", "cell", "metric", "baseline", "current", "change", "95% CI", "p (Holm)", "limit", "note")


def _short(text: str, n: int = 100) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _cells(c: Comparison) -> tuple[str, ...]:
    return (c.verdict, c.label, metric_text(c.metric, c.extras), fmt_value(c.baseline, c.unit),
            fmt_value(c.current, c.unit), _fmt_change(c), _fmt_ci(c), _fmt_p(c), c.threshold, _short(c.note))


def summary_line(result: CompareResult) -> str:
    n = result.counts()
    parts = [f"{n[v]} {v}" for v in SEVERITY if n[v]]
    status = "FAIL" if result.exit_code else "PASS"
    return f"{status}: {len(result.comparisons)} compared — " + (", ".join(parts) or "nothing matched")


def render_table(result: CompareResult) -> str:
    lines = [f"baseline: {result.baseline}", f"current:  {result.current}", summary_line(result)]
    lines += [f"warning: {w}" for w in result.warnings]
    rows = [HEADER] + [_cells(c) for c in result.comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines.append("")
    for i, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for title, listing in (("only in baseline", result.only_baseline), ("only in current", result.only_current)):
        if listing:
            lines.append(f"\n{title} ({len(listing)}):")
            lines += [f"  {x['label']}  {x['metric']}" for x in listing]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(comparisons: list[Comparison]) -> list[str]:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    icon = {"failed": "❌", "regression": "❌", "inconclusive": "⚠️", "not comparable": "⚠️",
            "improvement": "🚀", "pass": "✅"}
    for c in comparisons:
        cells = list(_cells(c))
        cells[0] = f"{icon[c.verdict]} {c.verdict}"
        out.append("| " + " | ".join(_md_escape(x) for x in cells) + " |")
    return out


def render_markdown(result: CompareResult) -> str:
    """A PR comment: summary, warnings, the table of what needs attention, the passes folded."""
    lines = ["## seqbench compare", "", f"**{summary_line(result)}**", "",
             f"baseline `{result.baseline}` → current `{result.current}`", ""]
    lines += [f"> ⚠️ {_md_escape(w)}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    attention = [c for c in result.comparisons if c.verdict not in ("pass", "improvement")]
    rest = [c for c in result.comparisons if c.verdict in ("pass", "improvement")]
    lines += _md_table(attention if attention else rest)
    if attention and rest:
        lines += ["", f"<details><summary>{len(rest)} passing</summary>", ""] + _md_table(rest) + ["", "</details>"]
    for title, listing in (("Only in baseline", result.only_baseline), ("Only in current", result.only_current)):
        if listing:
            lines += ["", f"**{title}** ({len(listing)}):", ""]
            lines += [f"- `{_md_escape(x['label'])}` {x['metric']}" for x in listing]
    lines += ["", ("<sub>timing: regression = past the limit AND Mann–Whitney p (Holm) < 0.05 AND the 95% "
                   "bootstrap interval past the limit; inconclusive = too noisy to tell.</sub>")]
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def render_json(result: CompareResult) -> str:
    doc = {"baseline": result.baseline, "current": result.current, "exit_code": result.exit_code,
           "summary": result.counts(), "warnings": result.warnings,
           "comparisons": [asdict(c) for c in result.comparisons],
           "only_baseline": result.only_baseline, "only_current": result.only_current}
    return json.dumps(_json_safe(doc), indent=2)


RENDER = {"table": render_table, "markdown": render_markdown, "json": render_json}


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


# --- CLI ----------------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    rules = [parse_fail(s) for s in args.fail]
    result = compare(load_side(args.baseline), load_side(args.current), fail=rules,
                     allow_env_change=args.allow_env_change, normalize=args.normalize, strict=args.strict,
                     accuracy_drop=args.accuracy_drop)
    print(RENDER[args.format](result))
    return result.exit_code


def cmd_baseline_save(args: argparse.Namespace) -> int:
    out = save_baseline(args.run_dir, args.name, args.root)
    print(f"baseline saved: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    entries = export_github_action_benchmark(args.run_dir, args.direction)
    text = json.dumps(entries, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `compare`, `baseline save` and `export` to the seqbench CLI."""
    p = subparsers.add_parser("compare", help="compare two runs; exit 1 on a regression",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", help="run dir, results .jsonl, pytest-benchmark .json; 'a,b' pools runs")
    p.add_argument("current", help="same kinds as BASELINE")
    p.add_argument("--fail", action="append", default=[], metavar="METRIC:±N%",
                   help="threshold of one metric, e.g. tokens_per_s:-10%% or latency_p99_ms:+15%% (repeatable)")
    p.add_argument("--format", choices=sorted(RENDER), default="table")
    p.add_argument("--allow-env-change", action="store_true",
                   help="judge timings even when device_name or torch_version differ")
    p.add_argument("--normalize", action="store_true",
                   help="rescale timings by the calibration_s ratio of env.json (same machine class)")
    p.add_argument("--strict", action="store_true", help="exit 1 on inconclusive verdicts too")
    p.add_argument("--accuracy-drop", type=float, default=ACCURACY_DROP,
                   help="tolerated absolute accuracy drop (default %(default)s)")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("baseline", help="manage saved baselines")
    bsub = p.add_subparsers(dest="baseline_command", required=True)
    s = bsub.add_parser("save", help="save a run as results/baselines/<machine_class>/NAME.jsonl")
    s.add_argument("run_dir")
    s.add_argument("--name", required=True)
    s.add_argument("--root", default="results/baselines", help="baselines folder (default %(default)s)")
    s.set_defaults(func=cmd_baseline_save)

    p = subparsers.add_parser("export", help="export a run for other tools")
    p.add_argument("--format", choices=["github-action-benchmark"], required=True)
    p.add_argument("run_dir")
    p.add_argument("--direction", choices=["bigger", "smaller"], default="bigger",
                   help="bigger: tokens_per_s, accuracy (tool customBiggerIsBetter); smaller: latency, time, "
                        "peak_bytes (tool customSmallerIsBetter)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_export)


def run_cli(argv: list[str]) -> int:
    """Parse and run one of these subcommands with the CLI's exit-code mapping (tests, scripts)."""
    parser = argparse.ArgumentParser(prog="seqbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CompareInputError as exc:
        print(f"seqbench: error: {exc}", file=sys.stderr)
        return 2
