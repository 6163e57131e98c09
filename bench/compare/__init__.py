"""Compare two runs and gate CI on real regressions of speed, memory or accuracy — not on noise.

    seqbench compare BASELINE CURRENT [--fail METRIC:±N%]… [--format table|markdown|json]
                     [--allow-env-change] [--normalize] [--strict] [--accuracy-drop 0.02]
    seqbench baseline save RUN_DIR --name NAME
    seqbench export --format github-action-benchmark RUN_DIR [--direction bigger|smaller]

BASELINE and CURRENT are each a run directory, a results.jsonl file (e.g. a saved
baseline, results/baselines/<machine_class>/NAME.jsonl), or a pytest-benchmark JSON
file (`--benchmark-json`, or `--benchmark-autosave --benchmark-save-data`); several of
one kind joined by commas (`runA,runB`) are pooled into one side, as CI does with
interleaved runs. Rows match on MATCH_KEYS; rows present on one side only are listed.

Compared by default (DEFAULT_METRICS): tokens_per_s, per-token latency (latency_ms
samples, latency_p50_ms, latency_p99_ms), pytest-benchmark times (time_s), peak_bytes
and final accuracy (metric accuracy, best lr of a sweep). Not gated: learning curves
(split "curve"), rows of a non-best lr, per-position and per-distance breakdowns.
`--fail METRIC:±N%` adds METRIC to the compared set and sets its threshold.

Verdicts (seqbench.bench.stats has the timing statistics):
  timing    regression when the ratio of medians is past the threshold (default 10%
            CPU, 5% CUDA) AND the Mann–Whitney U test is significant after Holm
            correction across all timing comparisons AND the bootstrap 95% interval
            excludes the threshold; pass when the interval lies inside the tolerance;
            otherwise inconclusive. Pooled interleaved runs (a1,a2 vs b1,b2): a regression
            must also show in every pair (a_i, b_i) on its own. Different device_name or
            torch_version on the two sides: "not comparable" unless --allow-env-change.
            A warning when nearly all timings moved the same way (the machine changed speed)
            or when the samples are too few for any test to survive Holm correction.
  memory    peak_bytes: CUDA fails above baseline x 1.02 + 1 MiB (allocator counts are
            deterministic), CPU above baseline x 1.10 + 16 MiB (high-water mark).
  accuracy  fails below baseline - 0.02 absolute (--accuracy-drop; deterministic on CPU
            with fixed seeds).
  failed    the cell errored, ran out of memory or timed out on the current side only.

Exit code: 0 pass, 1 a regression or a failed cell, 2 bad input (CompareInputError);
inconclusive is 0 unless --strict.
"""

from seqbench.bench.compare.export import export_github_action_benchmark, save_baseline
from seqbench.bench.compare.judge import (
    ACCURACY_DROP,
    DEFAULT_METRICS,
    MATCH_KEYS,
    MEMORY_TOLERANCE,
    SEVERITY,
    TIMING_THRESHOLD,
    CompareResult,
    Comparison,
    FailRule,
    MiB,
    cell_label,
    compare,
    parse_fail,
)
from seqbench.bench.compare.load import FINGERPRINT, Side, load_side, rows_from_pytest_benchmark
from seqbench.bench.compare.render import RENDER, render_json, render_markdown, render_table, summary_line

__all__ = [
    "ACCURACY_DROP", "DEFAULT_METRICS", "FINGERPRINT", "MATCH_KEYS", "MEMORY_TOLERANCE", "RENDER", "SEVERITY",
    "TIMING_THRESHOLD", "CompareResult", "Comparison", "FailRule", "MiB", "Side", "cell_label", "compare",
    "export_github_action_benchmark", "load_side", "parse_fail", "render_json", "render_markdown",
    "render_table", "rows_from_pytest_benchmark", "save_baseline", "summary_line",
]
