"""The one reader and writer of run directories.

    RUN_DIR/
      results.jsonl            one row per line (seqbench.bench.results.schema); a cell's rows are
                               written together, in one append, each carrying `cell_rows` = how many
      cells.jsonl              the planned cells, written when the run starts (what the report lists
                               as missing, without importing torch, models or tasks)
      env.json, suite.yaml     the environment fingerprint and the resolved suite
      results.quarantine.jsonl lines taken out of results.jsonl by a repair, with the reason

A cell is *complete* when results.jsonl holds one contiguous block of its rows, as many as
their `cell_rows` says (rows written before `cell_rows` existed count as complete). A crash
or a full disk mid-append leaves a short block or a torn last line: readers skip those
with a warning (`ReadResult.warnings`), and `repair` — run by `seqbench run --resume` —
moves them, with duplicate blocks and unreadable lines, to the quarantine file and
rewrites results.jsonl atomically, so the cell runs again and lands exactly once.
`pd.read_json(RUN_DIR / "results.jsonl", lines=True)` keeps working on any complete file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqbench.bench.results.schema import ROW_FIELDS
from seqbench.errors import ResultsError

RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"
PLAN_FILE = "cells.jsonl"
QUARANTINE_FILE = "results.quarantine.jsonl"


def results_path(path_or_dir: str | Path) -> Path:
    """RUN_DIR/results.jsonl for a run directory, or the path itself for a .jsonl file."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
        if not path.is_file():
            raise ResultsError(f"{path.parent} is not a run directory: it has no {RESULTS_FILE} "
                               "(give the folder that `seqbench run` printed)")
        return path
    if not path.exists():
        raise ResultsError(f"{path} does not exist (give a run directory holding {RESULTS_FILE})")
    return path


# --- reading ---------------------------------------------------------------------------------


@dataclass
class Block:
    """Consecutive lines with one cell_id: one append of the writer (if nothing went wrong)."""

    cell_id: str
    first_line: int  # 1-based
    rows: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int | None:
        n = self.rows[0].get("cell_rows")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) else None

    @property
    def complete(self) -> bool:
        return self.expected is None or len(self.rows) == self.expected


@dataclass
class ReadResult:
    """What a results.jsonl holds: the rows of complete cells, and what was set aside and why."""

    path: Path
    rows: list[dict[str, Any]]
    bad_lines: list[tuple[int, str, str]] = field(default_factory=list)  # (line, text, reason)
    partial: list[Block] = field(default_factory=list)  # incomplete blocks (a crash mid-cell)
    duplicates: list[Block] = field(default_factory=list)  # a second complete block of one cell

    @property
    def complete_ids(self) -> set[str]:
        return {r["cell_id"] for r in self.rows}

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.bad_lines:
            lines = ", ".join(str(n) for n, _, _ in self.bad_lines[:5]) + (" …" if len(self.bad_lines) > 5 else "")
            out.append(f"{self.path}: {len(self.bad_lines)} unreadable line(s) skipped (line {lines}; "
                       f"{self.bad_lines[0][2]})")
        if self.partial:
            n_rows = sum(len(b.rows) for b in self.partial)
            out.append(f"{self.path}: {len(self.partial)} cell(s) incomplete ({n_rows} rows of an interrupted "
                       "write) skipped; `seqbench run --resume` reruns them")
        if self.duplicates:
            out.append(f"{self.path}: {len(self.duplicates)} cell(s) written more than once; the first copy is used")
        return out

    @property
    def clean(self) -> bool:
        return not (self.bad_lines or self.partial or self.duplicates)


def scan(path: str | Path) -> ReadResult:
    """Read results.jsonl tolerantly: complete cells in file order; everything else set aside."""
    path = Path(path)
    if not path.exists():
        return ReadResult(path, [])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    blocks: list[Block] = []
    bad: list[tuple[int, str, str]] = []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="replace")
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = "a torn or garbled line" + (f" ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else "")
            bad.append((i, text, reason))
            continue
        if not isinstance(row, dict) or not row.get("cell_id"):
            bad.append((i, text, "not a result row (a JSON object with a cell_id)"))
            continue
        if blocks and blocks[-1].cell_id == row["cell_id"] and not blocks[-1].complete \
                and blocks[-1].expected == row.get("cell_rows"):
            blocks[-1].rows.append(row)
            blocks[-1].texts.append(text)
        else:
            blocks.append(Block(row["cell_id"], i, [row], [text]))
    result = ReadResult(path, [], bad_lines=bad)
    seen: set[str] = set()
    for b in blocks:
        if not b.complete:
            result.partial.append(b)
        elif b.cell_id in seen and b.expected is not None:
            result.duplicates.append(b)
        else:
            seen.add(b.cell_id)
            result.rows.extend(b.rows)
    return result


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the complete cells of a results.jsonl ([] when the file does not exist)."""
    return scan(path).rows


def load_rows(path_or_dir: str | Path) -> pd.DataFrame:
    """Rows of one results.jsonl (a run directory or the file), every ROW_FIELDS column present.

    `df.attrs["warnings"]` says what was skipped (torn lines, incomplete cells)."""
    result = scan(results_path(path_or_dir))
    df = pd.DataFrame.from_records(result.rows)
    for col in ROW_FIELDS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in ROW_FIELDS]
    df = df[list(ROW_FIELDS) + extra]
    df.attrs["warnings"] = result.warnings
    return df


def load_env(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/env.json as a dict ({} when the run has none, e.g. rows copied by hand)."""
    path = Path(run_dir) / ENV_FILE
    if not path.is_file():
        return {}
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); restore it or delete it") from None
    if not isinstance(env, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(env).__name__}")
    return env


def run_label(run_dir: Path, rows: pd.DataFrame) -> str:
    """The run's single run_id, or the folder name when the rows carry none or several."""
    ids = rows["run_id"].dropna().unique() if "run_id" in rows else []
    return str(ids[0]) if len(ids) == 1 else run_dir.resolve().name


def _unique_labels(labels: list[str], dirs: list[Path]) -> list[str]:
    """Disambiguate equal labels (two copies of one run) with their folder names, then indices."""
    out = []
    for label, d in zip(labels, dirs):
        out.append(label if labels.count(label) == 1 else f"{label} ({d.resolve().parent.name}/{d.name})")
    return [x if out.count(x) == 1 else f"{x} #{i}" for i, x in enumerate(out)]


def load_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Rows of several runs, concatenated, with a `run` column and the env.json fields.

    Env fields fill row columns the rows left empty (device_name, git_sha, …) and add the
    others (git_dirty, machine_class, cpu_model, …) as columns. `df.attrs["envs"]` maps each
    run label to its env dict, `df.attrs["run_dirs"]` to its directory, `df.attrs["warnings"]`
    lists what the reader skipped.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ResultsError("no run directory given")
    frames, envs, warnings = [], [], []
    for d in dirs:
        if not d.exists():
            raise ResultsError(f"run directory {d} does not exist")
        frame = load_rows(d)
        warnings += frame.attrs.get("warnings", [])
        frames.append(frame)
        envs.append(load_env(d) if d.is_dir() else {})
    labels = _unique_labels([run_label(d, f) for d, f in zip(dirs, frames)], dirs)
    for frame, env, label in zip(frames, envs, labels):
        frame.insert(0, "run", label)
        for key, value in env.items():
            if isinstance(value, (dict, list)):
                continue
            if key not in frame.columns:
                frame[key] = value
            elif value is not None:
                frame[key] = frame[key].astype(object).where(frame[key].notna(), value)
    nonempty = [f for f in frames if len(f)]
    df = pd.concat(nonempty, ignore_index=True) if nonempty else frames[0].iloc[:0]
    df.attrs["envs"] = dict(zip(labels, envs))
    df.attrs["run_dirs"] = {label: str(d) for label, d in zip(labels, dirs)}
    df.attrs["runs"] = labels
    df.attrs["warnings"] = warnings
    return df


# --- the plan ----------------------------------------------------------------------------------


def write_plan(run_dir: Path, cells: list[dict[str, Any]]) -> None:
    """RUN_DIR/cells.jsonl: one line per planned cell (cell_id, model, task, measure, shape, …)."""
    atomic_write(run_dir / PLAN_FILE, "".join(json.dumps(c, default=str) + "\n" for c in cells))


def read_plan(run_dir: str | Path) -> list[dict[str, Any]] | None:
    """The planned cells of a run, or None when it has no (readable) plan."""
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


# --- writing -----------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def dumps_rows(rows: list[dict[str, Any]]) -> bytes:
    """A cell's rows as JSON lines, each marked with cell_rows = len(rows)."""
    n = len(rows)
    return "".join(json.dumps({**r, "cell_rows": n}, default=_json_default) + "\n" for r in rows).encode("utf-8")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write `path` via a temp file, fsync and rename: the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class ResultsWriter:
    """Appends each cell's rows in one write and fsyncs; a failed append is truncated away, so
    the file never keeps part of a cell (disk full, read-only, …: the OSError propagates)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, rows: list[dict[str, Any]]) -> None:
        data = dumps_rows(rows)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":  # a torn last line: never glue onto it
                data = b"\n" + data
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass  # then the short block is skipped by readers and quarantined by repair
                raise
        finally:
            os.close(fd)


@dataclass
class Repair:
    kept_cells: int
    quarantined_lines: int
    quarantine: Path | None

    @property
    def message(self) -> str:
        return (f"repaired {RESULTS_FILE}: {self.quarantined_lines} line(s) moved to {self.quarantine} "
                f"(torn lines, incomplete or duplicate cells); those cells run again")


def repair(run_dir: Path) -> Repair | None:
    """Move every line that is not part of a complete cell's first copy to the quarantine file
    and rewrite results.jsonl without them (atomically). None when there was nothing to do."""
    path = run_dir / RESULTS_FILE
    result = scan(path)
    if result.clean:
        return None
    records = [{"line": n, "reason": reason, "text": text} for n, text, reason in result.bad_lines]
    for reason, blocks in (("incomplete cell (an interrupted write)", result.partial),
                           ("duplicate copy of a cell", result.duplicates)):
        for b in blocks:
            records += [{"line": b.first_line + k, "reason": reason, "text": t} for k, t in enumerate(b.texts)]
    records.sort(key=lambda r: r["line"])
    quarantine = run_dir / QUARANTINE_FILE
    with quarantine.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for r in result.rows:
        by_cell.setdefault(r["cell_id"], []).append(r)
    atomic_write(path, "".join(dumps_rows(rows).decode("utf-8") if rows[0].get("cell_rows") is not None
                               else "".join(json.dumps(x, default=_json_default) + "\n" for x in rows)
                               for rows in by_cell.values()))
    return Repair(len(by_cell), len(records), quarantine)


__all__ = [
    "ENV_FILE", "PLAN_FILE", "QUARANTINE_FILE", "RESULTS_FILE", "ReadResult", "Repair", "ResultsWriter",
    "atomic_write", "dumps_rows", "load_env", "load_rows", "load_runs", "read_plan", "read_rows", "repair",
    "results_path", "scan", "write_plan",
]
