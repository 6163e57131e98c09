"""Report figures: pure functions from tidy rows (bench.results.load_runs) to a matplotlib Figure.

Every figure function takes the whole DataFrame of a report and a model -> colour palette
(`model_palette` of every model in the report, so a model keeps its colour in every figure),
selects its own rows, and returns a `matplotlib.figure.Figure` rendered by Agg when saved
(no pyplot, no global state, seaborn styling inside an rc context). When its data is absent
it raises `NoData(reason)`; the report then prints the reason instead of the figure.

Each figure carries its caption (what is plotted, then device, dtype and git sha of every
run it shows) as a text artist; `figure_caption(fig)` reads it back.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from typing import Any

import matplotlib as mpl
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench import tables
from bench.tables import FRACTION_METRICS, MODES, ok, tidy

Color = tuple[float, float, float]
CAPTION_GID = "seqbench-caption"
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PANEL_W, PANEL_H = 3.8, 2.9


class NoData(Exception):
    """The rows hold nothing this figure can show; the message says what is missing."""


# --- styling and captions --------------------------------------------------------------------


def model_palette(models: Iterable[Any]) -> dict[str, Color]:
    """One fixed colour per model, keyed by the sorted model names (tab10, or husl beyond 10)."""
    names = sorted({str(m) for m in models if isinstance(m, str) or pd.notna(m)})
    colors = sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colors))


def _themed(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure function under seaborn's whitegrid style without touching global rcParams."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.75),
              "svg.hashsalt": "seqbench", "figure.dpi": 100}
        with mpl.rc_context(rc):
            return fn(*args, **kwargs)

    return wrapper


def _join(values: pd.Series) -> str:
    vals = sorted({str(v) for v in values.dropna()})
    return ", ".join(vals) if vals else "unknown"


def caption(rows: pd.DataFrame, note: str = "") -> str:
    """`note` followed by device (name), dtype and git sha of each run among `rows`."""
    rows = tidy(rows)
    runs = sorted(rows["run"].dropna().unique())
    parts = []
    for run in runs:
        g = rows[rows["run"] == run]
        sha = _join(g["git_sha"].dropna().map(lambda s: str(s)[:10]))
        dirty = " (dirty)" if "git_dirty" in g and g["git_dirty"].map(lambda v: v is True).any() else ""
        env = f"device {_join(g['device'])} ({_join(g['device_name'])}) · dtype {_join(g['dtype'])} · git {sha}{dirty}"
        parts.append(env if len(runs) == 1 else f"[{run}] {env}")
    text = "; ".join(parts)
    return f"{note} — {text}" if note else text


def figure_caption(fig: Figure) -> str:
    """The caption text a figure function attached to `fig` ('' when none)."""
    return next((t.get_text().replace("\n", " ") for t in fig.texts if t.get_gid() == CAPTION_GID), "")


def _finish(fig: Figure, rows: pd.DataFrame, note: str) -> Figure:
    """Attach the caption below the axes (space reserved in the layout) and plain tick labels."""
    text = textwrap.fill(caption(rows, note), max(60, int(fig.get_figwidth() * 17)))
    height_in = (text.count("\n") + 1) * 7 * 1.35 / 72 + 0.08
    bottom = min(0.5, height_in / fig.get_figheight())
    fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    fig.text(0.008, bottom - 0.02 / fig.get_figheight(), text, ha="left", va="top", fontsize=7, color="0.3",
             gid=CAPTION_GID)
    for ax in fig.axes:
        _plain_log_ticks(ax)
    return fig


def _short(value: float, _pos: Any = None) -> str:
    """Tick text without mathtext (fast to lay out): 64, 1k, 16k, 2M, 0.01, 1e-05."""
    if value == 0:
        return "0"
    a = abs(value)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            v = value / div
            return f"{v:.3g}{suffix}" if not (value / div).is_integer() else f"{int(v)}{suffix}"
    return f"{value:.3g}" if a >= 1e-3 else f"{value:.0e}"


def _plain_int(value: float, _pos: Any = None) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _plain_log_ticks(ax: Any) -> None:
    """Log axes: lengths in base 2 as plain integers (64, 1024), other values short (10k, 1M)."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() in ("log", "symlog"):
            base = getattr(axis.get_transform(), "base", 10)
            axis.set_major_formatter(mticker.FuncFormatter(_plain_int if base == 2 else _short))
            axis.set_minor_formatter(mticker.NullFormatter())


def _grid(n_rows: int, n_cols: int, legend: bool = True, **kw: Any) -> tuple[Figure, np.ndarray]:
    extra = 1.8 if legend else 0.0
    fig = Figure(figsize=(PANEL_W * n_cols + extra, PANEL_H * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False, **kw)


def _styles(df: pd.DataFrame) -> tuple[list[str], dict[tuple, tuple[str, str]]]:
    """Variant columns (run, dtype where they vary) and a (linestyle, marker) per variant value."""
    cols = tables.variant_columns(df)
    if not cols:
        return [], {(): ("-", "o")}
    combos = sorted({tuple(r) for r in df[cols].astype(str).itertuples(index=False)})
    return cols, {c: (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i, c in enumerate(combos)}


def _series(rows: pd.DataFrame, vcols: list[str]) -> Iterable[tuple[str, tuple, pd.DataFrame]]:
    """(model, variant, rows) for each line to draw, in a stable order."""
    keyed = rows.assign(**{c: rows[c].astype(str) for c in vcols})
    for key, g in keyed.groupby(["model"] + vcols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield str(key[0]), tuple(key[1:]), g


def _color(palette: Mapping[str, Color], model: str) -> Color:
    return palette.get(model, (0.4, 0.4, 0.4))


def _plot_lines(ax: Any, rows: pd.DataFrame, x: str, palette: Mapping[str, Color], vcols: list[str],
                styles: Mapping[tuple, tuple[str, str]], labels: Mapping[tuple, str] | None = None) -> None:
    """One line per (model, variant): mean of `value` over duplicates at each x."""
    for model, variant, g in _series(rows, vcols):
        line = g.groupby(x)["value"].mean().sort_index()
        ls, marker = styles.get(variant, ("-", "o"))
        label = (labels or {}).get((model, *variant), tables.series_label(model, variant))
        ax.plot(line.index, line.to_numpy(), color=_color(palette, model), linestyle=ls, marker=marker,
                markersize=4, linewidth=1.5, label=label)


def _legend(fig: Figure, axes: np.ndarray, title: str | None = None) -> None:
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    handles = dict(sorted(handles.items()))
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7, frameon=False,
                   title=title, title_fontsize=7)


def _log_x_if_wide(ax: Any, values: pd.Series, base: int = 2) -> None:
    """Log x when the values span at least 8x (symlog when 0 is among them)."""
    vals = values[values > 0]
    if len(vals) and vals.max() / vals.min() >= 8:
        if (values == 0).any():
            ax.set_xscale("symlog", base=base, linthresh=1)
            ax.set_xlim(left=-0.3)  # 0 sits in the linear part; no negative ticks
        else:
            ax.set_xscale("log", base=base)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _wrap_grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def _resolve(df: pd.DataFrame, palette: Mapping[str, Color] | None) -> tuple[pd.DataFrame, Mapping[str, Color]]:
    df = tidy(df)
    return df, palette if palette is not None else model_palette(df["model"])


def _mark_failures(ax: Any, fails: pd.DataFrame, palette: Mapping[str, Color]) -> None:
    """An × at the bottom edge at the seq_len of each failed cell, in the model's colour."""
    fails = fails[fails["seq_len"].notna()]
    for model, g in fails.groupby("model"):
        ax.plot(g["seq_len"], np.full(len(g), 0.03), linestyle="none", marker="x", markersize=7,
                color=_color(palette, str(model)), transform=ax.get_xaxis_transform(), clip_on=False)


# --- accuracy --------------------------------------------------------------------------------


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
    vcols, styles = _styles(df)
    fig, axes = _grid(*_wrap_grid(len(kinds)))
    for ax, kind in zip(axes.flat, kinds):
        g = sc[sc["kind"] == kind]
        _plot_lines(ax, g, "seq_len", palette, vcols, styles)
        _log_x_if_wide(ax, g["seq_len"])
        ax.set_title(kind)
        ax.set_xlabel("trained seq_len")
        ax.set_ylabel(_join(g["metric"]))
    _hide_unused(axes, len(kinds))
    _legend(fig, axes)
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
    vcols, styles = _styles(df)
    tasks = sorted(rows["task"].dropna().unique())
    fig, axes = _grid(*_wrap_grid(len(tasks)))
    for ax, task in zip(axes.flat, tasks):
        g = rows[rows["task"] == task]
        _plot_lines(ax, g, "distance", palette, vcols, styles)
        _log_x_if_wide(ax, g["distance"])
        ax.set_title(task)
        ax.set_xlabel("dependency distance (positions)")
        ax.set_ylabel(_join(g["metric"]))
    _hide_unused(axes, len(tasks))
    _legend(fig, axes)
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
    vcols, styles = _styles(df)
    fig, axes = _grid(*_wrap_grid(len(tasks)))
    for ax, task in zip(axes.flat, tasks):
        g = rows[rows["task"] == task]
        _plot_lines(ax, g, "length_factor", palette, vcols, styles)
        ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
        _log_x_if_wide(ax, g["length_factor"])
        ax.set_title(task)
        ax.set_xlabel("eval length / trained length")
        ax.set_ylabel(prim[task])
    _hide_unused(axes, len(tasks))
    _legend(fig, axes)
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


# --- speed and memory ------------------------------------------------------------------------


def _mode_panels(rows: pd.DataFrame) -> list[str]:
    modes = [str(m) for m in rows["mode"].dropna().unique()]
    return sorted(modes, key=lambda m: (MODES.index(m) if m in MODES else len(MODES), m))


@_themed
def throughput_scaling(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Tokens/s against seq_len, log–log, a panel per mode; each model's scaling exponent k in its label.

    k is the slope of log(time per sequence) against log(seq_len) (bench.tables.scaling_exponents):
    ≈1 linear, ≈2 quadratic.
    """
    df, palette = _resolve(df, palette)
    rows = ok(df)
    rows = rows[(rows["metric"] == "tokens_per_s") & rows["seq_len"].notna() & (rows["value"] > 0)]
    if rows.empty:
        raise NoData("no throughput rows (metric tokens_per_s with seq_len)")
    rows = rows.assign(mode=rows["mode"].fillna("unspecified"))
    modes = _mode_panels(rows)
    batches = {m: tables.reference_batch_size(rows[rows["mode"] == m]) for m in modes}
    rows = rows[[b is None or bs == b for b, bs in zip(rows["mode"].map(batches), rows["batch_size"])]]
    fits = tables.scaling_exponents(rows)
    vcols, styles = _styles(df)
    exps: dict[tuple, dict[str, float]] = {}
    for r in fits.itertuples(index=False):
        exps.setdefault((r.model, *(str(getattr(r, c)) for c in vcols)), {})[r.mode] = r.exponent
    labels = {key: f"{tables.series_label(key[0], key[1:])}  k=" + " / ".join(
        f"{k[m]:.2f}" if m in k else "–" for m in modes) for key, k in exps.items()}
    fails = tables.failures(df)
    fails = fails[(fails["measure"] == "throughput") & fails["seq_len"].notna()]
    fig, axes = _grid(1, len(modes), legend=True)
    notes, failed = [], set()
    for ax, mode in zip(axes.flat, modes):
        batch = batches[mode]
        _plot_lines(ax, rows[rows["mode"] == mode], "seq_len", palette, vcols, styles, labels)
        f = fails[(fails["mode"].isna() | (fails["mode"] == mode))
                  & (fails["batch_size"].isna() | (fails["batch_size"] == batch))]
        _mark_failures(ax, f, palette)
        failed |= set(f.index)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{mode} (batch_size {batch:g})" if batch is not None else mode)
        ax.set_xlabel("seq_len")
        ax.set_ylabel("tokens/s")
        notes.append(f"{mode}: batch_size {batch:g}" if batch is not None else mode)
    _legend(fig, axes, title="model  k = " + " / ".join(modes))
    note = ("Throughput against seq_len (log–log). k = scaling exponent, the slope of log(time per sequence) "
            "against log(seq_len): ≈1 linear, ≈2 quadratic. " + "; ".join(notes))
    if failed:
        note += f". × = {len(failed)} failed cell(s), see the failures table"
    return _finish(fig, pd.concat([rows, df[df["measure"] == "throughput"]]), note)


@_themed
def memory_scaling(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Peak memory against seq_len, log–log, a panel per mode, plus the analytic state size."""
    df, palette = _resolve(df, palette)
    rows = ok(df)
    peak = rows[(rows["metric"] == "peak_bytes") & rows["seq_len"].notna() & (rows["value"] > 0)]
    state = rows[(rows["metric"] == "state_bytes") & rows["seq_len"].notna() & (rows["value"] > 0)]
    # State bytes scale with batch_size: the memory measure's at the reference batch, else static's (batch 1).
    mem_state = state[state["measure"] == "memory"]
    batch = tables.reference_batch_size(mem_state)
    state = mem_state[mem_state["batch_size"] == batch] if batch is not None else state[state["measure"] != "memory"]
    state = state if state["seq_len"].nunique() >= 2 else state.iloc[:0]
    if peak.empty and state.empty:
        raise NoData("no memory rows (metric peak_bytes, or state_bytes at several seq_len)")
    peak = peak.assign(mode=peak["mode"].fillna("unspecified"))
    panels = [(m, peak[peak["mode"] == m]) for m in _mode_panels(peak)]
    if len(state):
        panels.append(("state (analytic)", state.assign(batch_size=batch if batch is not None else 1.0)))
    vcols, styles = _styles(df)
    fails = tables.failures(df)
    fails = fails[fails["measure"] == "memory"]
    fig, axes = _grid(1, len(panels))
    notes, failed = [], set()
    for ax, (name, g) in zip(axes.flat, panels):
        batch = tables.reference_batch_size(g)
        g = g[g["batch_size"] == batch] if batch is not None else g
        _plot_lines(ax, g.assign(value=g["value"] / 2**20), "seq_len", palette, vcols, styles)
        if name != "state (analytic)":
            f = fails[(fails["mode"].isna() | (fails["mode"] == name))
                      & (fails["batch_size"].isna() | (fails["batch_size"] == batch))]
            _mark_failures(ax, f, palette)
            failed |= set(f[f["seq_len"].notna()].index)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name} (batch_size {batch:g})" if batch is not None else name)
        ax.set_xlabel("seq_len")
        ax.set_ylabel("peak memory (MiB)" if name != "state (analytic)" else "state / KV cache (MiB)")
        notes.append(f"{name}: batch_size {batch:g}" if batch is not None else name)
    _legend(fig, axes)
    note = "Peak memory against seq_len (log–log). " + "; ".join(notes)
    if failed:
        note += f". × = {len(failed)} failed cell(s), see the failures table"
    return _finish(fig, pd.concat([peak, state, df[df["measure"] == "memory"]]), note)


@_themed
def latency_vs_position(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Per-token streaming latency against the position in the stream, a line per model."""
    df, palette = _resolve(df, palette)
    rows = ok(df)
    rows = rows[(rows["metric"] == "latency_ms") & rows["position"].notna()]
    if rows.empty:
        raise NoData("no latency-against-position rows (metric latency_ms with `position`)")
    longest = rows.groupby(["run", "model", "dtype"], dropna=False)["seq_len"].transform("max")
    rows = rows[(rows["seq_len"] == longest) | longest.isna()]
    small = rows.groupby(["run", "model", "dtype"], dropna=False)["batch_size"].transform("min")
    rows = rows[(rows["batch_size"] == small) | small.isna()]
    vcols, styles = _styles(df)
    fig, axes = _grid(1, 1)
    ax = axes[0, 0]
    _plot_lines(ax, rows, "position", palette, vcols, styles)
    _log_x_if_wide(ax, rows["position"])
    if rows["value"].min() > 0 and rows["value"].max() / rows["value"].min() >= 10:
        ax.set_yscale("log")
    ax.set_xlabel("position in the stream (tokens)")
    ax.set_ylabel("latency per token (ms)")
    ax.set_title("streaming step latency")
    _legend(fig, axes)
    skipped = tables.failures(df)
    skipped = skipped[skipped["measure"] == "latency"]
    note = "Per-token step() latency against position (longest seq_len, smallest batch of each model)"
    if len(skipped):
        note += f"; {skipped['model'].nunique()} model(s) without latency, see the failures table"
    return _finish(fig, rows, note)


@_themed
def latency_percentiles(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """p50 / p90 / p99 per-token latency per model (a range from p50 to p99)."""
    df, palette = _resolve(df, palette)
    rows = ok(df)
    pcts = ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]
    rows = rows[rows["metric"].isin(pcts) & rows["position"].isna()]
    if rows.empty:
        raise NoData("no latency percentile rows (latency_p50_ms / latency_p99_ms)")
    longest = rows.groupby(["run", "model", "dtype"], dropna=False)["seq_len"].transform("max")
    rows = rows[(rows["seq_len"] == longest) | longest.isna()]
    small = rows.groupby(["run", "model", "dtype"], dropna=False)["batch_size"].transform("min")
    rows = rows[(rows["batch_size"] == small) | small.isna()]
    vcols, _ = _styles(df)
    series = list(_series(rows, vcols))
    fig = Figure(figsize=(1.5 + 0.6 * len(series) + 1.8, PANEL_H + 0.6), layout="constrained")
    ax = fig.subplots()
    pct_markers = {"latency_p50_ms": "o", "latency_p90_ms": "s", "latency_p99_ms": "^"}
    for i, (model, variant, g) in enumerate(series):
        vals = g.groupby("metric")["value"].median()
        color = _color(palette, model)
        present = [p for p in pcts if p in vals]
        ax.plot([i] * len(present), [vals[p] for p in present], color=color, linewidth=2)
        for p in present:
            ax.plot(i, vals[p], marker=pct_markers[p], color=color, markersize=6, linestyle="none")
    ax.set_xticks(range(len(series)), [tables.series_label(m, v) for m, v, _ in series], rotation=30, ha="right")
    for tick, (model, _, _) in zip(ax.get_xticklabels(), series):
        tick.set_color(_color(palette, model))
    if rows["value"].min() > 0 and rows["value"].max() / rows["value"].min() >= 10:
        ax.set_yscale("log")
    ax.set_ylabel("latency per token (ms)")
    ax.set_title("streaming latency percentiles")
    keys = [Line2D([], [], marker=pct_markers[p], color="0.3", linestyle="none", label=p.split("_")[1])
            for p in pcts if p in set(rows["metric"])]
    fig.legend(handles=keys, loc="outside right upper", fontsize=7, frameon=False)
    return _finish(fig, rows, "Per-token latency p50 / p90 / p99 per model (longest seq_len, smallest batch)")


@_themed
def accuracy_vs_throughput(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Mean best accuracy against inference tokens/s per model, the Pareto front marked."""
    df, palette = _resolve(df, palette)
    pts = tables.accuracy_throughput(df)
    if pts.empty:
        raise NoData("needs both accuracy scores (a fraction metric) and inference tokens_per_s for some model")
    vcols, styles = _styles(df)
    fig, axes = _grid(1, 1)
    ax = axes[0, 0]
    for model, variant, g in _series(pts, vcols):
        ls, marker = styles.get(variant, ("-", "o"))
        edge = ["black" if p else "none" for p in g["pareto"]]
        ax.scatter(g["tokens_per_s"], g["accuracy"], color=_color(palette, model), marker=marker, s=50,
                   edgecolors=edge, linewidths=1.2, label=tables.series_label(model, variant), zorder=3)
        for x, y in zip(g["tokens_per_s"], g["accuracy"]):
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6.5)
    for variant, g in pts.groupby(vcols) if vcols else [((), pts)]:
        front = g[g["pareto"]].sort_values("tokens_per_s")
        ls, _ = styles.get(tuple(str(v) for v in (variant if isinstance(variant, tuple) else (variant,))),
                           ("-", "o"))
        ax.plot(front["tokens_per_s"], front["accuracy"], color="0.2", linestyle=ls, linewidth=1,
                drawstyle="steps-pre", zorder=2, label="Pareto front" if not vcols else None)
    ax.set_xscale("log")
    ax.set_xlabel("inference tokens/s")
    ax.set_ylabel("mean best accuracy")
    ax.set_title("accuracy against throughput")
    _legend(fig, axes)
    shapes = "; ".join(f"{r}: batch_size {g['batch_size'].iloc[0]:g}, seq_len {g['seq_len'].iloc[0]:g}"
                       for r, g in pts.groupby("run"))
    note = (f"Mean best accuracy (over fraction-metric tasks) against inference tokens/s at {shapes}; "
            "black edge and line = Pareto front (no model is both faster and more accurate)")
    used = df[df["model"].isin(pts["model"]) & df["run"].isin(pts["run"])]
    return _finish(fig, used, note)


@_themed
def gradient_flow(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """‖∂loss(last) / ∂input(t)‖ against the distance T − t, log scale; init and trained side by side."""
    df, palette = _resolve(df, palette)
    rows = ok(df)
    rows = rows[(rows["metric"] == "grad_norm") & rows["distance"].notna() & (rows["value"] > 0)]
    if rows.empty:
        raise NoData("no gradient-flow rows (metric grad_norm with `distance`)")
    rows = rows.assign(stage=np.where(rows["step"].fillna(0) > 0, "after training", "at initialization"))
    stages = [s for s in ("at initialization", "after training") if s in set(rows["stage"])]
    tasks = sorted(rows["task"].fillna("(no task)").unique())
    rows = rows.assign(task=rows["task"].fillna("(no task)"))
    vcols, styles = _styles(df)
    fig, axes = _grid(len(tasks), len(stages), sharey=True)
    for i, task in enumerate(tasks):
        for j, stage in enumerate(stages):
            ax = axes[i, j]
            g = rows[(rows["task"] == task) & (rows["stage"] == stage)]
            _plot_lines(ax, g, "distance", palette, vcols, styles)
            ax.set_yscale("log")
            _log_x_if_wide(ax, rows["distance"])
            steps = sorted(g["step"].dropna().unique())
            ax.set_title(f"{task}: {stage}" + (f" ({steps[-1]:g} steps)" if stage == "after training" else ""))
            ax.set_xlabel("distance T − t (positions)")
            ax.set_ylabel("‖∂loss_T / ∂x_t‖")
    _legend(fig, axes)
    return _finish(fig, rows, "Gradient norm of the last position's loss with respect to the input t positions "
                              "earlier (log scale); vanishing gradients fall off with distance")
