"""Speed and memory figures: throughput and memory against length, streaming latency, accuracy against throughput."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seqbench.bench.report import tables
from seqbench.bench.report.plots.common import (
    PANEL_H,
    Color,
    NoData,
    _color,
    _finish,
    _grid,
    _legend,
    _log_x_if_wide,
    _mark_failures,
    _plot_lines,
    _resolve,
    _series,
    _styles,
    _themed,
)
from seqbench.bench.report.tables import MODES, ok


def _mode_panels(rows: pd.DataFrame) -> list[str]:
    modes = [str(m) for m in rows["mode"].dropna().unique()]
    return sorted(modes, key=lambda m: (MODES.index(m) if m in MODES else len(MODES), m))


@_themed
def throughput_scaling(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Tokens/s against seq_len, log–log, a panel per mode; each model's scaling exponent k in its label.

    k is the slope of log(time per sequence) against log(seq_len) (seqbench.bench.report.tables.scaling_exponents):
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


def _longest_smallest(rows: pd.DataFrame) -> pd.DataFrame:
    """Each (run, model, dtype)'s rows at its longest seq_len and, there, its smallest batch."""
    keys = ["run", "model", "dtype"]
    longest = rows.groupby(keys, dropna=False)["seq_len"].transform("max")
    rows = rows[(rows["seq_len"] == longest) | longest.isna()]
    small = rows.groupby(keys, dropna=False)["batch_size"].transform("min")
    return rows[(rows["batch_size"] == small) | small.isna()]


@_themed
def latency_vs_position(df: pd.DataFrame, palette: Mapping[str, Color] | None = None) -> Figure:
    """Per-token streaming latency against the position in the stream, a line per model."""
    df, palette = _resolve(df, palette)
    rows = ok(df)
    rows = rows[(rows["metric"] == "latency_ms") & rows["position"].notna()]
    if rows.empty:
        raise NoData("no latency-against-position rows (metric latency_ms with `position`)")
    rows = _longest_smallest(rows)
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
    rows = _longest_smallest(rows)
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
    """Mean skill (chance-normalised score) against inference tokens/s per model, the Pareto front marked;
    a model scored on fewer tasks than the run has is drawn hollow and named in the caption."""
    df, palette = _resolve(df, palette)
    pts = tables.accuracy_throughput(df)
    if pts.empty:
        raise NoData("needs both accuracy scores and inference tokens_per_s for some model")
    vcols, styles = _styles(df)
    fig, axes = _grid(1, 1)
    ax = axes[0, 0]
    for model, variant, g in _series(pts, vcols):
        ls, marker = styles.get(variant, ("-", "o"))
        edge = ["black" if p else _color(palette, model) for p in g["pareto"]]
        full = (g["missing"] == "").to_numpy()
        face = [_color(palette, model) if f else "none" for f in full]
        ax.scatter(g["tokens_per_s"], g["skill"], facecolors=face, marker=marker, s=50,
                   edgecolors=edge, linewidths=1.2, label=tables.series_label(model, variant), zorder=3)
        for x, y, n in zip(g["tokens_per_s"], g["skill"], g["n_tasks"]):
            ax.annotate(f"{model} ({n})", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6.5)
    for variant, g in pts.groupby(vcols) if vcols else [((), pts)]:
        front = g[g["pareto"]].sort_values("tokens_per_s")
        ls, _ = styles.get(tuple(str(v) for v in (variant if isinstance(variant, tuple) else (variant,))),
                           ("-", "o"))
        ax.plot(front["tokens_per_s"], front["skill"], color="0.2", linestyle=ls, linewidth=1,
                drawstyle="steps-pre", zorder=2, label="Pareto front" if not vcols else None)
    ax.axhline(0.0, color="0.45", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("inference tokens/s")
    ax.set_ylabel("mean skill (0 = chance, 1 = perfect)")
    ax.set_title("accuracy against throughput")
    _legend(fig, axes)
    shapes = "; ".join(f"{r}: batch_size {g['batch_size'].iloc[0]:g}, seq_len {g['seq_len'].iloc[0]:g}"
                       for r, g in pts.groupby("run"))
    partial = pts[pts["missing"] != ""]
    sets = ("every model on the same tasks" if partial.empty else
            "hollow = scored on fewer tasks than the run has, so not comparable: " + "; ".join(
                f"{m} lacks {miss}" for m, miss in zip(partial["model"], partial["missing"])))
    note = (f"Mean skill over the tasks each model was scored on (number in brackets; skill = (score − chance) / "
            f"(1 − chance), normalised error for mse) against inference tokens/s at {shapes}; {sets}; "
            "black edge and line = Pareto front (no model is both faster and more skilled)")
    used = df[df["model"].isin(pts["model"]) & df["run"].isin(pts["run"])]
    return _finish(fig, used, note)
