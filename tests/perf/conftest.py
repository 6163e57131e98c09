"""pytest-benchmark tests generated from a suite file (marker `perf`, not in the default run).

    pytest -m perf tests/perf --benchmark-autosave --benchmark-save-data
    pytest -m perf tests/perf --benchmark-compare --benchmark-compare-fail=median:10%
    pytest -m perf tests/perf --benchmark-json=perf.json && seqbench compare base.json perf.json

The suite is bench/suites/smoke.yaml unless SEQBENCH_PERF_SUITE names another (a
shipped name or a path); SEQBENCH_PERF_SET holds `--set` overrides separated by ';'.
Every throughput cell of the suite becomes one test per mode (inference, training),
timing the same workload as the throughput measure (seqbench.bench.measures.train.workload_fn).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

DEFAULT_SUITE = "smoke"


@dataclass(frozen=True)
class PerfCase:
    """One pytest-benchmark test: a throughput cell in one mode (or the reason there is none)."""

    id: str
    cell: Any = None  # seqbench.bench.run.matrix.Cell
    mode: str = "inference"
    settings: dict | None = None  # the throughput measure's settings, defaults merged
    threads: int | None = None
    skip: str | None = None


def load_cases() -> list[PerfCase]:
    """The throughput cells of the perf suite, one case per mode."""
    from seqbench.bench.measures import MEASURES
    from seqbench.bench.run.config import SuiteError, load_suite
    from seqbench.bench.run.env import resolve_device
    from seqbench.bench.run.matrix import expand

    name = os.environ.get("SEQBENCH_PERF_SUITE", DEFAULT_SUITE)
    overrides = [s for s in os.environ.get("SEQBENCH_PERF_SET", "").split(";") if s.strip()]
    try:
        suite = load_suite(name, overrides)
        device = resolve_device(suite.device)
    except (SuiteError, RuntimeError) as exc:
        return [PerfCase(id="no-suite", skip=f"perf suite {name!r}: {exc}")]
    cases = []
    for cell in expand(suite, device):
        if cell.measure != "throughput":
            continue
        settings = MEASURES["throughput"].make_settings(cell.settings)
        for mode in settings.modes:
            cid = f"{cell.model}-B{cell.batch_size}-T{cell.seq_len}-{mode}-{cell.dtype}-{cell.device}"
            cases.append(PerfCase(cid, cell, mode, settings, suite.threads))
    return cases or [PerfCase(id="no-throughput-cells", skip=f"suite {name!r} has no throughput cells")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perf_case" in metafunc.fixturenames:
        cases = load_cases()
        metafunc.parametrize("perf_case", cases, ids=[c.id for c in cases])
