"""Accuracy figures: the heatmap, score against length and distance, extrapolation, learning curves."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.bench.report import tables
from seqbench.bench.report.plots.common import (
    Color,
    NoData,
    _color,
    _finish,
    _grid,
    _join,
    _legend,
    _plot_lines,
    _resolve,
    _styles,
    _themed,
    facets,
)
from seqbench.bench.report.tables import FRACTION_METRICS


def _task_kinds(df: pd.DataFrame) -> dict[str, str]:
    rows = df[df["task"].notna()]
    kinds = rows.groupby("task")["task_kind"].first()
    return {str(t): str(k) if isinstance(k, str) else str(t) for t, k in kinds.items()}


@_themed
def accuracy_heatmap(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Model × task grid of the best score; failed model/task cells show their status."""
    df, palette = _resolve(df, palette)
    sc = tables.scores(df)
    fails = tables.failures(df)
    fails = fails[(fails["measure"] == "accuracy") & fails["task"].notna()]
    if sc.empty:
        raise NoData("no accuracy scores: the run has no ok `accuracy` measure rows")
    vcols = tables.variant_columns(df)

    def label(frame: pd.DataFrame) -> list[str]:
        return [tables.series_label(m, tuple(str(v) for v in vs)) for m, *vs in
                frame[["model"] + vcols].itertuples(index=False)]

    sc = sc.reset_index(drop=True)
    sc["row"] = label(sc)
    metric_of = dict(zip(sc["task"], sc["metric"]))
    sc["col"] = [f"{t}\n({m})" for t, m in zip(sc["task"], sc["metric"])]
    grid = sc.pivot_table(index="row", columns="col", values="value", aggfunc="mean")
    rows_order = sorted(set(grid.index) | set(label(fails)))
    grid = grid.reindex(rows_order)
    good = grid.copy()
    for col in grid.columns:
        metric = metric_of[col.split("\n")[0]]
        v = grid[col]
        if metric in FRACTION_METRICS:
            continue
        span = v.max() - v.min()
        good[col] = 1.0 if not span > 0 else ((v - v.min()) / span if tables.higher_is_better(metric)
                                              else (v.max() - v) / span)
    annot = grid.map(lambda v: "" if pd.isna(v) else (f"{v:.2f}" if abs(v) < 100 else f"{v:.3g}"))
    fig = Figure(figsize=(1.6 + 1.1 * grid.shape[1] + 1.2, 0.9 + 0.45 * grid.shape[0]), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(good.astype(float), annot=annot.to_numpy(), fmt="", mask=good.isna(), vmin=0, vmax=1,
                cmap="viridis", linewidths=0.5, ax=ax,
                cbar_kws={"label": "accuracy, or min–max scaled (best = 1)"})
    ax.set_facecolor("0.92")
    ax.grid(False)
    if len(fails):
        fails = fails.assign(row=label(fails))
        for (row, task), g in fails.groupby(["row", "task"]):
            cols = [i for i, c in enumerate(grid.columns) if c.split("\n")[0] == task]
            r = rows_order.index(row)
            if cols and pd.isna(grid.iloc[r, cols[0]]):
                ax.text(cols[0] + 0.5, r + 0.5, "/".join(sorted(set(g["status"]))), ha="center", va="center",
                        color="firebrick", fontsize=8)
    for tick in ax.get_yticklabels():
        tick.set_color(_color(palette, tick.get_text().split(" · ")[0]))
    ax.set_xlabel("task (metric)")
    ax.set_ylabel("model")
    ax.set_title("best score per model and task (best lr, trained length)")
    return _finish(fig, df[df["measure"] == "accuracy"],
                   "Best score per model × task at the best learning rate. Colour: the accuracy, or for error "
                   "metrics (mse, nmse, bits/char) the min–max scaled score within the column, best = 1; "
                   "grey = no score")


@_themed
def accuracy_vs_seq_len(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Best score against the trained seq_len, one panel per task kind, a line per model."""
    df, palette = _resolve(df, palette)
    sc = tables.scores(df)
    if sc.empty:
        raise NoData("no accuracy scores: the run has no ok `accuracy` measure rows")
    sc["kind"] = sc["task"].map(_task_kinds(df))
    sc = sc[sc["seq_len"].notna()]
    kinds = [k for k, g in sc.groupby("kind") if g["seq_len"].nunique() >= 2]
    if not kinds:
        raise NoData("every task was trained at a single seq_len (add task entries of one kind at several "
                     "seq_len to the suite); the heatmap shows the scores")
    fig = facets(sc, "kind", "seq_len", df, palette, keys=kinds, xlabel="trained seq_len",
                 ylabel=lambda kind, g: _join(g["metric"]))
    used = df[(df["measure"] == "accuracy") & df["task"].map(_task_kinds(df)).isin(kinds)]
    return _finish(fig, used, "Score at the trained length against seq_len (best lr, mean over seeds)")


@_themed
def accuracy_vs_distance(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Accuracy against dependency distance, one panel per task, a line per model."""
    df, palette = _resolve(df, palette)
    rows = tables.at_best_lr(df)
    rows = rows[rows["distance"].notna() & rows["metric"].isin(tables.ACCURACY_METRICS)
                & (rows["split"] != "curve")]
    if rows.empty:
        raise NoData("no per-distance accuracy rows (accuracy rows with `distance`; recall tasks write them)")
    fig = facets(rows, "task", "distance", df, palette, xlabel="dependency distance (positions)",
                 ylabel=lambda task, g: _join(g["metric"]))
    return _finish(fig, rows, "Accuracy against the distance between a cue and its recall (best lr)")


@_themed
def length_extrapolation(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Score at k × the trained length, one panel per task, a line per model."""
    df, palette = _resolve(df, palette)
    rows = tables.at_best_lr(df)
    prim = tables.primary_metrics(df)
    rows = rows[rows["length_factor"].notna() & (rows["metric"] == rows["task"].map(prim))
                & rows["distance"].isna() & (rows["split"] != "curve")]
    tasks = sorted(t for t, g in rows.groupby("task") if g["length_factor"].nunique() >= 2)
    if not tasks:
        raise NoData("no accuracy rows at lengths other than the trained one (rows with `length_factor` ≠ 1)")
    fig = facets(rows, "task", "length_factor", df, palette, keys=tasks, xlabel="eval length / trained length",
                 ylabel=lambda task, g: prim[task],
                 decorate=lambda ax, task, g: ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1))
    return _finish(fig, rows[rows["task"].isin(tasks)],
                   "Length extrapolation: score at k × the trained length (dotted: trained length)")


@_themed
def learning_curves(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Training curves at the best lr: a row of panels per task, a column per metric."""
    df, palette = _resolve(df, palette)
    rows = tables.at_best_lr(df)
    rows = rows[(rows["split"] == "curve") & rows["step"].notna()]
    if rows.empty:
        raise NoData("no learning-curve rows (accuracy rows with split 'curve' and `step`)")
    order = ["train_loss", "eval_loss", *tables.ACCURACY_METRICS]

    def metrics_of(task: str) -> list[str]:
        present = rows.loc[rows["task"] == task, "metric"].unique()
        return sorted(present, key=lambda m: (order.index(m) if m in order else len(order), m))

    tasks = sorted(rows["task"].dropna().unique())
    vcols, styles = _styles(df)
    fig, axes = _grid(len(tasks), max(len(metrics_of(t)) for t in tasks))
    for i, task in enumerate(tasks):
        metrics = metrics_of(task)
        for j, ax in enumerate(axes[i]):
            if j >= len(metrics):
                ax.set_visible(False)
                continue
            g = rows[(rows["task"] == task) & (rows["metric"] == metrics[j])]
            _plot_lines(ax, g, "step", palette, vcols, styles)
            ax.set_title(f"{task}: {metrics[j]}")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(metrics[j])
    _legend(fig, axes)
    return _finish(fig, rows, "Learning curves at the best learning rate (mean over seeds)")
