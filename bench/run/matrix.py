"""Cells: the points of a benchmark matrix, and their stable ids."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: (model config, task config, measure, shape, device, dtype, seed)."""

    model: str  # the suite's name for this model entry
    family: str  # registry name in models
    model_config: dict[str, Any]
    task: str | None  # the suite's name for the task entry; None for task-independent speed cells
    task_kind: str | None  # registry name in tasks
    task_params: dict[str, Any]
    measure: str
    settings: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    seq_len: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cell_id(self) -> str:
        """Hash of the canonical JSON of the definition: a changed definition is a new cell."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        shape = "" if self.seq_len is None else f" B={self.batch_size} T={self.seq_len}"
        task = f" {self.task}" if self.task else ""
        return f"{self.measure} {self.model}{task}{shape} {self.device}/{self.dtype} s{self.seed}"


def _matches(values: dict[str, Any], pattern: dict[str, Any]) -> bool:
    """True when every key of `pattern` equals (or, for a list, contains) the cell's value."""
    for key, want in pattern.items():
        have = values.get(key)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def match_values(cell: Cell) -> dict[str, Any]:
    """The values include/exclude/fault patterns are matched against."""
    return {
        "model": cell.model, "family": cell.family, "task": cell.task, "task_kind": cell.task_kind,
        "measure": cell.measure, "batch_size": cell.batch_size, "seq_len": cell.seq_len,
        "device": cell.device, "dtype": cell.dtype, "seed": cell.seed,
    }


def cell_settings(suite: Any, model: str, task: str | None, measure: str) -> dict[str, Any]:
    """The suite's settings of `measure`, updated by the task's `measures:` entry, then the model's."""
    settings = dict(suite.measures[measure])
    if task is not None:
        settings.update(suite.task_settings.get(task, {}).get(measure, {}))
    settings.update(suite.model_settings.get(model, {}).get(measure, {}))
    return settings


def _cells_for(suite: Any, model: str, measure: str, fixed: dict[str, Any], device: str) -> list[Cell]:
    from seqbench.bench.measures import MEASURES

    spec = MEASURES[measure]
    axes = spec.axes
    if spec.needs_task:
        task_names = [fixed["task"]] if "task" in fixed else list(suite.tasks)
    else:
        task_names = [None]
    batch_sizes = [fixed["batch_size"]] if "batch_size" in fixed else suite.shapes["batch_size"]
    seq_lens = [fixed["seq_len"]] if "seq_len" in fixed else suite.shapes["seq_len"]
    dtypes = [fixed["dtype"]] if "dtype" in fixed else suite.dtypes
    seeds = [fixed["seed"]] if "seed" in fixed else suite.seeds
    mspec = suite.models[model]
    cells = []
    for task in task_names:
        tspec = suite.tasks[task] if task else {}
        for dtype in dtypes:
            for seed in seeds:
                for b in batch_sizes if "batch_size" in axes else [None]:
                    for t in seq_lens if "seq_len" in axes else [None]:
                        cells.append(Cell(
                            model=model, family=mspec["family"],
                            model_config={k: v for k, v in mspec.items() if k != "family"},
                            task=task, task_kind=tspec.get("task"),
                            task_params={k: v for k, v in tspec.items() if k != "task"},
                            measure=measure, settings=cell_settings(suite, model, task, measure),
                            batch_size=b, seq_len=t, device=device, dtype=dtype, seed=seed,
                        ))
    return cells


def expand(suite: Any, device: str | None = None) -> list[Cell]:
    """Expand a validated Suite into its cells: models x tasks x measures x shapes x dtypes x
    seeds, minus `exclude` matches, plus `include` entries; duplicates removed, order kept."""
    device = device or suite.device
    cells: list[Cell] = []
    for measure in suite.measures:
        for model in suite.models:
            cells += _cells_for(suite, model, measure, {}, device)
    cells = [c for c in cells if not any(_matches(match_values(c), p) for p in suite.exclude)]
    for entry in suite.include:
        cells += _cells_for(suite, entry["model"], entry["measure"], entry, device)
    seen: set[str] = set()
    unique = []
    for c in cells:
        if c.cell_id not in seen:
            seen.add(c.cell_id)
            unique.append(c)
    return unique


def faults_for(cell: Cell, faults: list[dict[str, Any]]) -> dict[str, Any]:
    """Test-only faults whose `match` selects this cell, as {kind: value}."""
    out: dict[str, Any] = {}
    for f in faults:
        if _matches(match_values(cell), f.get("match", {})):
            out[f["kind"]] = f.get("value", True)
    return out
