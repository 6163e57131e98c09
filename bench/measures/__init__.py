"""Measures: functions from a MeasureContext to a list of partial result rows.

Each measure is `fn(ctx: MeasureContext) -> list[dict]`; every dict has at least
metric, value, unit, higher_is_better (see bench.schema.METRICS) and may carry
samples, stats and the extra columns of bench.schema.EXTRA_FIELDS. A measure that
does not apply raises `Skip(reason)` (recorded as status "skipped", not a failure).
Timed regions exclude setup, warm up first, and synchronize CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.timing import SettingsError


class Skip(Exception):
    """The measure does not apply to this cell (e.g. latency of a bidirectional model)."""


@dataclass
class MeasureContext:
    cell: Any  # bench.matrix.Cell
    build_model: Callable[[], Any]  # () -> models.SequenceModel, fresh, seeded, on device and dtype
    task: Any | None  # tasks.Task, or None for task-independent (speed) cells
    device: torch.device
    dtype: torch.dtype
    settings: dict[str, Any] = field(default_factory=dict)  # the suite's settings for this measure
    progress: Callable[[str], None] = lambda msg: None  # heartbeat for long measures
    # Test-only fault injection (never set by shipped suites), used to prove that compare
    # catches regressions: "slowdown" (factor >= 1 applied to every timed sample by
    # busy-waiting the extra time inside the timed region), "extra_bytes" (held during the
    # memory measure), "accuracy_drop" (subtracted from every reported accuracy value).
    faults: dict[str, Any] = field(default_factory=dict)

    def require_task(self, measure: str) -> Any:
        """The cell's task; SettingsError when a measure that trains or probes has none."""
        if self.task is None:
            raise SettingsError(f"measure {measure!r} needs a task; give the cell a task")
        return self.task


MeasureFn = Callable[[MeasureContext], list[dict]]
MEASURES: dict[str, MeasureFn] = {}

# Which shape axes each measure expands over (others take their shape from the task/settings).
SHAPE_AXES: dict[str, tuple[str, ...]] = {
    "accuracy": (),
    "gradient_flow": (),
    "throughput": ("batch_size", "seq_len"),
    "memory": ("batch_size", "seq_len"),
    "latency": ("seq_len",),
    "static": ("seq_len",),
}
# Measures that need a task (the others run on random inputs of the model's vocabulary).
NEEDS_TASK = ("accuracy", "gradient_flow")


def register(name: str) -> Callable[[MeasureFn], MeasureFn]:
    def wrap(fn: MeasureFn) -> MeasureFn:
        MEASURES[name] = fn
        return fn

    return wrap


# Registration happens by these explicit imports (one module per measure).
from bench.measures import accuracy, gradient_flow, latency, memory, static, throughput  # noqa: F401
