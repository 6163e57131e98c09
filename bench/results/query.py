"""The one query layer over tidy result rows: what a final score is, and which lr is best.

Report tables, plots, the run summary, findings and compare all ask these functions, so a
"score" means the same everywhere:

- a *final row* is an ok accuracy-measure row of the task's primary metric on the test data
  (split "eval"; not a learning-curve point "curve", not a validation score "valid"), at the
  trained length (length_factor 1), not a per-distance breakdown;
- the *primary metric* of a task is the first of ACCURACY_METRICS its final rows carry;
- the *best lr* of (run, model, task, dtype) is the lr whose validation value (split "valid"; the
  final value for runs without validation rows), averaged over seeds, is best; without an lr
  column the rows flagged `best` by the measure decide. The test data never chooses anything;
- a *score* is the primary metric at the best lr, one row per (run, model, task, dtype), the
  mean over seeds with `n_seeds`; `final_scores` keeps the seeds and every eval length apart.

Chance, intervals and "learned" (every accuracy row of the report and the summary uses these):

- *chance* is the task's chance level at the evaluated length (`Task.chance`: the best
  input-blind predictor; for mse the predict-the-mean baseline; nmse's naive forecast is 1);
- *skill* = (value − chance) / (1 − chance) for fractions, 1 − value / chance for error metrics
  (mse, nmse, bits_per_char: the normalised error): 0 at chance, 1 when perfect;
- the *interval* of one seed is 95% Wilson over its scored positions or sequences (`n_scored`)
  for fractions, mean ± 1.96 se over them for error metrics; over ≥ 2 seeds it is the Student-t
  interval of the seeds' mean, widened to contain the interval of the pooled scored positions
  (fractions) or the mean of the seeds' intervals (error metrics): `bench.stats.seed_interval`;
- a score is *learned* when the skill of its pessimistic end (ci_low for fractions, ci_high for
  error metrics) exceeds LEARNED_SKILL = 0.1: the whole interval lies at least a tenth of the
  way from chance to perfect (parity, chance 0.5: ci_low > 0.55; 32 values: ci_low > 0.128;
  adding, chance 0.167: ci_high < 0.15). Otherwise it is "≈ chance". Unknown chance: None;
- *ranks* (`rank_with_ties`): among the learned scores of one task, rank = 1 + the number of
  scores whose interval lies entirely better than this one's: overlapping intervals share a rank;
  unlearned scores get no rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from seqbench.bench import stats
from seqbench.bench.results.schema import METRICS, ROW_FIELDS

# A task's primary metric: the first of these its accuracy rows carry.
ACCURACY_METRICS = ("accuracy", "sequence_accuracy", "token_accuracy", "nmse", "mse", "bits_per_char")
FRACTION_METRICS = ("accuracy", "sequence_accuracy", "token_accuracy")
NUMERIC = ("value", "batch_size", "seq_len", "seed", "params", "lr", "step", "eval_seq_len",
           "length_factor", "distance", "position", "wall_s", "chance", "ci_low", "ci_high", "n_scored",
           "train_s", "d_model")
ERROR_METRICS = ("mse", "nmse", "bits_per_char")  # lower is better, 0 is perfect
CONFIDENCE = 0.95  # of every interval
LEARNED_SKILL = 0.1  # learned: the pessimistic end of the interval has skill above this
VALID = "valid"  # the split of validation scores (model selection)
CURVE = "curve"  # the split of learning-curve points
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


def _end_of_training(df: pd.DataFrame) -> pd.DataFrame:
    df = ok(df)
    keep = ((df["measure"] == "accuracy") & df["metric"].isin(ACCURACY_METRICS) & df["distance"].isna()
            & (df["split"] != CURVE) & _at_trained_length(df))
    return df[keep]


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Ok accuracy-measure rows of an end-of-training test score at the trained length (every lr).

    The accuracy measure writes these with split "eval" (curves have split "curve", validation
    scores "valid"), `step` = steps done and `length_factor` 1; per-distance rows (with
    `distance`) are not scores.
    """
    fin = _end_of_training(df)
    return fin[fin["split"] != VALID]


def selection_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows the best lr is chosen on: validation rows (split "valid") of each (run, model, task,
    dtype) that has them, the final rows of one that has none (runs written before validation)."""
    end = _end_of_training(df)
    is_valid = end["split"] == VALID
    has_valid = set(map(tuple, end.loc[is_valid, GROUP].astype(str).to_numpy()))
    grouped = end[GROUP].astype(str).apply(tuple, axis=1) if len(end) else pd.Series(dtype=object)
    use = is_valid | (~is_valid & ~grouped.isin(has_valid))
    return end[use]


def primary_metrics(df: pd.DataFrame) -> dict[str, str]:
    """task -> its primary metric (the first of ACCURACY_METRICS its rows carry)."""
    fin = final_rows(df)
    out = {}
    for task, g in fin.groupby("task"):
        present = set(g["metric"])
        out[str(task)] = next(m for m in ACCURACY_METRICS if m in present)
    return out


def best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """run, model, task, dtype -> the chosen lr: best mean validation value over seeds (a diverged lr,
    NaN, loses; `selection_rows`); without lr values, the lr of the rows the measure flagged `best`
    (NaN when none)."""
    keys = GROUP
    fin = selection_rows(df)
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
    """One score per (run, model, task, dtype): primary metric at the trained length, best lr, mean
    over seeds, with chance, the interval (ci_low, ci_high), n_scored (summed over seeds), skill and
    learned (see the module docstring)."""
    cols = ["run", "model", "task", "dtype", "metric", "value", "lr", "seq_len", "n_seeds", "higher_is_better",
            "chance", "ci_low", "ci_high", "n_scored", "skill", "learned"]
    rows = _test_rows_at_best_lr(df)
    rows = rows[_at_trained_length(rows)]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(trained_len=rows["eval_seq_len"].fillna(rows["seq_len"]))
    out = summarise_seeds(rows, ["run", "model", "task", "dtype", "metric"])
    first = rows.groupby(["run", "model", "task", "dtype", "metric"], dropna=False).agg(
        lr=("lr", "first"), seq_len=("trained_len", "first")).reset_index()
    out = out.merge(first, on=["run", "model", "task", "dtype", "metric"], how="left")
    out["higher_is_better"] = out["metric"].map(higher_is_better)
    return out[cols]


def length_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Like `scores`, per evaluated length: one row per (run, model, task, dtype, length_factor) at
    the best lr, with eval_seq_len, chance at that length, the interval and learned."""
    keys = ["run", "model", "task", "dtype", "metric", "length_factor"]
    cols = keys + ["eval_seq_len", "value", "n_seeds", "chance", "ci_low", "ci_high", "n_scored", "skill", "learned"]
    rows = _test_rows_at_best_lr(df)
    rows = rows[rows["length_factor"].notna() | _at_trained_length(rows)]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(length_factor=rows["length_factor"].fillna(1.0),
                       eval_seq_len=rows["eval_seq_len"].fillna(rows["seq_len"]))
    out = summarise_seeds(rows, keys)
    lens = rows.groupby(keys, dropna=False)["eval_seq_len"].first().reset_index()
    return out.merge(lens, on=keys, how="left")[cols]


def _test_rows_at_best_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Test rows (split "eval") of each task's primary metric at the best lr, every length, no distance."""
    rows = at_best_lr(df)
    if rows.empty:
        return rows
    prim = primary_metrics(df)
    return rows[(rows["metric"] == rows["task"].map(prim)) & rows["distance"].isna()
                & ~rows["split"].isin([CURVE, VALID])]


# --- chance, intervals, learned, ranks -----------------------------------------------------------


def is_fraction(metric: str) -> bool:
    return metric in FRACTION_METRICS


def skill(metric: str, value: float, chance: float) -> float:
    """0 at chance, 1 when perfect: (value − chance) / (1 − chance) for fractions, 1 − value / chance
    for error metrics (the normalised error). NaN when chance is unknown or leaves no room."""
    if chance is None or not np.isfinite(chance) or value is None or not np.isfinite(value):
        return np.nan
    if is_fraction(metric):
        return (value - chance) / (1.0 - chance) if chance < 1 else np.nan
    return 1.0 - value / chance if chance > 0 else np.nan


def interval_of(metric: str, value: float, n_scored: float, se: float | None = None) -> tuple[float, float]:
    """One seed's 95% interval: Wilson over n_scored for fractions; value ± 1.96 se (at least 0) for error
    metrics (NaN, NaN without se or scored units)."""
    if not n_scored or not np.isfinite(value):
        return np.nan, np.nan
    if is_fraction(metric):
        return stats.wilson_interval(value * n_scored, n_scored, CONFIDENCE)
    if se is None or not np.isfinite(se):
        return np.nan, np.nan
    lo, hi = stats.normal_interval(value, se, CONFIDENCE)
    return max(0.0, lo), hi


def is_learned(metric: str, ci_low: float, ci_high: float, chance: float) -> bool | None:
    """The interval clears chance by the margin: skill of its pessimistic end > LEARNED_SKILL. None when
    the chance level or the interval is unknown."""
    worst = ci_low if is_fraction(metric) else ci_high
    sk = skill(metric, worst, chance)
    return None if np.isnan(sk) else bool(sk > LEARNED_SKILL)


def summarise_seeds(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds per `keys` with n_seeds, chance, the interval (`bench.stats.seed_interval`),
    n_scored (sum), skill and learned. `rows`: one row per seed (and `keys`) with value, metric and,
    where the measure wrote them, chance, ci_low, ci_high, n_scored."""
    out = []
    for key, g in rows.groupby(keys, dropna=False, sort=True):
        metric = str(g["metric"].iloc[0])
        values = g["value"].to_numpy(float)
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        n = g["n_scored"].to_numpy(float)
        if is_fraction(metric) and np.isfinite(n).all() and n.sum() > 0:
            within = stats.wilson_interval(float((values * n).sum()), float(n.sum()), CONFIDENCE)
        else:
            within = (float(g["ci_low"].mean()), float(g["ci_high"].mean()))
        bounds = (0.0, 1.0) if is_fraction(metric) else (0.0, np.inf)
        if len(values) >= 2:
            lo, hi = stats.seed_interval(values, within, CONFIDENCE, bounds)
        else:
            lo, hi = within
        chance = float(g["chance"].mean()) if g["chance"].notna().any() else np.nan
        out.append(dict(zip(keys, key if isinstance(key, tuple) else (key,)), value=mean,
                        n_seeds=int(g["seed"].nunique()) if g["seed"].notna().any() else len(g),
                        chance=chance, ci_low=lo, ci_high=hi,
                        n_scored=float(n.sum()) if np.isfinite(n).all() else np.nan,
                        skill=skill(metric, mean, chance), learned=is_learned(metric, lo, hi, chance)))
    cols = keys + ["value", "n_seeds", "chance", "ci_low", "ci_high", "n_scored", "skill", "learned"]
    return pd.DataFrame(out, columns=cols)


def rank_with_ties(board: pd.DataFrame, by: list[str]) -> pd.Series:
    """Rank within each `by` group: 1 + the number of ranked scores whose interval lies entirely better
    (ci_low above this one's ci_high; for error metrics ci_high below its ci_low). Unlearned scores
    (learned False) and missing values get NaN and are not counted; scores without an interval (old
    runs) rank by value."""
    ranks = pd.Series(np.nan, index=board.index, dtype=float)
    for _, g in board.groupby(by, dropna=False):
        higher = g["metric"].map(higher_is_better).to_numpy(bool)
        lo = g["ci_low"].fillna(g["value"]).to_numpy(float)
        hi = g["ci_high"].fillna(g["value"]).to_numpy(float)
        worst = np.where(higher, lo, -hi)  # the pessimistic end, as if higher were better
        best = np.where(higher, hi, -lo)  # the optimistic end
        ranked = ~g["learned"].map(is_false).to_numpy(bool) & np.isfinite(g["value"].to_numpy(float))
        for i, idx in enumerate(g.index):
            if ranked[i]:
                ranks[idx] = 1 + int(((worst > best[i]) & ranked).sum())
    return ranks


def is_false(v: Any) -> bool:
    """v is a False boolean (Python or numpy); None and NaN are not."""
    return isinstance(v, (bool, np.bool_)) and not bool(v)


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
    rows = rows[~rows["split"].isin([CURVE, VALID]) & rows["distance"].isna()]
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
    if row.get("split") in (CURVE, VALID) or row.get("best") is False:
        return False
    if row.get("lr") is not None and row.get("best") is not True:
        return False
    return row.get("position") is None and row.get("distance") is None
