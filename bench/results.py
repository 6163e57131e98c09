"""Read run directories into pandas: the one loader used by report, compare and the CLI.

A run directory holds results.jsonl (one row per line, see bench.schema), env.json
(see bench.env) and suite.yaml. `load_runs` concatenates several runs into one tidy
DataFrame with a `run` column naming the run each row came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.schema import ROW_FIELDS

RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"


class ResultsError(ValueError):
    """A path given as a run directory is missing, is not a run, or holds unreadable results."""


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


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # a final line cut short by a killed writer: keep what came before
                break
            raise ResultsError(f"{path}:{i}: not a JSON object ({exc.msg}); the results file is corrupt") from exc
        if not isinstance(row, dict):
            raise ResultsError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
    return rows


def load_rows(path_or_dir: str | Path) -> pd.DataFrame:
    """All rows of one results.jsonl (a run directory or the file), every ROW_FIELDS column present."""
    rows = _parse_lines(results_path(path_or_dir))
    df = pd.DataFrame.from_records(rows)
    for col in ROW_FIELDS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in ROW_FIELDS]
    return df[list(ROW_FIELDS) + extra]


def load_env(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/env.json as a dict ({} when the run has none, e.g. rows copied by hand)."""
    path = Path(run_dir) / ENV_FILE
    if not path.is_file():
        return {}
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.msg})") from exc
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
    run label to its env dict, `df.attrs["run_dirs"]` to its directory.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ResultsError("no run directory given")
    frames, envs = [], []
    for d in dirs:
        if not d.exists():
            raise ResultsError(f"run directory {d} does not exist")
        frames.append(load_rows(d))
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
    return df
