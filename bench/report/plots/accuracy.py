"""Accuracy figures: the heatmap, score against length and distance, extrapolation, learning curves."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

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
    _series,
    _styles,
    _themed,
    facets,
)
from seqbench.bench.report.tables import FRACTION_METRICS
from seqbench.bench.results.query import summarise_seeds


def _task_kinds(df: pd.DataFrame) -> dict[str, str]:
    rows = df[df["task"].notna()]
    kinds = rows.groupby("task")["task_kind"].first()
    return {str(t): str(k) if isinstance(k, str) else str(t) for t, k in kinds.items()}


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """Heatmap cells: each task's score at the trained length and, for tasks tested longer, at the longest
    length; columns task, col (the column label), metric, value, chance, skill, learned and the row keys."""
    sc = tables.scores(df).assign(length_factor=1.0)
    sc["col"] = [f"{t}\n({m})" for t, m in zip(sc["task"], sc["metric"])]
    ls = tables.length_scores(df)
    ls = ls[ls["length_factor"] > 1]
    if len(ls):
        top = ls.groupby(["task"])["length_factor"].transform("max")
        ls = ls[ls["length_factor"] == top].copy()
        ls["col"] = [f"{t} ×{f:g}\n(L={int(n)})" for t, f, n in zip(ls["task"], ls["length_factor"],
                                                                    ls["eval_seq_len"])]
        sc = pd.concat([sc, ls], ignore_index=True)
    return sc.reset_index(drop=True)


@_themed
def accuracy_heatmap(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Model × task grid coloured by skill = (score − chance) / (1 − chance) (normalised error for error
    metrics), the raw score printed; unlearned cells grey with "≈ chance"; failed cells show their status.
    A task tested beyond its trained length gets a second column at the longest length."""
    df, palette = _resolve(df, palette)
    sc = tables.scores(df)
    fails = tables.failures(df)
    fails = fails[(fails["measure"] == "accuracy") & fails["task"].notna() & (fails["status"] != "skipped")]
    if sc.empty:
        raise NoData("no accuracy scores: the run has no ok `accuracy` measure rows")
    vcols = tables.variant_columns(df)

    def label(frame: pd.DataFrame) -> list[str]:
        return [tables.series_label(m, tuple(str(v) for v in vs)) for m, *vs in
                frame[["model"] + vcols].itertuples(index=False)]

    cells = _cells(df)
    cells["row"] = label(cells)
    order = list(dict.fromkeys(cells.sort_values(["task", "length_factor"])["col"]))
    grid = cells.pivot_table(index="row", columns="col", values="value", aggfunc="mean").reindex(columns=order)
    rows_order = sorted(set(grid.index) | set(label(fails)))
    grid = grid.reindex(rows_order)
    skill = cells.pivot_table(index="row", columns="col", values="skill", aggfunc="mean").reindex(
        index=rows_order, columns=order)
    unlearned = cells.assign(u=cells["learned"].map(tables.is_false)).pivot_table(
        index="row", columns="col", values="u", aggfunc="max").reindex(index=rows_order, columns=order)
    unlearned = unlearned.fillna(False).astype(bool)
    metric_of = dict(zip(cells["col"], cells["metric"]))
    colour = skill.clip(0, 1)
    for col in grid.columns:  # no chance level known (an old run): the raw fraction, or min-max for errors
        if colour[col].notna().any() or grid[col].isna().all():
            continue
        v, metric = grid[col], metric_of[col]
        span = v.max() - v.min()
        colour[col] = v if metric in FRACTION_METRICS else (
            1.0 if not span > 0 else ((v - v.min()) / span if tables.higher_is_better(metric) else (v.max() - v) / span))
    annot = grid.map(lambda v: "" if pd.isna(v) else (f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"))
    annot = annot.where(~unlearned, annot + "\n≈ chance")
    fig = Figure(figsize=(2.0 + 1.25 * grid.shape[1] + 1.0, 1.6 + 0.45 * grid.shape[0]), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(colour.astype(float), annot=annot.to_numpy(), fmt="", mask=colour.isna() | unlearned, vmin=0,
                vmax=1, cmap="viridis", linewidths=0.5, ax=ax, annot_kws={"fontsize": 7},
                cbar_kws={"label": "skill (0 = chance, 1 = perfect)"})
    ax.set_facecolor("0.96")
    ax.grid(False)
    for r, c in zip(*np.nonzero(unlearned.to_numpy())):
        ax.add_patch(Rectangle((c, r), 1, 1, facecolor="0.8", edgecolor="white", linewidth=0.5, hatch="//"))
        ax.text(c + 0.5, r + 0.5, annot.iloc[r, c], ha="center", va="center", color="0.35", fontsize=7)
    if len(fails):
        fails = fails.assign(row=label(fails))
        for (row, task), g in fails.groupby(["row", "task"]):
            cols = [i for i, c in enumerate(grid.columns) if c.split("\n")[0] == task]
            r = rows_order.index(row)
            if cols and pd.isna(grid.iloc[r, cols[0]]):
                ax.text(cols[0] + 0.5, r + 0.5, "/".join(sorted(set(g["status"]))), ha="center", va="center",
                        color="firebrick", fontsize=8)
    ax.tick_params(axis="x", labelrotation=0, labelsize=7)
    ax.tick_params(axis="y", labelrotation=0)
    for tick in ax.get_yticklabels():
        tick.set_color(_color(palette, tick.get_text().split(" · ")[0]))
    ax.set_xlabel("task (metric), or task × k: tested at k times the trained length L")
    ax.set_ylabel("model")
    ax.set_title("score per model and task (best lr, mean over seeds)")
    return _finish(fig, df[df["measure"] == "accuracy"],
                   "Score per model × task at the best learning rate, printed raw; colour: skill = (score − "
                   "chance) / (1 − chance), for error metrics (mse, nmse, bits/char) the normalised error "
                   "1 − error / chance (0 = chance, 1 = perfect). Hatched grey, “≈ chance”: the 95% interval does "
                   f"not clear chance by {tables.LEARNED_SKILL:.0%} of the way to perfect; blank: not run")


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


def _bands(ax: object, rows: pd.DataFrame, x: str, palette: Mapping[str, Color], vcols: list[str]) -> None:
    """The 95% interval (ci_low..ci_high) of each model's line as a shaded band."""
    if not {"ci_low", "ci_high"} <= set(rows.columns):
        return
    for model, _variant, g in _series(rows, vcols):
        g = g.dropna(subset=["ci_low", "ci_high"]).groupby(x)[["ci_low", "ci_high"]].mean().sort_index()
        if len(g):
            ax.fill_between(g.index, g["ci_low"], g["ci_high"], color=_color(palette, model), alpha=0.15,
                            linewidth=0)


def _chance_line(ax: object, rows: pd.DataFrame, x: str) -> None:
    """The chance level against x, dashed grey (labelled once per panel)."""
    ch = rows.dropna(subset=["chance"]).groupby(x)["chance"].mean().sort_index() if "chance" in rows else None
    if ch is not None and len(ch):
        ax.plot(ch.index, ch.to_numpy(), color="0.45", linestyle="--", linewidth=1, label="chance", zorder=1)


@_themed
def length_extrapolation(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Score at k × the trained length with its 95% interval, one panel per task, a line per model; the
    dashed line is chance at each length."""
    df, palette = _resolve(df, palette)
    rows = tables.length_scores(df)
    prim = tables.primary_metrics(df)
    tasks = sorted(t for t, g in rows.groupby("task") if g["length_factor"].nunique() >= 2)
    if not tasks:
        raise NoData("no accuracy rows at lengths other than the trained one (rows with `length_factor` ≠ 1)")
    vcols, _ = _styles(df)

    def decorate(ax: object, task: str, g: pd.DataFrame) -> None:
        _bands(ax, g, "length_factor", palette, vcols)
        _chance_line(ax, g, "length_factor")
        ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)

    fig = facets(rows, "task", "length_factor", df, palette, keys=tasks, xlabel="eval length / trained length",
                 ylabel=lambda task, g: prim[task], decorate=decorate)
    used = tables.at_best_lr(df)
    return _finish(fig, used[used["task"].isin(tasks)],
                   "Length extrapolation: score at k × the trained length (best lr, mean over seeds; band: 95% "
                   "interval; dashed: chance at that length; dotted: trained length). A length a model cannot "
                   "run is listed in the extrapolation table")


@_themed
def learning_curves(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Training curves at the best lr (validation data): a row of panels per task, a column per metric;
    bands are 95% intervals, the dashed line chance."""
    df, palette = _resolve(df, palette)
    rows = tables.at_best_lr(df)
    rows = rows[(rows["split"] == "curve") & rows["step"].notna()]
    if rows.empty:
        raise NoData("no learning-curve rows (accuracy rows with split 'curve' and `step`)")
    order = ["train_loss", "eval_loss", *tables.ACCURACY_METRICS]
    keys = ["run", "model", "task", "dtype", "metric", "step"]
    summary = summarise_seeds(rows, keys)

    def metrics_of(task: str) -> list[str]:
        present = summary.loc[summary["task"] == task, "metric"].unique()
        return sorted(present, key=lambda m: (order.index(m) if m in order else len(order), m))

    tasks = sorted(summary["task"].dropna().unique())
    vcols, styles = _styles(df)
    fig, axes = _grid(len(tasks), max(len(metrics_of(t)) for t in tasks))
    for i, task in enumerate(tasks):
        metrics = metrics_of(task)
        for j, ax in enumerate(axes[i]):
            if j >= len(metrics):
                ax.set_visible(False)
                continue
            g = summary[(summary["task"] == task) & (summary["metric"] == metrics[j])]
            _plot_lines(ax, g, "step", palette, vcols, styles)
            _bands(ax, g, "step", palette, vcols)
            if metrics[j] in tables.ACCURACY_METRICS:
                _chance_line(ax, g, "step")
            ax.set_title(f"{task}: {metrics[j]}")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(metrics[j])
    _legend(fig, axes)
    return _finish(fig, rows, "Learning curves at the best learning rate on validation data (mean over seeds; "
                   "band: 95% interval; dashed: chance)")
