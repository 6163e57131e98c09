"""A run: expand a suite, skip cells already done (resume), execute the rest, append rows.

RUN_DIR/
  results.jsonl   one row per line, appended and fsynced per cell (a cell's rows together)
  env.json        the environment fingerprint (bench/env.py)
  suite.yaml      the resolved suite (overrides applied) — `--resume RUN_DIR` re-reads it
  report/         written after the run (bench/report.py)

Ctrl-C keeps every finished cell; `seqbench run --resume RUN_DIR` runs the rest.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from bench.config import Suite, load_suite
from bench.env import environment, resolve_device
from bench.executors import LocalExecutor
from bench.matrix import Cell, expand, faults_for
from bench.schema import FAILED_STATUSES

RESULTS = "results.jsonl"


class RunDirError(ValueError):
    """A run directory is missing, or does not hold a resumable run."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl; a torn last line (crash mid-write) is ignored."""
    rows = []
    if not path.exists():
        return rows
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class ResultsWriter:
    """Appends a cell's rows as JSON lines and fsyncs, so a crash loses at most the cell in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                with path.open("a") as f:
                    f.write("\n")

    def append(self, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        with self.path.open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class Progress:
    """One status line with ETA on a terminal; a line per finished cell otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.stream, self.quiet = stream, quiet
        self.t0 = time.monotonic()
        self.tty = stream.isatty()
        self.current = ""

    def _eta(self) -> str:
        if not self.done:
            return "ETA ?"
        left = (time.monotonic() - self.t0) / self.done * (self.total - self.done)
        return f"ETA {int(left // 60)}m{int(left % 60):02d}s"

    def _line(self, text: str) -> str:
        return f"[{self.done:>{len(str(self.total))}}/{self.total}] {self._eta()} {text}"

    def event(self, kind: str, cell: Cell, msg: str) -> None:
        if self.quiet:
            return
        self.current = cell.label + (f" — {msg}" if msg else "")
        if self.tty:
            self.stream.write("\r\033[K" + self._line(self.current)[:160])
            self.stream.flush()

    def finished(self, cell: Cell, rows: list[dict[str, Any]]) -> None:
        self.done += 1
        status = rows[0]["status"] if rows else "?"
        bad = [r for r in rows if r["status"] in FAILED_STATUSES]
        self.failed += bool(bad)
        if self.quiet:
            return
        tail = f"{status}" + (f": {bad[0]['error']}" if bad else "")
        text = self._line(f"{cell.label} -> {tail}")
        if self.tty:
            self.stream.write("\r\033[K" + text[:200] + ("\n" if bad else ""))
        else:
            self.stream.write(text[:300] + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\r\033[K")
            self.stream.flush()


@dataclass
class RunResult:
    run_dir: Path
    cells: int
    skipped_done: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in FAILED_STATUSES]


def new_run_dir(out: str | Path | None, suite_name: str) -> Path:
    if out is not None:
        return Path(out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / "runs" / f"{suite_name}-{stamp}"


def prepare(suite_ref: str | Path | None, out: str | Path | None, overrides: list[str], device: str | None,
            resume: str | Path | None) -> tuple[Suite, Path]:
    """Load and validate the suite (before anything heavy) and pick the run directory."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "suite.yaml").is_file():
            raise RunDirError(f"{run_dir}: not a run directory (no suite.yaml); start one with `seqbench run SUITE --out {run_dir}`")
        suite = load_suite(run_dir / "suite.yaml", overrides)
        return suite, run_dir
    suite = load_suite(suite_ref or "quick", overrides)
    if device:
        suite.device = device
    run_dir = new_run_dir(out, suite.name)
    if (run_dir / RESULTS).exists() and (run_dir / RESULTS).stat().st_size > 0:
        raise RunDirError(f"{run_dir} already holds results; use --resume {run_dir} to finish it, or another --out")
    return suite, run_dir


def execute(suite: Suite, run_dir: Path, *, parallel: int = 1, executor: str = "local",
            address: str | None = None, isolate: bool = False, quiet: bool = False,
            stream: TextIO = sys.stderr) -> RunResult:
    """Run every unfinished cell of `suite` into `run_dir`."""
    device = resolve_device(suite.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    env_path = run_dir / "env.json"
    if env_path.exists():
        env = json.loads(env_path.read_text())
    else:
        env = environment(device)
        env["run_id"] = run_dir.name
        env["suite"] = suite.name
        env_path.write_text(json.dumps(env, indent=2) + "\n")
    resolved = dict(suite.raw)
    resolved["device"] = suite.device
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    cells = expand(suite, device)
    done = {r["cell_id"] for r in read_rows(run_dir / RESULTS)}
    todo = [c for c in cells if c.cell_id not in done]
    base = {
        "run_id": env.get("run_id", run_dir.name), "suite": suite.name,
        "device_name": env["device_name"], "torch_version": env["torch_version"],
        "cuda_version": env["cuda_version"], "git_sha": env["git_sha"],
        "threads": suite.threads or env["threads"],
    }
    writer = ResultsWriter(run_dir / RESULTS)
    progress = Progress(len(todo), stream=stream, quiet=quiet)
    result = RunResult(run_dir=run_dir, cells=len(cells), skipped_done=len(cells) - len(todo))

    def on_rows(cell: Cell, rows: list[dict[str, Any]]) -> None:
        writer.append(rows)
        result.rows.extend(rows)
        progress.finished(cell, rows)

    jobs = [(c, faults_for(c, suite.faults)) for c in todo]
    runner = make_executor(executor, base, suite, device, parallel=parallel, isolate=isolate, address=address)
    try:
        runner.run(jobs, on_rows, progress.event)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        progress.close()
    return result


def make_executor(kind: str, base: dict[str, Any], suite: Suite, device: str, *, parallel: int, isolate: bool,
                  address: str | None) -> Any:
    if kind == "local":
        gpus: list[str] = []
        if device == "cuda" and parallel > 1:
            import torch

            gpus = [str(i) for i in range(torch.cuda.device_count())]
        return LocalExecutor(base=base, timeout_s=suite.timeout_s, parallel=parallel, threads=suite.threads,
                             isolate=isolate, gpus=gpus)
    if kind == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(base=base, timeout_s=suite.timeout_s, threads=suite.threads, address=address,
                           device=device)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
