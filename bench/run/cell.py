"""Run one cell in the current process: build its task and model, call its measure, and
turn what happened (rows, a skip, an OOM, an exception) into complete result rows.

This is what a worker process (local or Ray) executes; the runner around it turns
crashes, hangs and killed workers into rows too.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from seqbench import models, tasks
from seqbench.bench.measures import MEASURES, MeasureContext, Skip
from seqbench.bench.results.schema import blank_row
from seqbench.bench.run import match
from seqbench.bench.run.matrix import Cell

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SimulatedOOM(MemoryError):
    """Raised by the test-only 'oom' fault; recorded as status 'oom'."""


def prepare_process(threads: int | None = None) -> None:
    """Make a worker's timings stable: set torch threads, flush denormal floats to zero (a
    gradient decaying through time into denormals makes CPU steps ~10x slower), and pin
    glibc's mmap threshold (else it adapts during a run and whichever workload runs first
    pays page faults on every large allocation)."""
    import ctypes
    import ctypes.util

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    libc_name = ctypes.util.find_library("c")
    if libc_name and os.uname().sysname == "Linux":
        try:
            libc = ctypes.CDLL(libc_name)
            m_trim_threshold, m_mmap_threshold = -1, -3  # glibc malloc.h
            libc.mallopt(m_mmap_threshold, 64 << 20)
            libc.mallopt(m_trim_threshold, 1 << 30)
        except (OSError, AttributeError):
            pass


def _apply_process_faults(faults: dict[str, Any]) -> None:
    """Test-only faults that act on the whole cell: raise, oom, hang, kill."""
    if "raise" in faults:
        raise RuntimeError(f"injected failure: {faults['raise']}")
    if "oom" in faults:
        raise SimulatedOOM("injected out-of-memory")
    if "hang" in faults:
        while True:
            time.sleep(1)
    if "kill" in faults:
        os.kill(os.getpid(), signal.SIGKILL)


OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                "failed to allocate")  # CUDA, CPU (DefaultCPUAllocator, errno 12), MPS, oneDNN


def _is_oom(exc: BaseException) -> bool:
    """An allocation failure of any allocator (CUDA caching, CPU, Python)."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


def cell_fields(cell: Cell) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id, "model": cell.model, "family": cell.family, "task": cell.task,
        "task_kind": cell.task_kind, "measure": cell.measure, "batch_size": cell.batch_size,
        "seq_len": cell.seq_len, "device": cell.device, "dtype": cell.dtype, "seed": cell.seed,
    }


def outcome_row(cell: Cell, base: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """The single row recorded for a cell that produced no measurements."""
    row = blank_row()
    row.update(base)
    row.update(cell_fields(cell))
    row.update(status=status, error=error)
    return row


def run_cell(cell: Cell, base: dict[str, Any], faults: dict[str, Any] | None = None,
             progress: Callable[[str], None] = lambda msg: None) -> list[dict[str, Any]]:
    """Measure one cell; always returns rows (status ok, skipped, oom or error).

    `base` carries the identity and environment fields (run_id, suite, device_name, …).
    """
    faults = faults or {}
    built: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        _apply_process_faults(faults)
        device = torch.device(cell.device)
        dtype = DTYPES[cell.dtype]
        task = tasks.build(cell.task_kind, **cell.task_params) if cell.task_kind else None
        config = dict(cell.model_config)
        target = config.pop(match.MATCH_KEY, None)  # fit d_model to a size (bench/run/match.py)
        if task is not None:
            config["d_input"] = task.d_input
            config["d_output"] = task.n_outputs
            if task.vocab_size is not None:
                config["vocab_size"] = task.vocab_size

        def build_model() -> models.SequenceModel:
            torch.manual_seed(cell.seed)
            try:
                if "config" not in built:  # the width is fitted once per cell, with the task's sizes
                    size_len = task.seq_len if task is not None else (cell.seq_len or 1024)
                    built["config"], built["facts"] = match.apply(cell.family, config, target, size_len)
                model = models.build(cell.family, **built["config"])
            except match.MatchError as exc:
                raise Skip(str(exc)) from None
            except models.ConfigError as exc:
                # the suite's own keys were validated at load time: this is the task's sizing
                raise Skip(f"{cell.family} does not fit task {cell.task_kind!r}: {exc}") from None
            model = model.to(device=device, dtype=dtype)
            built["model"] = model
            return model

        spec = MEASURES[cell.measure]
        settings = spec.make_settings(cell.settings)
        ctx = MeasureContext(cell=cell, build_model=build_model, task=task, device=device, dtype=dtype,
                             settings=settings, progress=progress,
                             faults={k: v for k, v in faults.items() if k in ("slowdown", "extra_bytes", "accuracy_drop")})
        rows = spec.fn(ctx)
        status, error = "ok", None
    except Skip as exc:
        rows, status, error = [], "skipped", str(exc)
    except BaseException as exc:  # a cell's failure must become a row, whatever it is
        if isinstance(exc, KeyboardInterrupt):
            raise
        rows = []
        status = "oom" if _is_oom(exc) else "error"
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        error = f"{type(exc).__name__}: {exc}{where}"
    wall = time.perf_counter() - t0
    model = built.get("model")
    facts = {"impl": model.impl, "params": model.n_params, **built.get("facts", {})} if model is not None else {}
    if not rows:
        row = outcome_row(cell, base, status, error)
        row.update(facts, wall_s=wall)
        return [row]
    out = []
    for r in rows:
        row = blank_row()
        row.update(base)
        row.update(cell_fields(cell))
        row.update(facts)
        row.update(status="ok", error=None, wall_s=wall)
        row.update(r)
        if row["batch_size"] is None:
            row["batch_size"] = getattr(settings, "batch_size", None)
        if row["seq_len"] is None and task is not None:
            row["seq_len"] = task.seq_len
        out.append(row)
    return out
