"""Executors run cells in isolated worker processes and hand back their rows.

An executor's `run(jobs, on_rows, on_event)` takes (cell, faults) pairs, runs each in a
worker process and calls `on_rows(cell, rows)` exactly once per cell — with the
measured rows, or with one row saying why there are none (error, oom, timeout, a
killed worker). A crash, hang or kill costs that one cell; the worker is replaced.

LocalExecutor keeps `parallel` long-lived spawn workers (importing torch once, not per
cell); on CUDA each gets its own GPU through CUDA_VISIBLE_DEVICES. `isolate=True`
starts a fresh worker per cell instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from seqbench.bench.run.cell import outcome_row, prepare_process, run_cell
from seqbench.bench.run.matrix import Cell

OnRows = Callable[[Cell, list[dict[str, Any]]], None]
OnEvent = Callable[[str, Cell, str], None]  # (kind: "start" | "progress", cell, message)


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (kill -9 of `seqbench run` included),
    so that no worker goes on running its cell as an orphan."""
    if os.uname().sysname != "Linux":
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        pr_set_pdeathsig = 1  # linux/prctl.h
        ctypes.CDLL(libc_name).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn: Connection, threads: int | None, env: dict[str, str], parent: int | None = None) -> None:
    """Worker loop: receive (cell, base, faults), send ("progress", msg) … then ("rows", rows)."""
    if parent is not None:
        die_with_parent(parent)
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    prepare_process(threads)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        cell_dict, base, faults = msg
        cell = Cell(**cell_dict)
        rows = run_cell(cell, base, faults, progress=lambda m: conn.send(("progress", m)))
        conn.send(("rows", rows))


@dataclass
class _Slot:
    env: dict[str, str]
    proc: Any = None
    conn: Connection | None = None
    cell: Cell | None = None
    deadline: float = 0.0
    started: float = 0.0


def signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


@dataclass
class LocalExecutor:
    """Run cells in `parallel` worker processes on this machine."""

    base: dict[str, Any]  # identity + environment fields for every row
    timeout_s: float = 600.0
    parallel: int = 1
    threads: int | None = None
    isolate: bool = False
    gpus: list[str] = field(default_factory=list)  # CUDA device ids, one per slot when set

    def _start(self, slot: _Slot) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self.threads, slot.env, os.getpid()), daemon=True)
        try:
            proc.start()
        finally:
            child.close()
        slot.proc, slot.conn = proc, parent

    def _stop(self, slot: _Slot, kill: bool = False) -> None:
        if slot.proc is None or slot.conn is None:
            return
        if kill:
            slot.proc.kill()
        else:
            try:
                slot.conn.send(None)
            except (OSError, BrokenPipeError):
                slot.proc.kill()
        slot.proc.join(timeout=10)
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        slot.conn.close()
        slot.proc, slot.conn = None, None

    def run(self, jobs: list[tuple[Cell, dict[str, Any]]], on_rows: OnRows, on_event: OnEvent) -> None:
        n = max(1, min(self.parallel, len(jobs) or 1))
        slots = []
        for i in range(n):
            env = {"CUDA_VISIBLE_DEVICES": self.gpus[i % len(self.gpus)]} if self.gpus else {}
            slots.append(_Slot(env=env))
        queue = deque(jobs)
        try:
            while queue or any(s.cell for s in slots):
                for slot in slots:
                    if slot.cell is None and queue:
                        cell, faults = queue.popleft()
                        if slot.proc is None or not slot.proc.is_alive():
                            self._start(slot)
                        slot.cell, slot.started = cell, time.monotonic()
                        slot.deadline = slot.started + self.timeout_s
                        on_event("start", cell, "")
                        slot.conn.send((cell.to_dict(), self.base, faults))
                busy = [s for s in slots if s.cell is not None]
                timeout = max(0.0, min(s.deadline for s in busy) - time.monotonic())
                ready = wait([s.conn for s in busy], timeout=min(timeout, 1.0))
                for slot in busy:
                    if slot.conn in ready:
                        self._receive(slot, on_rows, on_event)
                    elif time.monotonic() > slot.deadline:
                        cell = slot.cell
                        self._stop(slot, kill=True)
                        slot.cell = None
                        on_rows(cell, [outcome_row(cell, self.base, "timeout",
                                                   f"no result within timeout_s={self.timeout_s:g}; worker killed")])
        finally:
            for slot in slots:
                self._stop(slot, kill=slot.cell is not None)

    def _receive(self, slot: _Slot, on_rows: OnRows, on_event: OnEvent) -> None:
        cell = slot.cell
        try:
            kind, payload = slot.conn.recv()
        except (EOFError, OSError):
            slot.proc.join(timeout=5)
            code = slot.proc.exitcode
            self._stop(slot, kill=True)
            slot.cell = None
            hint = " (possibly the OS out-of-memory killer)" if code == -signal.SIGKILL else ""
            on_rows(cell, [outcome_row(cell, self.base, "error", f"worker died: {signal_name(code)}{hint}")])
            return
        if kind == "progress":
            on_event("progress", cell, payload)
            return
        slot.cell = None
        on_rows(cell, payload)
        if self.isolate:
            self._stop(slot)
