"""Render a CompareResult: a terminal table, Markdown (for a PR comment) or JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from seqbench.bench.compare.judge import SEVERITY, CompareResult, Comparison, MiB

# --- rendering -------------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str | None) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / MiB:.1f} MiB"
    if unit == "fraction":
        return f"{value:.3f}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.4g}"


def _fmt_change(c: Comparison) -> str:
    if c.change is None:
        return "-"
    return f"{c.change:+.3f}" if c.kind == "accuracy" else f"{c.change * 100:+.1f}%"


def _fmt_ci(c: Comparison) -> str:
    if c.ci_low is None or c.ci_high is None:
        return "-"
    return f"[{c.ci_low * 100:+.1f}%, {c.ci_high * 100:+.1f}%]"


def _fmt_p(c: Comparison) -> str:
    return "-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}"


def metric_text(metric: str, extras: dict[str, Any]) -> str:
    """'accuracy split=eval': the metric plus the extras the cell label does not already show."""
    shown = {k: v for k, v in extras.items() if k not in ("mode", "eval_seq_len", "length_factor")
             and not (k == "split" and v == "eval")}
    extra = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    return f"{metric} {extra}".strip()


HEADER = ("verdict", "cell", "metric", "baseline", "current", "change", "95% CI", "p (Holm)", "limit", "note")


def _short(text: str, n: int = 100) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _cells(c: Comparison) -> tuple[str, ...]:
    return (c.verdict, c.label, metric_text(c.metric, c.extras), fmt_value(c.baseline, c.unit),
            fmt_value(c.current, c.unit), _fmt_change(c), _fmt_ci(c), _fmt_p(c), c.threshold, _short(c.note))


def summary_line(result: CompareResult) -> str:
    n = result.counts()
    parts = [f"{n[v]} {v}" for v in SEVERITY if n[v]]
    status = "FAIL" if result.exit_code else "PASS"
    return f"{status}: {len(result.comparisons)} compared — " + (", ".join(parts) or "nothing matched")


def render_table(result: CompareResult) -> str:
    lines = [f"baseline: {result.baseline}", f"current:  {result.current}", summary_line(result)]
    lines += [f"warning: {w}" for w in result.warnings]
    rows = [HEADER] + [_cells(c) for c in result.comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines.append("")
    for i, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for title, listing in (("only in baseline", result.only_baseline), ("only in current", result.only_current)):
        if listing:
            lines.append(f"\n{title} ({len(listing)}):")
            lines += [f"  {x['label']}  {x['metric']}" for x in listing]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(comparisons: list[Comparison]) -> list[str]:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    icon = {"failed": "❌", "regression": "❌", "inconclusive": "⚠️", "not comparable": "⚠️",
            "improvement": "🚀", "pass": "✅"}
    for c in comparisons:
        cells = list(_cells(c))
        cells[0] = f"{icon[c.verdict]} {c.verdict}"
        out.append("| " + " | ".join(_md_escape(x) for x in cells) + " |")
    return out


def render_markdown(result: CompareResult) -> str:
    """A PR comment: summary, warnings, the table of what needs attention, the passes folded."""
    lines = ["## seqbench compare", "", f"**{summary_line(result)}**", "",
             f"baseline `{result.baseline}` → current `{result.current}`", ""]
    lines += [f"> ⚠️ {_md_escape(w)}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    attention = [c for c in result.comparisons if c.verdict not in ("pass", "improvement")]
    rest = [c for c in result.comparisons if c.verdict in ("pass", "improvement")]
    lines += _md_table(attention if attention else rest)
    if attention and rest:
        lines += ["", f"<details><summary>{len(rest)} passing</summary>", ""] + _md_table(rest) + ["", "</details>"]
    for title, listing in (("Only in baseline", result.only_baseline), ("Only in current", result.only_current)):
        if listing:
            lines += ["", f"**{title}** ({len(listing)}):", ""]
            lines += [f"- `{_md_escape(x['label'])}` {x['metric']}" for x in listing]
    lines += ["", ("<sub>timing: regression = past the limit AND Mann–Whitney p (Holm) < 0.05 AND the 95% "
                   "bootstrap interval past the limit; inconclusive = too noisy to tell.</sub>")]
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def render_json(result: CompareResult) -> str:
    doc = {"baseline": result.baseline, "current": result.current, "exit_code": result.exit_code,
           "summary": result.counts(), "warnings": result.warnings,
           "comparisons": [asdict(c) for c in result.comparisons],
           "only_baseline": result.only_baseline, "only_current": result.only_current}
    return json.dumps(_json_safe(doc), indent=2)


RENDER = {"table": render_table, "markdown": render_markdown, "json": render_json}
