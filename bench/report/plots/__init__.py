"""Report figures: pure functions from tidy rows (seqbench.bench.results.io.load_runs) to a matplotlib Figure.

Every figure function takes the whole DataFrame of a report and a model -> colour palette
(`model_palette` of every model in the report, so a model keeps its colour in every figure),
selects its own rows, and returns a `matplotlib.figure.Figure` rendered by Agg when saved
(no pyplot, no global state, seaborn styling inside an rc context). When its data is absent
it raises `NoData(reason)`; the report then prints the reason instead of the figure.

Each figure carries its caption (what is plotted, then device, dtype and git sha of every
run it shows) as a text artist; `figure_caption(fig)` reads it back.
"""

from seqbench.bench.report.plots.accuracy import (
    accuracy_heatmap,
    accuracy_vs_distance,
    accuracy_vs_seq_len,
    learning_curves,
    length_extrapolation,
)
from seqbench.bench.report.plots.common import CAPTION_GID, NoData, caption, figure_caption, model_palette
from seqbench.bench.report.plots.speed import (
    accuracy_vs_throughput,
    latency_percentiles,
    latency_vs_position,
    memory_scaling,
    throughput_scaling,
)
from seqbench.bench.report.plots.training import gradient_flow

__all__ = [
    "CAPTION_GID", "NoData", "accuracy_heatmap", "accuracy_vs_distance", "accuracy_vs_seq_len",
    "accuracy_vs_throughput", "caption", "figure_caption", "gradient_flow", "latency_percentiles",
    "latency_vs_position", "learning_curves", "length_extrapolation", "memory_scaling", "model_palette",
    "throughput_scaling",
]
