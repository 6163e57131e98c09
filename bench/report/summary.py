"""The summary table printed at the end of `seqbench run`: one line per model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from seqbench.bench.results import query
from seqbench.bench.results.schema import FAILED_STATUSES


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if kind == "bytes":
        for unit in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024 or unit == "GiB":
                return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
            value /= 1024
    if kind == "count":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"
    if kind == "rate":
        return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"
    return f"{value:.3g}"


def _at_longest(df: pd.DataFrame, metric: str, **where: Any) -> pd.Series:
    sel = df[(df.metric == metric) & (df.status == "ok")]
    for k, v in where.items():
        if k in sel:
            sel = sel[sel[k] == v]
    if sel.empty:
        return pd.Series(dtype=float)
    sel = sel[sel.seq_len == sel.groupby("model").seq_len.transform("max")]
    return sel.groupby("model").value.median()


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table: params, best accuracy per task, tokens/s, latency, memory, failures."""
    if not rows:
        return "(no rows)"
    df = pd.DataFrame(rows)
    for col in ("mode", "best", "split", "length_factor", "position", "distance"):
        if col not in df:
            df[col] = None
    out = pd.DataFrame(index=sorted(df.model.dropna().unique()))
    params = df.dropna(subset=["params"]).groupby("model").params.first()
    out["params"] = [_fmt(params.get(m), "count") for m in out.index]
    sc = query.scores(df)
    for task, grp in sc[sc.metric == "accuracy"].groupby("task"):
        best = grp.groupby("model").value.max()
        out[f"acc:{task}"] = [_fmt(best.get(m), "float") for m in out.index]
    for mode in ("inference", "training"):
        s = _at_longest(df, "tokens_per_s", mode=mode)
        if not s.empty:
            out[f"tok/s {mode[:5]}"] = [_fmt(s.get(m), "rate") for m in out.index]
    lat = df[(df.metric == "latency_p50_ms") & (df.status == "ok")]
    if not lat.empty:
        s = lat[lat.seq_len == lat.groupby("model").seq_len.transform("max")].groupby("model").value.median()
        out["p50 ms/tok"] = [_fmt(s.get(m), "float") for m in out.index]
    mem = _at_longest(df, "peak_bytes", mode="training")
    if not mem.empty:
        out["peak train"] = [_fmt(mem.get(m), "bytes") for m in out.index]
    failed = df[df.status.isin(FAILED_STATUSES)].groupby("model").cell_id.nunique()
    skipped = df[df.status == "skipped"].groupby("model").cell_id.nunique()
    out["failed"] = [int(failed.get(m, 0)) for m in out.index]
    out["skipped"] = [int(skipped.get(m, 0)) for m in out.index]
    return out.to_string()
