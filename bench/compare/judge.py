"""Judge two sides: match rows, then a verdict per (cell, metric) — timing, memory, accuracy,
failed cells — with the statistics of seqbench.bench.stats. See seqbench.bench.compare."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from seqbench.bench import stats
from seqbench.bench.compare.load import FINGERPRINT, Side
from seqbench.bench.results import query
from seqbench.bench.results.schema import FAILED_STATUSES, METRICS
from seqbench.errors import CompareInputError

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
Rows = list[dict[str, Any]]
Index = dict[tuple, Rows]  # match key -> the rows of one side with that key
SEVERITY = ("failed", "regression", "inconclusive", "not comparable", "improvement", "pass")


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
    return query.is_final(row)


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


def _suite_warnings(b: Side, c: Side) -> list[str]:
    """A warning when the two sides ran differently named suites."""
    def names(side: Side) -> set[str]:
        found = {str(r["suite"]) for r in side.rows if r.get("suite")}
        return found or ({str(side.env["suite"])} if side.env.get("suite") else set())

    nb, nc = names(b), names(c)
    if nb and nc and nb != nc:
        return [(f"different suites: baseline ran {', '.join(sorted(nb))}, current ran {', '.join(sorted(nc))}; "
                 "only cells with equal definitions are compared")]
    return []


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
    throughput / latency rows; seqbench.bench.measures.timing.QuietGuard)."""
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
            metrics: Iterable[str] = DEFAULT_METRICS, alpha: float = stats.ALPHA,
            allow_partial: bool = False) -> CompareResult:
    """Judge every (cell, metric) present on both sides; list the rows present on one side only.

    Nothing in common is an error (CompareInputError) unless `allow_partial`: a gate that
    compared nothing must not pass."""
    if accuracy_drop < 0:
        raise CompareInputError(f"--accuracy-drop must be >= 0, got {accuracy_drop}")
    rules = {r.metric: r for r in fail}
    metrics = tuple(dict.fromkeys([*metrics, *rules]))
    warnings, comparable = _env_warnings(baseline, current, normalize)
    warnings = baseline.warnings + current.warnings + _suite_warnings(baseline, current) + warnings
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
    if not comparisons and not allow_partial:
        raise CompareInputError(f"nothing to compare: no (cell, metric) of {baseline.source} is also in "
                                f"{current.source} ({len(bidx)} vs {len(cidx)} gated rows; different suites or "
                                "settings change every cell_id); pass --allow-partial to accept that")
    if only_b or only_c:
        warnings.append(f"the cell sets differ: {len(only_b)} compared row(s) only in the baseline, "
                        f"{len(only_c)} only in the current run (listed below)")
    comparisons.sort(key=lambda c: (SEVERITY.index(c.verdict), c.label, c.metric))
    return CompareResult(baseline.source, current.source, comparisons, only_b, only_c, warnings, strict)
