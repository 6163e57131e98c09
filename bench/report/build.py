"""Build the report of one or several runs: index.md, a self-contained index.html, figures, tables.

    build_report([RUN_DIR])                 -> RUN_DIR/report/
    build_report([RUN_A, RUN_B], out_dir)   -> out_dir (default RUN_A/report-merged/)

Layout of the report folder:

    index.md      figures linked from figures/, tables inline (GitHub renders it)
    index.html    the same, self-contained: figures embedded as base64 PNG, no external resource
    figures/      NAME.png and NAME.svg for every figure whose data is present
    tables/       NAME.csv for every table (failures.csv always, even when empty)

The report never measures: it reads rows (seqbench.bench.results.io), turns them into tables
(seqbench.bench.report.tables) and figures (seqbench.bench.report.plots), and writes files. A figure whose rows are absent
is replaced by a line saying why. Failed, skipped and missing cells (cells of the run's
suite.yaml with no row, e.g. after Ctrl-C) are listed with their reason. Merged runs are
told apart by their `run` label in every figure (line style) and table (column).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from seqbench.bench.report import plots, tables
from seqbench.bench.report.plots.common import _join as join_values
from seqbench.bench.results.io import PLAN_FILE, load_runs, read_plan
from seqbench.errors import ReportInputError, ResultsError

REPORT_DIR = "report"
MERGED_DIR = "report-merged"
MISSING = "missing"


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    draw: Callable[[pd.DataFrame, dict], Figure]


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    make: Callable[[pd.DataFrame], pd.DataFrame]
    absent: str  # why the table can be empty


@dataclass
class Section:
    title: str
    items: list[Any] = field(default_factory=list)  # FigureSpec | TableSpec | str


def _compact(make: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`make`, without the run and dtype columns where the report has a single one of each."""

    def table(df: pd.DataFrame) -> pd.DataFrame:
        out = make(df)
        varying = tables.variant_columns(tables.tidy(df))
        return out.drop(columns=[c for c in ("run", "dtype") if c in out.columns and c not in varying])

    return table


ACCURACY_NOTE = (
    "Reading accuracy: every score is shown with its task's chance level (the best input-blind predictor; "
    "for mse the predict-the-mean baseline) and a 95% interval (Wilson over the scored positions or sequences "
    "of one seed; over several seeds a t-interval of their mean, never narrower than the pooled positions "
    "allow). A score is learned when its whole interval lies more than "
    f"{tables.LEARNED_SKILL:.0%} of the way from chance to perfect; otherwise it is marked “≈ chance”. "
    "Leaderboards rank learned scores only, and scores whose intervals overlap share a rank.")


SECTIONS = (
    Section("Accuracy", [
        ACCURACY_NOTE,
        FigureSpec("accuracy_heatmap", "Best score per model and task", plots.accuracy_heatmap),
        TableSpec("leaderboard", "Leaderboard per task", tables.leaderboard, "no accuracy rows"),
        FigureSpec("accuracy_vs_seq_len", "Accuracy against sequence length", plots.accuracy_vs_seq_len),
        FigureSpec("accuracy_vs_distance", "Accuracy against dependency distance", plots.accuracy_vs_distance),
        FigureSpec("length_extrapolation", "Length extrapolation", plots.length_extrapolation),
        TableSpec("extrapolation", "Score at each tested length (95% interval, chance at that length)",
                  tables.extrapolation, "no task was tested beyond its trained length"),
        FigureSpec("learning_curves", "Learning curves", plots.learning_curves),
    ]),
    Section("Speed and memory", [
        FigureSpec("throughput_scaling", "Throughput against sequence length", plots.throughput_scaling),
        TableSpec("scaling_exponents", "Scaling exponents (time per sequence ∝ seq_len^k)",
                  _compact(tables.scaling_exponents), "no model has tokens_per_s at two or more seq_len"),
        FigureSpec("memory_scaling", "Peak memory against sequence length", plots.memory_scaling),
        TableSpec("speed_memory", "Speed and memory", tables.speed_memory,
                  "no tokens_per_s, peak_bytes, achieved_flops or mfu rows"),
        FigureSpec("latency_vs_position", "Streaming latency against position", plots.latency_vs_position),
        FigureSpec("latency_percentiles", "Streaming latency percentiles", plots.latency_percentiles),
        TableSpec("latency", "Streaming latency", tables.latency, "no latency percentile rows"),
        FigureSpec("accuracy_vs_throughput", "Accuracy against throughput", plots.accuracy_vs_throughput),
        TableSpec("accuracy_throughput", "Accuracy against throughput (Pareto front)",
                  _compact(tables.accuracy_throughput),
                  "needs both accuracy scores and inference tokens_per_s"),
    ]),
    Section("Models", [
        TableSpec("static", "Parameters, FLOPs per token, state size", tables.static, "no static rows"),
    ]),
    Section("Training dynamics", [
        FigureSpec("gradient_flow", "Gradient flow", plots.gradient_flow),
    ]),
)


# --- inputs ----------------------------------------------------------------------------------


def _missing_rows(run: str, run_dir: Path, done: set[str]) -> list[dict[str, Any]] | None:
    """A row with status "missing" for each planned cell (RUN_DIR/cells.jsonl) that has no row;
    None when the run has no plan (written by seqbench before 0.2)."""
    plan = read_plan(run_dir)
    if plan is None:
        return None
    note = f"not run: the run stopped before this cell (finish it with `seqbench run --resume {run_dir}`)"
    return [{**cell, "run": run, "status": MISSING, "error": note}
            for cell in plan if cell.get("cell_id") not in done]


def _with_missing(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """df plus "missing" rows; notes for what the reader skipped and for runs without a plan."""
    extra: list[dict[str, Any]] = []
    notes = list(df.attrs.get("warnings", []))
    for run, run_dir in df.attrs.get("run_dirs", {}).items():
        done = set(df.loc[df["run"] == run, "cell_id"].dropna())
        rows = _missing_rows(run, Path(run_dir), done)
        if rows is None:
            notes.append(f"[{run}] has no {PLAN_FILE} (a run of an older seqbench): cells it did not reach "
                         "are not listed")
        else:
            extra += rows
    if not extra:
        return df, notes
    attrs = dict(df.attrs)
    fill = df[df["run"].isin({r["run"] for r in extra})].drop_duplicates("run").set_index("run")
    env_cols = ["device_name", "git_sha", "torch_version", "cuda_version", "threads", "suite", "run_id"]
    missing = pd.DataFrame(extra)
    for col in env_cols:
        if col in fill.columns:
            missing[col] = missing["run"].map(fill[col])
    out = pd.concat([df, missing], ignore_index=True)
    out.attrs = attrs
    return out, notes


def _load(run_dirs: list[Path]) -> pd.DataFrame:
    for d in run_dirs:
        if not Path(d).is_dir():
            raise ReportInputError(f"{d} is not a directory: give run directories (each holding results.jsonl)")
    try:
        return load_runs(run_dirs)
    except ResultsError as exc:
        raise ReportInputError(str(exc)) from exc


# --- rendering -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
        if abs(v) >= 10_000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(value)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as display text (thousands separators, 4 significant digits, blanks for NaN)."""
    return table.astype(object).map(_fmt)


def markdown_table(table: pd.DataFrame) -> str:
    text = formatted(table)

    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in text.columns) + " |",
             "| " + " | ".join("---" for _ in text.columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def html_table(table: pd.DataFrame, name: str) -> str:
    return formatted(table).to_html(index=False, escape=True, border=0, classes=["table"],
                                    table_id="t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name), na_rep="")


def _save(fig: Figure, folder: Path, name: str) -> bytes:
    """Write NAME.png and NAME.svg; return the PNG bytes (embedded in index.html)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    png = buf.getvalue()
    (folder / f"{name}.png").write_bytes(png)
    fig.set_layout_engine("none")  # keep the layout the PNG computed: one layout pass, not two
    fig.savefig(folder / f"{name}.svg", format="svg", metadata={"Date": None})
    return png


class _Doc:
    """index.md and index.html written side by side."""

    def __init__(self, title: str) -> None:
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.toc: list[tuple[int, str, str]] = []

    def heading(self, level: int, text: str, anchor: str) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')
        self.toc.append((level, text, anchor))

    def para(self, text: str, cls: str = "") -> None:
        self.md += [text, ""]
        attr = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")

    def figure(self, name: str, title: str, png: bytes, caption: str) -> None:
        self.md += [f"![{title}](figures/{name}.png)", "", f"*{caption}* ([SVG](figures/{name}.svg))", ""]
        data = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure id="fig-{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def table(self, name: str, table: pd.DataFrame, link: bool = True) -> None:
        self.md += [markdown_table(table), ""] + ([f"[{name}.csv](tables/{name}.csv)", ""] if link else [])
        self.html.append(f'<div class="scroll">{html_table(table, name)}</div>'
                         + (f'<p class="src">tables/{html.escape(name)}.csv</p>' if link else ""))

    def render_md(self) -> str:
        return "\n".join(self.md).rstrip() + "\n"

    def render_html(self, title: str) -> str:
        toc = "".join(f'<li class="l{lvl}"><a href="#{a}">{html.escape(t)}</a></li>' for lvl, t, a in self.toc)
        body = "\n".join(self.html[:1] + [f'<nav><ul>{toc}</ul></nav>'] + self.html[1:])
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{border-bottom:1px solid #eee;margin-top:2em}
nav ul{list-style:none;padding-left:0;columns:2}nav li.l3{padding-left:1.2em;font-size:.92em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;margin-top:.3em}
.scroll{overflow-x:auto}table.table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.table th,table.table td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
table.table th{white-space:nowrap}table.table td{max-width:48em}
table.table th{background:#f5f5f5}table.table td:first-child{text-align:left}
p.omitted{color:#8a6d3b;background:#fcf8e3;padding:.4em .7em;border-left:3px solid #f0ad4e}
p.failed{color:#a94442;background:#f2dede;padding:.4em .7em;border-left:3px solid #d9534f}
p.src{font-size:.75em;color:#888;margin-top:0}
"""


# --- the report ------------------------------------------------------------------------------


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per run: suite, device, dtype, git sha, and row/cell counts by status."""
    envs = df.attrs.get("envs", {})
    out = []
    for run in df.attrs.get("runs", sorted(df["run"].unique())):
        g = df[df["run"] == run]
        env = envs.get(run, {})
        status = g.drop_duplicates(["cell_id", "status"]) if g["cell_id"].notna().any() else g
        counts = status["status"].fillna("ok").value_counts()
        out.append({
            "run": run, "suite": ", ".join(sorted(set(g["suite"].dropna().astype(str)))) or env.get("suite"),
            "device": env.get("device") or join_values(g["device"]),
            "device_name": env.get("device_name") or join_values(g["device_name"]),
            "dtype": join_values(g["dtype"]), "git_sha": str(env.get("git_sha") or join_values(g["git_sha"]))[:10],
            "git_dirty": env.get("git_dirty"), "rows": int((g["status"] != MISSING).sum()),
            **{f"cells_{s}": int(counts.get(s, 0)) for s in ("ok", "skipped", "error", "oom", "timeout", MISSING)},
        })
    return pd.DataFrame(out)


def _clean(folder: Path, suffixes: tuple[str, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.suffix in suffixes:
            f.unlink()


def _draw(spec: FigureSpec, df: pd.DataFrame, palette: dict, strict: bool) -> tuple[Figure | None, str]:
    """(figure, "") or (None, why it is not there)."""
    try:
        return spec.draw(df, palette), ""
    except plots.NoData as exc:
        return None, f"Omitted: {exc}."
    except Exception as exc:
        if strict:
            raise
        # A bug in one figure must not cost the rest of the report; say so where the figure would be.
        warnings.warn(f"figure {spec.name} failed: {type(exc).__name__}: {exc}", stacklevel=2)
        return None, f"Not drawn: the figure failed ({type(exc).__name__}: {exc}); please report this."


def output_dir(run_dirs: list[Path], out_dir: Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    return Path(run_dirs[0]) / (REPORT_DIR if len(run_dirs) == 1 else MERGED_DIR)


def build_report(run_dirs: list[Path], out_dir: Path | None = None, *, strict: bool = False,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Write the report of `run_dirs` and return its folder.

    One run: RUN_DIR/report/ (or out_dir); several: out_dir, default RUN_DIRS[0]/report-merged/.
    Raises ReportInputError when a path is not a readable run directory. With strict=True a
    figure that fails for any reason other than absent data raises instead of being noted.
    What the reader skipped (torn lines, incomplete cells) is noted in the report and passed to `warn`.
    """
    run_dirs = [Path(d) for d in run_dirs]
    df = _load(run_dirs)
    df, notes = _with_missing(df)
    for w in df.attrs.get("warnings", []):
        if warn is not None:
            warn(w)
    df.attrs.setdefault("runs", sorted(df["run"].unique()))
    out = output_dir(run_dirs, out_dir)
    fig_dir, tab_dir = out / "figures", out / "tables"
    _clean(fig_dir, (".png", ".svg"))
    _clean(tab_dir, (".csv",))

    palette = plots.model_palette(df["model"])
    runs = df.attrs["runs"]
    title = f"seqbench report: {runs[0]}" if len(runs) == 1 else f"seqbench report: {len(runs)} runs merged"
    doc = _Doc(title)

    doc.heading(2, "Summary", "summary")
    summary = runs_table(df)
    summary.to_csv(tab_dir / "runs.csv", index=False)
    doc.table("runs", summary)
    fails = tables.failures(df)
    n_bad = len(fails)
    doc.para(f"{len(df) - int((df['status'] == MISSING).sum())} rows from {len(runs)} run(s). " + _outcome_text(fails),
             cls="failed" if (fails["status"] != "skipped").any() else "")
    for note in notes:
        doc.para(note, cls="omitted")

    for section in SECTIONS:
        doc.heading(2, section.title, section.title.lower().replace(" ", "-"))
        for item in section.items:
            if isinstance(item, str):
                doc.para(item)
            elif isinstance(item, FigureSpec):
                _figure_item(doc, item, df, palette, fig_dir, strict)
            else:
                _table_item(doc, item, df, tab_dir)

    doc.heading(2, "Failed, skipped and missing cells", "failures")
    fails.to_csv(tab_dir / "failures.csv", index=False)
    if n_bad:
        doc.table("failures", fails)
    else:
        doc.para("None: every cell of the run wrote ok rows.")

    doc.heading(2, "Environment", "environment")
    env = tables.environment(df.attrs.get("envs", {}))
    if len(env):
        env.to_csv(tab_dir / "environment.csv", index=False)
        doc.table("environment", env)
    else:
        doc.para("Omitted: no env.json in the run directory.", cls="omitted")

    (out / "index.md").write_text(doc.render_md(), encoding="utf-8")
    (out / "index.html").write_text(doc.render_html(title), encoding="utf-8")
    return out


def _outcome_text(fails: pd.DataFrame) -> str:
    """'2 failed (error 1, oom 1), 3 skipped (expected: the measure does not apply), 1 missing …', or all ok."""
    if fails.empty:
        return "Every cell ran ok."
    status = fails["status"]
    failed = status[~status.isin(["skipped", MISSING])]
    parts = []
    if len(failed):
        kinds = ", ".join(f"{k} {n}" for k, n in failed.value_counts().sort_index().items())
        parts.append(f"{len(failed)} failed ({kinds})")
    if (status == "skipped").any():
        parts.append(f"{int((status == 'skipped').sum())} skipped (expected: the measure or length does not apply "
                     "to the model; not failures)")
    if (status == MISSING).any():
        parts.append(f"{int((status == MISSING).sum())} missing (not run)")
    return "; ".join(parts) + ": see “Failed, skipped and missing cells” below."


def _figure_item(doc: _Doc, spec: FigureSpec, df: pd.DataFrame, palette: dict, fig_dir: Path, strict: bool) -> None:
    doc.heading(3, spec.title, f"fig-{spec.name}-h")
    fig, why = _draw(spec, df, palette, strict)
    if fig is None:
        doc.para(why, cls="omitted")
        return
    png = _save(fig, fig_dir, spec.name)
    doc.figure(spec.name, spec.title, png, plots.figure_caption(fig))


def _table_item(doc: _Doc, spec: TableSpec, df: pd.DataFrame, tab_dir: Path) -> None:
    doc.heading(3, spec.title, f"table-{spec.name}-h")
    table = spec.make(df)
    if table.empty:
        doc.para(f"Omitted: {spec.absent}.", cls="omitted")
        return
    table.to_csv(tab_dir / f"{spec.name}.csv", index=False)
    if spec.name == "leaderboard":  # one table per task
        for task, g in table.groupby("task", sort=True):
            doc.md += [f"**{task}**", ""]
            doc.html.append(f"<h4>{html.escape(str(task))}</h4>")
            doc.table(f"{spec.name}-{task}", g.drop(columns="task"), link=False)
        doc.para(f"All tasks: tables/{spec.name}.csv")
        return
    doc.table(spec.name, table)


# --- CLI -------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """`seqbench report RUN_DIR [RUN_DIR …] [--out DIR]`: 0 written, 2 bad input."""
    try:
        out = build_report([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None,
                           warn=lambda w: print(f"seqbench report: warning: {w}", file=sys.stderr))
    except ReportInputError as exc:
        print(f"seqbench report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {out / 'index.html'}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the `report` subcommand to the seqbench CLI."""
    p = subparsers.add_parser("report", help="(re)build the report of a run, or merge several runs into one")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each holding results.jsonl)")
    p.add_argument("--out", help="report folder (default: RUN_DIR/report, or RUN_DIR/report-merged for several)")
    p.set_defaults(func=cmd_report)
