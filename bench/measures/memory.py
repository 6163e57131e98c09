"""memory: peak bytes of inference and of a training step at the cell's shape.

Both modes run the workloads of seqbench.bench.measures.train.workload_fn once untimed as warm-up (so
one-time library allocations are not counted), then a fresh optimizer and one
measured call. The value is the peak *increase* over the memory held just before the
measured call, which already holds the parameters and the inputs:

    CUDA  torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus
          torch.cuda.memory_allocated() before (the caching allocator's live tensors,
          not the reserved pool).
    CPU   the increase of the process's resident high-water mark over the pre-call
          resident set: freed heap is first returned to the OS (glibc malloc_trim),
          VmHWM is reset to the current RSS by writing "5" to /proc/self/clear_refs,
          and the value is VmHWM - VmRSS(before), both from /proc/self/status. It counts
          every page the call touched (activations, gradients, AdamW state, allocator
          slack), like a user watching RSS would. Without those /proc files (not Linux,
          or a locked-down container) the measure is skipped with the reason.

The training mode includes gradients and the AdamW state created by the first step.
The test-only fault "extra_bytes" allocates and touches that many bytes inside the
measured region of every mode.

Settings: MemorySettings below.

Rows: peak_bytes (column mode) per mode; state_bytes = model.state_bytes(seq_len,
batch_size), the analytic streaming state, for streamable models.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqbench.bench.measures import MeasureContext, Skip, measure
from seqbench.bench.measures.throughput import Modes, cell_shape
from seqbench.bench.measures.timing import row, synchronize
from seqbench.bench.measures.train import random_batch, workload_fn
from seqbench.config import PosFloat


@dataclass(frozen=True)
class MemorySettings:
    modes: Modes = ("inference", "training")  # workloads measured, each on a fresh model
    lr: PosFloat = 1e-3  # AdamW learning rate of the training step

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not found in {STATUS}")
    return int(match.group(1))


def cpu_peak_supported() -> str | None:
    """None when the CPU high-water mark can be reset and read, else the reason it cannot."""
    try:
        _status_kib("VmHWM")
        _status_kib("VmRSS")
        CLEAR_REFS.write_text("5")
    except OSError as exc:
        return f"CPU peak memory needs /proc/self/status and a writable /proc/self/clear_refs (Linux): {exc}"
    return None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols, libc's among them
    except OSError:
        return None


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc only; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def hold_bytes(n: int, device: torch.device) -> torch.Tensor | None:
    """n bytes allocated and touched (so they are resident), or None for n = 0."""
    if n <= 0:
        return None
    return torch.ones(n, dtype=torch.uint8, device=device)


def peak_bytes(fn: Callable[[], Any], device: torch.device, extra_bytes: int = 0) -> int:
    """Peak memory increase of one call of `fn` over the memory held before it."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        held = hold_bytes(extra_bytes, device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        _malloc_trim()
        before = _status_kib("VmRSS") * 1024
        CLEAR_REFS.write_text("5")
        held = hold_bytes(extra_bytes, device)
        fn()
        peak = _status_kib("VmHWM") * 1024 - before
    del held
    return max(0, int(peak))


@measure("memory", MemorySettings, axes=("batch_size", "seq_len"))
def memory(ctx: MeasureContext) -> list[dict]:
    s: MemorySettings = ctx.settings
    batch_size, seq_len = cell_shape(ctx, "memory")
    if ctx.device.type != "cuda":
        reason = cpu_peak_supported()
        if reason is not None:
            raise Skip(reason)
    extra = int(ctx.faults.get("extra_bytes", 0))
    rows: list[dict] = []
    model = None
    for mode in s.modes:
        ctx.progress(f"memory {mode}")
        model = ctx.build_model()
        batch = random_batch(model, batch_size, seq_len, ctx.device, ctx.cell.seed)
        workload_fn(model, mode, batch, lr=s.lr)()  # warm-up
        model.zero_grad(set_to_none=True)
        fn = workload_fn(model, mode, batch, lr=s.lr)  # a fresh optimizer: its state counts
        rows.append(row("peak_bytes", peak_bytes(fn, ctx.device, extra), mode=mode))
        del fn, batch
    if model is not None and model.streamable:
        rows.append(row("state_bytes", model.state_bytes(seq_len, batch_size)))
    return rows
