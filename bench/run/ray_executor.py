"""Run a benchmark matrix on Ray: every cell is a Ray task, on one machine or many.

`seqbench run SUITE --executor ray [--address auto | ray://HOST:PORT]`

Each cell becomes one Ray task that asks for what the cell needs: `num_gpus=1` for a CUDA
cell, `threads` CPUs (the suite's `threads`, default 1) for every cell, so Ray never
packs more cells onto a node than it has cores or GPUs. Inside the task the cell runs in a
child process of the Ray worker, exactly as a local worker runs it (seqbench.bench.run.executors): a
hang is killed after `timeout_s` (status timeout), a crashed or killed cell process is
status error. The child is kept for the worker's next task, so torch is imported once
per Ray worker rather than once per cell; it dies with its Ray worker (Ray kills the
worker's process group, and the child asks Linux for SIGKILL on its parent's death too).

When the Ray worker itself dies (killed, its node lost, Ray's memory monitor), Ray runs
the task again once (`max_retries=1`); a second death is recorded as the cell's error
row with Ray's reason. Rows come back to the driver as tasks finish (`ray.wait`) and go
to `on_rows`, so results.jsonl, resume, the progress bar, the summary and the report are
the same as with the local executor. A small actor relays each task's start and progress
messages to the driver's progress line.

`address` joins a running cluster (`ray.init(address=…)`); without one a local instance
is started (all cores, or `num_cpus`; no dashboard) and shut down when the run ends. A
Ray instance already started in this process is used as it is and left running.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from seqbench.bench.run.cell import outcome_row
from seqbench.bench.run.executors import OnEvent, OnRows, _worker_main, signal_name
from seqbench.bench.run.matrix import Cell
from seqbench.errors import UnavailableError

INSTALL_HINT = "pip install 'seqbench[ray]'"
PROGRESS_EVERY_S = 0.5  # a task forwards at most one progress message this often
POLL_S = 1.0  # the driver's wait between looks at progress


class RayUnavailableError(UnavailableError):
    """Ray is not installed, its cluster cannot be reached, or it cannot fit a cell."""


def import_ray() -> Any:
    """The ray module, or RayUnavailableError with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(
            f"--executor ray needs Ray, which is not installed ({exc}); install it with: {INSTALL_HINT}"
        ) from None
    return ray


# --- inside a Ray worker ----------------------------------------------------------------

_CHILD: dict[str, Any] = {}  # this Ray worker's cell process: {"proc", "conn", "key"}


def _child_main(conn: Connection, threads: int | None, env: dict[str, str], parent: int) -> None:
    _worker_main(conn, threads, env, parent)


def _stop_child(kill: bool) -> None:
    proc, conn = _CHILD.pop("proc", None), _CHILD.pop("conn", None)
    _CHILD.pop("key", None)
    if proc is None:
        return
    if kill:
        proc.kill()
    else:
        try:
            conn.send(None)
        except OSError:
            proc.kill()
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    conn.close()


def _child(threads: int | None) -> Connection:
    """This worker's cell process, started on first use (or when the GPU Ray assigned changed)."""
    key = (threads, os.environ.get("CUDA_VISIBLE_DEVICES"))
    proc = _CHILD.get("proc")
    if proc is not None and (not proc.is_alive() or _CHILD["key"] != key):
        _stop_child(kill=not proc.is_alive())
    if "proc" not in _CHILD:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child_main, args=(child, threads, {}, os.getpid()), daemon=True)
        proc.start()
        child.close()
        _CHILD.update(proc=proc, conn=parent, key=key)
    return _CHILD["conn"]


def run_task(cell_dict: dict[str, Any], base: dict[str, Any], faults: dict[str, Any], threads: int | None,
             timeout_s: float, board: Any) -> list[dict[str, Any]]:
    """The Ray task: run one cell in this worker's child process and return its rows.

    Mirrors LocalExecutor's handling of a child that hangs (timeout row) or dies (error row).
    """
    cell = Cell(**cell_dict)
    if board is not None:
        board.put.remote(cell.cell_id, "start", "")
    conn = _child(threads)
    conn.send((cell_dict, base, faults))
    deadline = time.monotonic() + timeout_s
    last_progress = 0.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _stop_child(kill=True)
            return [outcome_row(cell, base, "timeout", f"no result within timeout_s={timeout_s:g}; worker killed")]
        if not conn.poll(min(left, POLL_S)):
            continue
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            proc = _CHILD["proc"]
            proc.join(timeout=5)
            code = proc.exitcode
            _stop_child(kill=True)
            hint = " (possibly the OS out-of-memory killer)" if code == -signal.SIGKILL else ""
            return [outcome_row(cell, base, "error", f"worker died: {signal_name(code)}{hint}")]
        if kind == "rows":
            return payload
        if board is not None and time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.monotonic()
            board.put.remote(cell.cell_id, "progress", payload)


class ProgressBoard:
    """A Ray actor that collects (cell_id, kind, message) from tasks until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def put(self, cell_id: str, kind: str, msg: str) -> None:
        self.events.append((cell_id, kind, msg))

    def drain(self) -> list[tuple[str, str, str]]:
        out, self.events = self.events, []
        return out


# --- the driver ---------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class RayExecutor:
    """Run cells as Ray tasks on a local Ray instance or an existing cluster."""

    base: dict[str, Any]  # identity + environment fields for every row
    timeout_s: float = 600.0  # per cell, counted from the moment its task starts
    threads: int | None = None  # torch threads and CPUs per cell (None: 1)
    address: str | None = None  # "auto", "ray://HOST:PORT", "HOST:PORT"; None: start a local instance
    device: str = "cpu"
    num_cpus: int | None = None  # CPUs of a local instance (None: all)

    def __post_init__(self) -> None:
        import_ray()  # fail before any cell runs

    @property
    def cpus_per_cell(self) -> int:
        return self.threads or 1

    def run(self, jobs: list[tuple[Cell, dict[str, Any]]], on_rows: OnRows, on_event: OnEvent) -> None:
        if not jobs:
            return
        ray = import_ray()
        owned = self._connect(ray)
        try:
            self._check_fits(ray, jobs)
            self._run(ray, jobs, on_rows, on_event)
        finally:
            if owned:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this executor started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level="WARNING")
            else:
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                         logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise RayUnavailableError(
                f"cannot start or reach {where}: {_first_line(exc)}; check --address (auto joins the cluster "
                f"that `ray start --head` started on this machine), or leave it out for a local instance"
            ) from None
        return True

    def _check_fits(self, ray: Any, jobs: list[tuple[Cell, dict[str, Any]]]) -> None:
        """A cell no node can hold would wait forever: say so before submitting anything."""
        gpus = 1 if any(cell.device.startswith("cuda") for cell, _ in jobs) else 0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus_per_cell and r.get("GPU", 0) >= gpus for r in nodes):
            return
        have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes) or "no nodes"
        need = f"{self.cpus_per_cell} CPU" + (" and 1 GPU" if gpus else "")
        raise RayUnavailableError(
            f"no node of the Ray cluster can run a cell needing {need} (nodes: {have}); "
            f"lower the suite's `threads`, run with --device cpu, or add nodes"
        )

    def _run(self, ray: Any, jobs: list[tuple[Cell, dict[str, Any]]], on_rows: OnRows, on_event: OnEvent) -> None:
        base = dict(self.base, threads=self.cpus_per_cell)
        task = ray.remote(run_task)
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        pending: dict[Any, Cell] = {}
        try:
            for cell, faults in jobs:
                options = {"num_cpus": self.cpus_per_cell, "num_gpus": 1 if cell.device.startswith("cuda") else 0,
                           "max_retries": 1, "name": f"seqbench {cell.label}"}  # the name: Ray's process title
                ref = task.options(**options).remote(cell.to_dict(), base, faults, self.cpus_per_cell,
                                                     self.timeout_s, board)
                pending[ref] = cell
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                if ready:
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                self._relay(ray, board, pending, on_event)
                for ref in ready:
                    cell = pending.pop(ref)
                    on_rows(cell, self._rows(ray, ref, cell, base))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(board)

    def _relay(self, ray: Any, board: Any, pending: dict[Any, Cell], on_event: OnEvent) -> None:
        """Hand the tasks' start/progress messages to on_event (cells still running only)."""
        try:
            events = ray.get(board.drain.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):  # progress is a convenience: never fail a run for it
            return
        running = {cell.cell_id: cell for cell in pending.values()}
        for cell_id, kind, msg in events:
            if cell_id in running:
                on_event(kind, running[cell_id], msg)

    def _rows(self, ray: Any, ref: Any, cell: Cell, base: dict[str, Any]) -> list[dict[str, Any]]:
        """The task's rows, or one row saying why Ray could not produce them."""
        try:
            return ray.get(ref)
        except ray.exceptions.OutOfMemoryError as exc:
            return [outcome_row(cell, base, "oom", f"Ray's memory monitor killed the worker: {_first_line(exc)}")]
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            return [outcome_row(cell, base, "error",
                                f"Ray worker died twice (retried once): {type(exc).__name__}: {_first_line(exc)}")]
        except ray.exceptions.RayError as exc:
            return [outcome_row(cell, base, "error", f"Ray task failed: {type(exc).__name__}: {_first_line(exc)}")]
