"""The one query layer over tidy result rows: what a final score is, and which lr is best.

Report tables, plots, the run summary, findings and compare all ask these functions, so a
"score" means the same everywhere:

- a *final row* is an ok accuracy-measure row of the task's primary metric on held-out data
  (split "eval", not a learning-curve point "curve"), at the trained length
  (length_factor 1), not a per-distance breakdown;
- the *primary metric* of a task is the first of ACCURACY_METRICS its final rows carry;
- the *best lr* of (run, model, task, dtype) is the lr whose final value, averaged over seeds,
  is best; without an lr column the rows flagged `best` by the measure decide;
- a *score* is the primary metric at the best lr, one row per (run, model, task, dtype), the
  mean over seeds with `n_seeds`; `final_scores` keeps the seeds and every eval length apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from seqbench.bench.results.schema import METRICS, ROW_FIELDS

# A task's primary metric: the first of these its accuracy rows carry.
ACCURACY_METRICS = ("accuracy", "sequence_accuracy", "token_accuracy", "nmse", "mse", "bits_per_char")
FRACTION_METRICS = ("accuracy", "sequence_accuracy", "token_accuracy")
NUMERIC = ("value", "batch_size", "seq_len", "seed", "params", "lr", "step", "eval_seq_len",
           "length_factor", "distance", "position", "wall_s")
MODES = ("inference", "training")
GROUP = ["run", "model", "task", "dtype"]  # what one score is about


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every row column present, numeric columns as float, `best` as bool, a `run`.

    Idempotent and cheap; every function here calls it so it accepts raw rows too.
    """
    out = df.copy()
    for col in ROW_FIELDS:
        if col not in out.columns:
            out[col] = None
    if "run" not in out.columns:
        out["run"] = out["run_id"].astype(object).where(out["run_id"].notna(), "run").astype(str)
    for col in NUMERIC:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    out["best"] = out["best"].map(lambda v: False if v is None or (np.isscalar(v) and pd.isna(v)) else bool(v))
    out["status"] = out["status"].astype(object).where(out["status"].notna(), "ok").astype(str)
    return out


def ok(df: pd.DataFrame) -> pd.DataFrame:
    """Rows measured successfully (status ok and a value)."""
    df = tidy(df)
    return df[(df["status"] == "ok") & df["value"].notna()]


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric, ("", True))[1]


def variant_columns(df: pd.DataFrame) -> list[str]:
    """Columns beyond `model` that tell series apart here: run and dtype, when they vary."""
    return [c for c in ("run", "dtype") if c in df.columns and df[c].dropna().nunique() > 1]


def series_label(model: str, variant: tuple) -> str:
    return " · ".join([str(model)] + [str(v) for v in variant])


# --- accuracy --------------------------------------------------------------------------------


def _at_trained_length(df: pd.DataFrame) -> pd.Series:
    lf = df["length_factor"]
    return lf.isna() | np.isclose(lf.fillna(1.0), 1.0)


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Ok accuracy-measure rows of an end-of-training score at the trained length (every lr).

    The accuracy measure writes these with split "eval" (curves have split "curve"), `step` =
    steps done and `length_factor` 1; per-distance rows (with `distance`) are not scores.
    """
    df = ok(df)
    keep = ((df["measure"] == "accuracy") & df["metric"].isin(ACCURACY_METRICS) & df["distance"].isna()
            & (df["split"] != "curve") & _at_trained_length(df))
    return df[keep]


def primary_metrics(df: pd.DataFrame) -> dict[str, str]:
    """task -> its primary metric (the first of ACCURACY_METRICS its rows carry)."""
    fin = final_rows(df)
    out = {}
    for task, g in fin.groupby("task"):
        present = set(g["metric"])
        out[str(task)] = next(m for m in ACCURACY_METRICS if m in present)
    return out


def best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """run, model, task, dtype -> the chosen lr: best mean final value over seeds (a diverged lr, NaN,
    loses); without lr values, the lr of the rows the measure flagged `best` (NaN when none)."""
    keys = GROUP
    fin = final_rows(df)
    prim = primary_metrics(df)
    fin = fin[fin["metric"] == fin["task"].map(prim)]
    out = []
    for key, g in fin.groupby(keys, dropna=False):
        if g["lr"].notna().any():
            means = g.groupby("lr")["value"].mean()
            means = means.fillna(-np.inf if higher_is_better(g["metric"].iloc[0]) else np.inf)
            lr = means.idxmax() if higher_is_better(g["metric"].iloc[0]) else means.idxmin()
        else:
            lr = np.nan
        out.append(dict(zip(keys, key), best_lr=lr))
    return pd.DataFrame(out, columns=keys + ["best_lr"]).astype({k: object for k in keys})


def at_best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Ok accuracy-measure rows (curves, distances, lengths, steps…) restricted to the best lr
    (where best_lr cannot tell, e.g. no row at the trained length: the rows the measure flagged)."""
    rows = ok(df)
    rows = rows[rows["measure"] == "accuracy"]
    if rows.empty:
        return rows
    choice = best_lr(df)
    merged = rows.astype({k: object for k in GROUP}).merge(choice, on=GROUP, how="left")
    same = (merged["lr"] == merged["best_lr"]) | (merged["best_lr"].isna() & (merged["lr"].isna() | merged["best"]))
    return merged[same].drop(columns="best_lr")


def scores(df: pd.DataFrame) -> pd.DataFrame:
    """One score per (run, model, task, dtype): primary metric at the trained length, best lr."""
    cols = ["run", "model", "task", "dtype", "metric", "value", "lr", "seq_len", "n_seeds", "higher_is_better"]
    rows = at_best_lr(df)
    prim = primary_metrics(df)
    rows = rows[(rows["metric"] == rows["task"].map(prim)) & rows["distance"].isna()
                & (rows["split"] != "curve") & _at_trained_length(rows)]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(trained_len=rows["eval_seq_len"].fillna(rows["seq_len"]))
    out = (rows.groupby(["run", "model", "task", "dtype", "metric"], dropna=False)
           .agg(value=("value", "mean"), lr=("lr", "first"), seq_len=("trained_len", "first"),
                n_seeds=("seed", "nunique"))
           .reset_index())
    out["higher_is_better"] = out["metric"].map(higher_is_better)
    return out[cols]


def steps_to_90(df: pd.DataFrame) -> pd.DataFrame:
    """run, model, task, dtype -> steps_to_90pct at the best lr (mean over seeds)."""
    rows = at_best_lr(df)
    rows = rows[rows["metric"] == "steps_to_90pct"]
    cols = ["run", "model", "task", "dtype", "steps_to_90pct"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    return (rows.groupby(["run", "model", "task", "dtype"], dropna=False)["value"].mean()
            .rename("steps_to_90pct").reset_index())




def final_scores(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Final held-out values at the best lr, per seed and eval length: columns run, model, family, task,
    task_kind, dtype, seed, eval_seq_len, length_factor, metric, value. `metric` None: the task's primary."""
    cols = ["run", "model", "family", "task", "task_kind", "dtype", "seed", "eval_seq_len", "length_factor",
            "metric", "value"]
    rows = at_best_lr(df)
    rows = rows[(rows["split"] != "curve") & rows["distance"].isna()]
    if metric is None:
        rows = rows[rows["metric"] == rows["task"].map(primary_metrics(df))]
    else:
        rows = rows[rows["metric"] == metric]
    return rows[cols].reset_index(drop=True)


def seed_mean(scores_: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds of `value`, with the number of seeds as `n_seeds`."""
    g = scores_.groupby(keys, sort=False)["value"]
    return pd.DataFrame({"value": g.mean(), "n_seeds": g.size()}).reset_index()


def is_final(row: dict[str, Any]) -> bool:
    """Row-wise: a final value (not a curve point, a non-best lr, a position or a distance breakdown)."""
    if row.get("split") == "curve" or row.get("best") is False:
        return False
    if row.get("lr") is not None and row.get("best") is not True:
        return False
    return row.get("position") is None and row.get("distance") is None
