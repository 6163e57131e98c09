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
    chance_row: dict[str, str] = {}
    for col, grp in _accuracy_columns(df):
        got = {m: g.iloc[0] for m, g in grp.groupby("model")}
        out[col] = [_score(got.get(m)) for m in out.index]
        chance = grp["chance"].dropna()
        chance_row[col] = _fmt(float(chance.mean()), "float") if len(chance) else "?"
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
    if not chance_row:
        return out.to_string()
    chance_line = pd.DataFrame([{c: chance_row.get(c, "") for c in out.columns}], index=["(chance)"])
    n_seeds = int(query.scores(df)["n_seeds"].max())
    legend = (f"\naccuracy columns: mean over {n_seeds} seed(s) at the best lr (mse etc.: lower is better); "
              f"'{CHANCE}' marks a score whose 95% interval does not clear chance by {query.LEARNED_SKILL:.0%} "
              "of the way to perfect; 'task xK': tested at K times the trained length; the report has the intervals")
    return pd.concat([chance_line, out]).to_string() + legend


CHANCE = "≈"  # the mark of an unlearned score


def _score(row: Any) -> str:
    """A score cell: the value, marked when it is not learned; '-' when there is none."""
    if row is None:
        return "-"
    text = _fmt(float(row["value"]), "float")
    return f"{CHANCE}{text}" if query.is_false(row["learned"]) else text


def _accuracy_columns(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(column name, score rows) per task at the trained length and, for tasks tested longer, at the
    longest length: 'acc:parity', 'acc:parity x4', 'mse:adding'."""
    cols = []
    sc = query.scores(df)
    ls = query.length_scores(df)
    for task, grp in sc.groupby("task"):
        short = "acc" if grp["metric"].iloc[0] == "accuracy" else str(grp["metric"].iloc[0])
        cols.append((f"{short}:{task}", grp))
        longer = ls[(ls["task"] == task) & (ls["length_factor"] > 1)]
        if len(longer):
            top = longer[longer["length_factor"] == longer["length_factor"].max()]
            cols.append((f"{short}:{task} x{top['length_factor'].iloc[0]:g}", top))
    return cols
