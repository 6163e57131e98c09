"""Training-dynamics figures: gradient flow."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from seqbench.bench.report.plots.common import (
    Color,
    NoData,
    _finish,
    _grid,
    _legend,
    _log_x_if_wide,
    _plot_lines,
    _resolve,
    _styles,
    _themed,
)
from seqbench.bench.report.tables import ok


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
