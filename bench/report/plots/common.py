"""What every report figure shares: styling, palette, captions, grids, lines, legends, facets."""

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

from seqbench.bench.report import tables
from seqbench.bench.report.tables import tidy

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


def facets(rows: pd.DataFrame, by: str, x: str, df: pd.DataFrame, palette: Mapping[str, Color], *,
           xlabel: str, ylabel: Callable[[str, pd.DataFrame], str], keys: list[str] | None = None,
           decorate: Callable[[Any, str, pd.DataFrame], None] | None = None) -> Figure:
    """One panel per value of `by` (in the order of `keys`, else sorted), a line per model (and
    run/dtype variant) of y=value against `x`; log x when the values span a wide range."""
    keys = keys if keys is not None else sorted(rows[by].dropna().unique())
    vcols, styles = _styles(df)
    fig, axes = _grid(*_wrap_grid(len(keys)))
    for ax, key in zip(axes.flat, keys):
        g = rows[rows[by] == key]
        _plot_lines(ax, g, x, palette, vcols, styles)
        if decorate is not None:
            decorate(ax, key, g)
        _log_x_if_wide(ax, g[x])
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel(key, g))
    _hide_unused(axes, len(keys))
    _legend(fig, axes)
    return fig
