"""A run: expand a suite, skip cells already done (resume), execute the rest, append rows.

RUN_DIR/ (seqbench.bench.results.io has the file formats)
  .lock           held while a run owns the directory (seqbench.bench.run.lock)
  results.jsonl   one row per line; each cell's rows appended in one write and fsynced
  cells.jsonl     the planned cells, written at the start
  env.json        the environment fingerprint (bench/run/env.py)
  suite.yaml      the resolved suite (overrides applied) — `--resume RUN_DIR` re-reads it
  report/         written after the run (bench/report/build.py)

Ctrl-C keeps every finished cell; `seqbench run --resume RUN_DIR` runs the rest: every cell
that is not complete (a cell cut short by a crash or a full disk is repaired away first).
A write that fails (disk full, read-only) stops the run with one line and the resume command.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from seqbench.bench.results.io import (
    ENV_FILE,
    RESULTS_FILE,
    ResultsWriter,
    atomic_write,
    read_rows,
    repair,
    write_plan,
)
from seqbench.bench.results.schema import FAILED_STATUSES
from seqbench.bench.run.config import Suite, load_suite
from seqbench.bench.run.env import environment, resolve_device
from seqbench.bench.run.estimate import cell_estimates
from seqbench.bench.run.executors import LocalExecutor
from seqbench.bench.run.lock import RunLock
from seqbench.bench.run.matrix import Cell, expand, faults_for
from seqbench.errors import RunDirError, StorageError

RESULTS = RESULTS_FILE
__all__ = ["RESULTS", "Progress", "RunResult", "execute", "prepare", "read_rows"]


def storage_error(path: Path, exc: OSError, run_dir: Path) -> StorageError:
    """One line for a failed write: what, why, and the command that finishes the run later."""
    return StorageError(f"cannot write {path} ({exc.strerror or exc}); the rows written before are intact; "
                        f"free space or fix permissions, then finish with: seqbench run --resume {run_dir}")


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """One status line with ETA on a terminal; a line per finished cell otherwise, and a heartbeat
    line every `heartbeat_s` for a cell still running (a long training cell is never silent).

    The ETA comes from per-cell cost estimates (bench/run/estimate.py), not from the mean time of
    the cells done so far (cheap cells run first, which made that several times too low): the
    remaining estimated seconds over `parallel` workers, scaled by how the finished cells' measured
    times compare with their estimates (this machine's speed)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, quiet: bool = False,
                 estimates: dict[str, float] | None = None, parallel: int = 1, heartbeat_s: float = 30.0) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.stream, self.quiet = stream, quiet
        self.t0 = time.monotonic()
        self.tty = stream.isatty()
        self.current = ""
        self.estimates = dict(estimates or {})
        self.parallel = max(1, parallel)
        self.heartbeat_s = heartbeat_s
        self.running: dict[str, float] = {}  # cell_id -> start time
        self.last_beat: dict[str, float] = {}
        self.measured = self.expected = 0.0  # of the finished cells: seconds taken, seconds estimated

    def expected_s(self) -> float | None:
        """The whole run's estimated wall time (None without estimates)."""
        if not self.estimates:
            return None
        from seqbench.bench.run.estimate import makespan

        return makespan(list(self.estimates.values()), self.parallel)

    def start(self) -> None:
        """Say what to expect before the first cell runs."""
        total = self.expected_s()
        if self.quiet or total is None:
            return
        self.stream.write(f"seqbench: {self.total} cells, expected about {_duration(total)} with {self.parallel} "
                          f"worker(s) (estimated from each measure's cost; the ETA corrects it as cells finish)\n")
        self.stream.flush()

    def _speed(self) -> float:
        """Measured / estimated seconds of the finished cells (1 until a few seconds are measured)."""
        if self.expected < 5.0:
            return 1.0
        return min(4.0, max(0.25, self.measured / self.expected))

    def _eta(self) -> str:
        if not self.estimates:
            if not self.done:
                return "ETA ?"
            left = (time.monotonic() - self.t0) / self.done * (self.total - self.done)
            return f"ETA {_duration(left)}"
        from seqbench.bench.run.estimate import makespan

        now = time.monotonic()
        left = [max(0.0, self.estimates.get(c, 0.0) * self._speed() - (now - t)) for c, t in self.running.items()]
        left += [e * self._speed() for c, e in self.estimates.items() if c not in self.running]
        return f"ETA {_duration(makespan(left, self.parallel))}"

    def _line(self, text: str) -> str:
        return f"[{self.done:>{len(str(self.total))}}/{self.total}] {self._eta()} {text}"

    def event(self, kind: str, cell: Cell, msg: str) -> None:
        now = time.monotonic()
        if kind == "start" or cell.cell_id not in self.running:
            self.running.setdefault(cell.cell_id, now)
            self.last_beat.setdefault(cell.cell_id, now)
        if self.quiet:
            return
        self.current = cell.label + (f" — {msg}" if msg else "")
        if self.tty:
            self.stream.write("\r\033[K" + self._line(self.current)[:160])
            self.stream.flush()
        elif now - self.last_beat[cell.cell_id] >= self.heartbeat_s:
            self.last_beat[cell.cell_id] = now
            running = _duration(now - self.running[cell.cell_id])
            self.stream.write(self._line(f"{self.current} (running {running})")[:300] + "\n")
            self.stream.flush()

    def finished(self, cell: Cell, rows: list[dict[str, Any]]) -> None:
        self.done += 1
        started = self.running.pop(cell.cell_id, None)
        self.last_beat.pop(cell.cell_id, None)
        estimate = self.estimates.pop(cell.cell_id, None)
        if started is not None and estimate:
            self.measured += time.monotonic() - started
            self.expected += estimate
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


def _check_out(run_dir: Path) -> None:
    """--out must be a directory or not exist yet, under directories (not files)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is a file, not a directory; give a directory for the run")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"--out {run_dir}: {parent} is a file, not a directory; give another --out")
            break


def prepare(suite_ref: str | Path | None, out: str | Path | None, overrides: list[str], device: str | None,
            resume: str | Path | None) -> tuple[Suite, Path]:
    """Load and validate the suite (before anything heavy) and pick the run directory."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "suite.yaml").is_file():
            raise RunDirError(f"{run_dir}: not a run directory (no suite.yaml); start one with "
                              f"`seqbench run SUITE --out {run_dir}`")
        suite = load_suite(run_dir / "suite.yaml", overrides)
        if device:
            suite.device = device
        return suite, run_dir
    suite = load_suite(suite_ref or "quick", overrides)
    if device:
        suite.device = device
    run_dir = new_run_dir(out, suite.name)
    _check_out(run_dir)
    if (run_dir / RESULTS).exists() and (run_dir / RESULTS).stat().st_size > 0:
        raise RunDirError(f"{run_dir} already holds results; use --resume {run_dir} to finish it, or another --out")
    resolve_device(suite.device)  # --device cuda without CUDA: an error before anything is written
    return suite, run_dir


def plan_record(cell: Cell) -> dict[str, Any]:
    """What cells.jsonl keeps of a cell: enough for the report to list it as missing."""
    return {"cell_id": cell.cell_id, "model": cell.model, "family": cell.family, "task": cell.task,
            "task_kind": cell.task_kind, "measure": cell.measure, "batch_size": cell.batch_size,
            "seq_len": cell.seq_len, "device": cell.device, "dtype": cell.dtype, "seed": cell.seed}


def _start_run_dir(suite: Suite, run_dir: Path, device: str, cells: list[Cell]) -> dict[str, Any]:
    """env.json (kept on resume), suite.yaml and cells.jsonl; returns the env."""
    env_path = run_dir / ENV_FILE
    if env_path.exists():
        env = json.loads(env_path.read_text())
    else:
        env = environment(device)
        env["run_id"] = run_dir.name
        env["suite"] = suite.name
        env["threads"] = suite.threads or env["threads"]  # what the cells use, not the main process
        atomic_write(env_path, json.dumps(env, indent=2) + "\n")
    resolved = dict(suite.raw)
    resolved["device"] = suite.device
    atomic_write(run_dir / "suite.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_plan(run_dir, [plan_record(c) for c in cells])
    return env


def execute(suite: Suite, run_dir: Path, *, parallel: int = 1, executor: str = "local",
            address: str | None = None, isolate: bool = False, quiet: bool = False,
            stream: TextIO | None = None) -> RunResult:
    """Run every unfinished cell of `suite` into `run_dir` (which this call owns while it runs)."""
    stream = stream if stream is not None else sys.stderr
    device = resolve_device(suite.device)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {run_dir} ({exc.strerror or exc}); "
                          "give a writable --out") from None
    with RunLock(run_dir, stream=stream):
        if not quiet:
            stream.write(f"seqbench: suite {suite.name!r} -> {run_dir}\n")
        fixed = repair(run_dir)
        if fixed is not None and not quiet:
            stream.write(f"seqbench: {fixed.message}\n")
        cells = expand(suite, device)
        try:
            env = _start_run_dir(suite, run_dir, device, cells)
        except OSError as exc:
            raise storage_error(run_dir, exc, run_dir) from None
        return _run_cells(suite, run_dir, device, env, cells, parallel=parallel, executor=executor,
                          address=address, isolate=isolate, quiet=quiet, stream=stream)


def _run_cells(suite: Suite, run_dir: Path, device: str, env: dict[str, Any], cells: list[Cell], *,
               parallel: int, executor: str, address: str | None, isolate: bool, quiet: bool,
               stream: TextIO) -> RunResult:
    done = {r["cell_id"] for r in read_rows(run_dir / RESULTS)}
    todo = [c for c in cells if c.cell_id not in done]
    base = {
        "run_id": env.get("run_id", run_dir.name), "suite": suite.name,
        "device_name": env["device_name"], "torch_version": env["torch_version"],
        "cuda_version": env["cuda_version"], "git_sha": env["git_sha"],
        "threads": suite.threads or env["threads"],
    }
    writer = ResultsWriter(run_dir / RESULTS)
    progress = Progress(len(todo), stream=stream, quiet=quiet, estimates=cell_estimates(todo), parallel=parallel)
    progress.start()
    result = RunResult(run_dir=run_dir, cells=len(cells), skipped_done=len(cells) - len(todo))

    def on_rows(cell: Cell, rows: list[dict[str, Any]]) -> None:
        rows = [{**r, "cell_rows": len(rows)} for r in rows]  # how readers tell a complete cell
        try:
            writer.append(rows)
        except OSError as exc:
            raise storage_error(writer.path, exc, run_dir) from None
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
        from seqbench.bench.run.ray_executor import RayExecutor

        return RayExecutor(base=base, timeout_s=suite.timeout_s, threads=suite.threads, address=address,
                           device=device)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
