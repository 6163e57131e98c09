"""Report tables: pure functions from the tidy rows of seqbench.bench.results.io.load_runs to DataFrames.

Nothing here measures; every function takes rows (any subset, possibly empty) and returns
a new DataFrame. Conventions shared with seqbench.bench.report.plots:

- a *score* is defined once, in seqbench.bench.results.query (the task's primary metric at
  the trained length, at the best learning rate, over seeds), with its chance level, its 95%
  interval, skill and whether it is *learned* (the interval clears chance by the stated margin);
  leaderboards rank only learned scores, and scores whose intervals overlap share a rank;
- the *scaling exponent* k of a model is the slope of log(time per sequence) against
  log(seq_len) at a fixed batch size, where time per sequence = seq_len / tokens_per_s
  (equivalently time per batch / batch_size). k ≈ 1: linear in length (RNN, SSM);
  k ≈ 2: quadratic (attention once the T² term dominates). Fixed per-call overhead pulls k
  below 1 at short lengths, so read it over lengths where the work dominates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from seqbench.bench.results.query import (  # noqa: F401  re-exported: the report's vocabulary
    ACCURACY_METRICS,
    FRACTION_METRICS,
    LEARNED_SKILL,
    MODES,
    at_best_lr,
    best_lr,
    final_rows,
    higher_is_better,
    is_false,
    length_scores,
    ok,
    primary_metrics,
    rank_with_ties,
    scores,
    series_label,
    steps_to_90,
    tidy,
    variant_columns,
)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Every row whose status is not ok (failed, skipped, oom, timeout) with its reason."""
    cols = ["run", "status", "measure", "model", "task", "mode", "batch_size", "seq_len", "dtype", "metric",
            "error"]
    rows = tidy(df)
    rows = rows[rows["status"] != "ok"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(error=rows["error"].astype(object).where(rows["error"].notna(), "(no message recorded)"))
    dedup = [c for c in ("run", "cell_id", "status", "metric", "mode", "error") if rows[c].notna().any()]
    rows = rows.drop_duplicates(subset=dedup) if "cell_id" in dedup else rows
    order = {s: i for i, s in enumerate(("error", "oom", "timeout", "skipped"))}
    rows = rows.assign(_o=rows["status"].map(order).fillna(len(order)))
    return rows.sort_values(["_o", "run", "measure", "model", "task", "seq_len"], na_position="first")[cols]


def _failure_notes(fails: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """keys -> "status: message; …" of the failed rows in `fails` (a `failures` table)."""
    if fails.empty:
        return pd.DataFrame(columns=keys + ["note"])
    notes = fails.groupby(keys, dropna=False).apply(
        lambda g: "; ".join(sorted({f"{s}: {str(e)[:100]}" for s, e in zip(g["status"], g["error"])})),
        include_groups=False)
    return notes.rename("note").reset_index()


def _shown(df: pd.DataFrame, keys: list[str]) -> list[str]:
    """`keys` without run and dtype where those do not vary in df (a single run, a single dtype)."""
    varying = variant_columns(tidy(df))
    return [k for k in keys if k not in ("run", "dtype") or k in varying]


CHANCE_MARK = "≈ chance"  # what an unlearned score is called in every table and figure


def learned_label(v: Any) -> str:
    """'yes', '≈ chance', or '' (unknown chance level) for a `learned` value."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return "yes" if bool(v) else CHANCE_MARK


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Per task: models ranked by best score with its 95% interval against chance, lr, steps to 90% and
    any failed cells; for a task evaluated longer than trained, a second block at the longest length.

    Only learned scores are ranked (rank_with_ties: overlapping intervals share a rank); a score
    whose interval does not clear chance has no rank and `learned` "≈ chance"."""
    cols = ["task", "metric", "run", "dtype", "length_factor", "eval_seq_len", "rank", "model", "value",
            "ci_low", "ci_high", "chance", "learned", "n_seeds", "lr", "seq_len", "steps_to_90pct", "note"]
    sc = scores(df)
    keys = ["run", "model", "task", "dtype"]
    board = sc.merge(steps_to_90(df), on=keys, how="left") if len(sc) else sc.assign(steps_to_90pct=np.nan)
    board = board.assign(length_factor=1.0, eval_seq_len=board["seq_len"])
    longest = _longest_lengths(df)
    if len(longest):
        board = pd.concat([board, longest], ignore_index=True)
    acc_fail = failures(df)
    acc_fail = acc_fail[acc_fail["measure"] == "accuracy"]
    if len(acc_fail):
        notes = _failure_notes(acc_fail, keys)
        board = board.merge(notes.assign(length_factor=1.0), on=keys + ["length_factor"], how="outer")
        prim = primary_metrics(df)
        board["metric"] = board["metric"].fillna(board["task"].map(prim))
        board["length_factor"] = board["length_factor"].fillna(1.0)
    else:
        board = board.assign(note=None)
    if board.empty:
        return pd.DataFrame(columns=cols)
    board["metric"] = board["metric"].where(board["metric"].notna(), None)
    known = board["metric"].map(lambda m: isinstance(m, str))
    board["rank"] = np.nan
    if known.any():
        board.loc[known, "rank"] = rank_with_ties(board[known], ["task", "run", "dtype", "length_factor"])
    board["learned"] = board["learned"].map(learned_label) if "learned" in board else ""
    board = board.sort_values(["task", "run", "dtype", "length_factor", "rank", "model"], na_position="last")
    return board[_shown(df, cols)].reset_index(drop=True)


def _longest_lengths(df: pd.DataFrame) -> pd.DataFrame:
    """length_scores rows at each task's longest evaluated factor (> 1), shaped like `scores` rows."""
    ls = length_scores(df)
    ls = ls[ls["length_factor"] > 1]
    if ls.empty:
        return ls
    top = ls.groupby(["run", "task", "dtype"], dropna=False)["length_factor"].transform("max")
    ls = ls[ls["length_factor"] == top]
    return ls.assign(higher_is_better=ls["metric"].map(higher_is_better))


def extrapolation(df: pd.DataFrame) -> pd.DataFrame:
    """Per task evaluated beyond its trained length: one row per (model, length factor) with the score,
    its interval, chance at that length and learned; skipped lengths (a model that cannot run them)
    carry the reason in `note`."""
    cols = ["task", "run", "dtype", "model", "length_factor", "eval_seq_len", "value", "ci_low", "ci_high",
            "chance", "learned", "n_seeds", "note"]
    ls = length_scores(df)
    tasks_ = sorted(t for t, g in ls.groupby("task") if g["length_factor"].nunique() >= 2)
    ls = ls[ls["task"].isin(tasks_)]
    skipped = tidy(df)
    skipped = skipped[(skipped["measure"] == "accuracy") & (skipped["status"] == "skipped")
                      & skipped["length_factor"].notna() & skipped["task"].isin(tasks_)]
    if len(skipped):
        notes = skipped.groupby(["run", "model", "task", "dtype", "length_factor"], dropna=False).agg(
            eval_seq_len=("eval_seq_len", "first"), note=("error", "first")).reset_index()
        ls = pd.concat([ls, notes], ignore_index=True)
    if ls.empty:
        return pd.DataFrame(columns=cols)
    ls = ls.assign(learned=ls["learned"].map(learned_label) if "learned" in ls else "")
    if "note" not in ls:
        ls["note"] = None
    ls = ls.sort_values(["task", "run", "dtype", "model", "length_factor"])
    return ls[_shown(df, cols)].reset_index(drop=True)


# --- speed and memory ------------------------------------------------------------------------


def scaling_exponents(df: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope k of log(seq_len / tokens_per_s) on log(seq_len), per series.

    A series is (run, model, dtype, mode, batch_size) with at least two distinct seq_len.
    Returns k ("exponent"), the prefactor, r2 and the seq_len range fitted.
    """
    cols = ["run", "model", "dtype", "mode", "batch_size", "exponent", "r2", "n", "seq_len_min", "seq_len_max"]
    rows = ok(df)
    rows = rows[(rows["metric"] == "tokens_per_s") & (rows["value"] > 0) & (rows["seq_len"] > 0)]
    out = []
    for key, g in rows.groupby(["run", "model", "dtype", "mode", "batch_size"], dropna=False):
        g = g.groupby("seq_len")["value"].median()  # one point per length (seeds, repeats)
        if len(g) < 2:
            continue
        x = np.log(g.index.to_numpy(float))
        y = np.log(g.index.to_numpy(float) / g.to_numpy(float))  # log seconds per sequence
        k, c = np.polyfit(x, y, 1)
        resid = y - (k * x + c)
        ss = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
        out.append(dict(zip(cols[:5], key), exponent=float(k), r2=r2, n=len(g), seq_len_min=g.index.min(),
                        seq_len_max=g.index.max()))
    return pd.DataFrame(out, columns=cols)


def reference_batch_size(rows: pd.DataFrame) -> float | None:
    """The batch size measured at the most (model, seq_len) points; ties go to the largest."""
    if rows.empty or rows["batch_size"].isna().all():
        return None
    counts = rows.groupby("batch_size").apply(lambda g: len(g[["model", "seq_len"]].drop_duplicates()),
                                              include_groups=False)
    best = counts.max()
    return float(max(b for b, n in counts.items() if n == best))


def reference_shape(rows: pd.DataFrame) -> tuple[float, float] | None:
    """(batch_size, seq_len) measured for the most models; ties go to the longest, then largest batch."""
    rows = rows.dropna(subset=["batch_size", "seq_len"])
    if rows.empty:
        return None
    counts = rows.groupby(["batch_size", "seq_len"])["model"].nunique()
    best = counts.max()
    return max((k for k, n in counts.items() if n == best), key=lambda k: (k[1], k[0]))


def _pivot_metrics(rows: pd.DataFrame, keys: list[str], names: Mapping[tuple[str, Any], str]) -> pd.DataFrame:
    """Wide table: one column per (metric, mode) in `names` (mode None: any), median over duplicates."""
    col = [names.get((m, md)) or names.get((m, None)) for m, md in zip(rows["metric"], rows["mode"])]
    rows = rows.assign(_col=col)
    rows = rows[rows["_col"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=keys)
    wide = rows.groupby(keys + ["_col"], dropna=False)["value"].median().unstack("_col").reset_index()
    wide.columns.name = None
    order = [c for c in dict.fromkeys(names.values()) if c in wide.columns]
    return wide.sort_values(keys)[keys + order].reset_index(drop=True)


def speed_memory(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput, peak memory (MiB), achieved TFLOP/s and MFU per (run, model, dtype, batch_size, seq_len)."""
    keys = ["run", "model", "dtype", "batch_size", "seq_len"]
    names = {("tokens_per_s", m): f"tokens_per_s_{m}" for m in MODES}
    names |= {("peak_bytes", m): f"peak_mib_{m}" for m in MODES}
    names |= {("achieved_flops", m): f"achieved_tflops_{m}" for m in MODES}
    names |= {("mfu", m): f"mfu_{m}" for m in MODES}
    rows = ok(df)
    rows = rows[rows["metric"].isin(["tokens_per_s", "peak_bytes", "achieved_flops", "mfu"])
                & rows["seq_len"].notna()]
    scale = rows["metric"].map({"peak_bytes": 2.0**-20, "achieved_flops": 1e-12}).fillna(1.0)
    wide = _pivot_metrics(rows.assign(value=rows["value"] * scale), keys, names)
    if wide.empty:
        return wide
    params = ok(df)
    params = params[params["metric"] == "params"].groupby(["run", "model"])["value"].first().rename("params")
    if len(params):
        wide = wide.merge(params.reset_index(), on=["run", "model"], how="left")
    return wide[_shown(df, keys) + [c for c in wide.columns if c not in keys]]


def latency(df: pd.DataFrame) -> pd.DataFrame:
    """Streaming latency percentiles and time to first token per (run, model, dtype, batch_size, seq_len)."""
    metrics = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "first_token_ms", "prefill_ms"]
    rows = ok(df)
    rows = rows[rows["metric"].isin(metrics) & rows["position"].isna()]
    keys = ["run", "model", "dtype", "batch_size", "seq_len"]
    wide = _pivot_metrics(rows, keys, {(m, None): m for m in metrics})
    return wide[_shown(df, keys) + [c for c in wide.columns if c not in keys]] if len(wide) else wide


def static(df: pd.DataFrame) -> pd.DataFrame:
    """Parameters, analytic FLOPs per token, state bytes per (run, model, seq_len); the matmul ceiling (TFLOP/s)."""
    metrics = ["params", "flops_per_token", "state_bytes", "matmul_flops_ceiling"]
    rows = ok(df)
    rows = rows[rows["metric"].isin(metrics) & rows["mode"].isna() & (rows["measure"] != "memory")]
    rows = rows.assign(value=rows["value"] * np.where(rows["metric"] == "matmul_flops_ceiling", 1e-12, 1.0))
    keys = ["run", "model", "dtype", "seq_len"]
    names = {(m, None): m for m in metrics} | {("matmul_flops_ceiling", None): "matmul_tflops_ceiling"}
    wide = _pivot_metrics(rows, keys, names)
    return wide[_shown(df, keys) + [c for c in wide.columns if c not in keys]] if len(wide) else wide


def environment(envs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """env.json of each run side by side: one row per key, one column per run."""
    keys = list(dict.fromkeys(k for env in envs.values() for k in env))
    table = pd.DataFrame({run: [env.get(k) for k in keys] for run, env in envs.items()}, index=keys, dtype=object)
    table.index.name = "key"
    return table.reset_index()


# --- accuracy against speed ------------------------------------------------------------------


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on both x and y and better on one (max both)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dominated = ((x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
                 & ((x[None, :] > x[:, None]) | (y[None, :] > y[:, None])))
    return ~dominated.any(axis=1)


def accuracy_throughput(df: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, dtype): mean skill over the tasks it was scored on and inference tokens/s.

    Skill ((score − chance) / (1 − chance), or 1 − error / chance; `query.skill`) puts every task on one
    scale, 0 at chance and 1 when perfect, so tasks of different chance levels and metrics average fairly;
    scores below chance count as 0. `tasks` names the tasks averaged and `missing` those of the run the
    model was not scored on: points with different task sets are not comparable, and the figure says so.
    Throughput is read at each run's reference shape (the (batch_size, seq_len) measured for the most
    models); `pareto` marks the models no other model of the same run beats on both.
    """
    cols = ["run", "model", "dtype", "skill", "accuracy", "n_tasks", "tasks", "missing", "tokens_per_s",
            "batch_size", "seq_len", "pareto"]
    sc = scores(df)
    sc = sc.assign(skill=sc["skill"].clip(lower=0))
    if sc["skill"].isna().all():  # no chance levels (an old run): raw accuracy of the fraction tasks
        sc = sc[sc["metric"].isin(FRACTION_METRICS)].assign(skill=lambda f: f["value"])
    sc = sc[sc["skill"].notna()]
    all_tasks = {run: sorted(g["task"].unique()) for run, g in sc.groupby("run")}
    acc = sc.groupby(["run", "model", "dtype"], dropna=False).agg(
        skill=("skill", "mean"), n_tasks=("task", "nunique"),
        tasks=("task", lambda t: ", ".join(sorted(set(t))))).reset_index()
    frac = sc[sc["metric"].isin(FRACTION_METRICS)].groupby(["run", "model", "dtype"], dropna=False)["value"].mean()
    acc = acc.merge(frac.rename("accuracy").reset_index(), on=["run", "model", "dtype"], how="left")
    acc["missing"] = [", ".join(t for t in all_tasks[r] if t not in set(have.split(", ")))
                      for r, have in zip(acc["run"], acc["tasks"])]
    tput = ok(df)
    tput = tput[(tput["metric"] == "tokens_per_s") & (tput["mode"] == "inference")]
    parts = []
    for run, g in tput.groupby("run"):
        shape = reference_shape(g)
        if shape is None:
            continue
        g = g[(g["batch_size"] == shape[0]) & (g["seq_len"] == shape[1])]
        parts.append(g.groupby(["run", "model", "dtype"], dropna=False).agg(
            tokens_per_s=("value", "median"), batch_size=("batch_size", "first"),
            seq_len=("seq_len", "first")).reset_index())
    if acc.empty or not parts:
        return pd.DataFrame(columns=cols)
    both = acc.merge(pd.concat(parts), on=["run", "model", "dtype"], how="inner")
    both["pareto"] = False
    for _, g in both.groupby(["run", "dtype"], dropna=False):
        both.loc[g.index, "pareto"] = pareto_mask(g["tokens_per_s"], g["skill"])
    return both[cols]
