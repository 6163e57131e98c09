"""Measures: functions from a MeasureContext to a list of partial result rows.

A measure is one file with one declared spec:

    @dataclass(frozen=True)
    class ThroughputSettings:             # every setting: type, range and default, in one place
        repeats: PosInt = 10
        ...

    @measure("throughput", ThroughputSettings, axes=("batch_size", "seq_len"))
    def throughput(ctx: MeasureContext) -> list[dict]:
        s = ctx.settings                  # a validated ThroughputSettings
        ...

plus its import line at the bottom of this file. `axes` are the shape axes the matrix
expands the measure over (others take their shape from the task or the settings);
`needs_task` says it trains or probes on a task. A suite's settings are validated against
the dataclass when the suite loads (`seqbench validate`): unknown keys, wrong types, values
out of range, NaN and infinities are errors there, before any cell runs.

Every row dict has at least metric, value, unit, higher_is_better (see
seqbench.bench.results.schema.METRICS) and may carry samples, stats and the extra columns of
EXTRA_FIELDS. A measure that does not apply raises `Skip(reason)` (status "skipped", not a
failure). Timed regions exclude setup, warm up first, and synchronize CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from seqbench.config import config_dict, make_config
from seqbench.errors import ConfigError, SettingsError


class Skip(Exception):
    """The measure does not apply to this cell (e.g. latency of a bidirectional model)."""


@dataclass
class MeasureContext:
    cell: Any  # seqbench.bench.run.matrix.Cell
    build_model: Callable[[], Any]  # () -> models.SequenceModel, fresh, seeded, on device and dtype
    task: Any | None  # tasks.Task, or None for task-independent (speed) cells
    device: torch.device
    dtype: torch.dtype
    settings: Any = None  # the measure's validated settings dataclass (MeasureSpec.settings)
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


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    fn: MeasureFn
    settings: type  # frozen dataclass: every setting with its type, range and default
    axes: tuple[str, ...] = ()  # shape axes the matrix expands over ("batch_size", "seq_len")
    needs_task: bool = False  # trains or probes on a task (else runs on random inputs)

    def make_settings(self, given: Any = None) -> Any:
        """The validated settings from a dict (SettingsError naming the key otherwise); an
        instance of the settings dataclass is returned as it is."""
        if isinstance(given, self.settings):
            return given
        try:
            return make_config(self.settings, f"measures.{self.name}", **(given or {}))
        except ConfigError as exc:
            error = SettingsError(str(exc))
            error.__dict__.update(exc.__dict__)  # key, detail: where the suite's message points
            raise error from None

    def defaults(self) -> dict[str, Any]:
        return config_dict(self.settings())


MEASURES: dict[str, MeasureSpec] = {}


def measure(name: str, settings: type, *, axes: tuple[str, ...] = (),
            needs_task: bool = False) -> Callable[[MeasureFn], MeasureFn]:
    """Register `fn` as measure `name` with its settings dataclass and shape axes."""

    def wrap(fn: MeasureFn) -> MeasureFn:
        if name in MEASURES:
            raise RuntimeError(f"measure {name!r} registered twice")
        MEASURES[name] = MeasureSpec(name, fn, settings, tuple(axes), needs_task)
        return fn

    return wrap


# Registration happens by these explicit imports (one module per measure).
from seqbench.bench.measures import accuracy, gradient_flow, latency, memory, static, throughput  # noqa: F401
