"""Suite files: load YAML, apply --set overrides, validate everything before anything runs.

A suite (bench/suites/NAME.yaml) looks like:

    name: smoke
    device: cpu                 # cpu | cuda | auto
    dtype: [float32]            # float32 | bfloat16 | float16, one or a list
    seeds: [0]
    timeout_s: 300              # per cell, then the worker is killed and the cell is "timeout"
    threads: null               # torch threads in workers (null: torch's default)
    defaults: {d_model: 32}     # model config applied to every model (a model's own keys win)
    models:                     # suite name -> family + config
      lstm: {family: lstm, n_layers: 2}
    tasks:                      # suite name -> task + params
      copy: {task: copy, n_copy: 4}
    measures:                   # measure -> settings (see bench/measures/*.py)
      accuracy: {steps: 100}
      throughput: {}
    shapes: {batch_size: [8], seq_len: [64, 256]}
    exclude: [{model: lstm, measure: latency}]   # drop cells matching every key of an entry
    include: [{model: lstm, measure: throughput, seq_len: 4096}]  # add cells

Every error names the file, the line, the dotted key and, for names, the closest
valid one: `smoke.yaml:12: models.lstm.famly: unknown key (did you mean 'family'?)`.
"""

from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import models
import tasks
from bench.measures import MEASURES

SUITES_DIR = Path(__file__).resolve().parent / "suites"

TOP_KEYS = {
    "name": "suite name (defaults to the file name)",
    "description": "free text",
    "device": "cpu | cuda | auto",
    "dtype": "float32 | bfloat16 | float16, or a list",
    "seeds": "list of ints",
    "timeout_s": "per-cell time limit in seconds",
    "threads": "torch threads in worker processes (null: default)",
    "defaults": "model config applied to every model",
    "models": "mapping: name -> {family, …config}",
    "tasks": "mapping: name -> {task, …params}",
    "measures": "mapping: measure -> settings",
    "shapes": "{batch_size: [..], seq_len: [..]}",
    "include": "list of extra cells",
    "exclude": "list of cell filters",
    "faults": "test-only fault injection: list of {match, kind, value}",
}
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "float16")
MATCH_KEYS = ("model", "family", "task", "task_kind", "measure", "batch_size", "seq_len", "device", "dtype", "seed")
FAULT_KINDS = ("raise", "oom", "hang", "kill", "slowdown", "extra_bytes", "accuracy_drop")


class SuiteError(ValueError):
    """A suite file (or an override) is malformed; the message says where and how to fix it."""


@dataclass
class Suite:
    name: str
    path: str
    device: str
    dtypes: list[str]
    seeds: list[int]
    timeout_s: float
    threads: int | None
    models: dict[str, dict[str, Any]]  # name -> {"family": str, **config (defaults merged)}
    tasks: dict[str, dict[str, Any]]  # name -> {"task": str, **params}
    measures: dict[str, dict[str, Any]]
    shapes: dict[str, list[int]]
    include: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the resolved document (written to RUN_DIR/suite.yaml)


# --- locating and reading -----------------------------------------------------------------

def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def resolve_suite_path(name_or_path: str) -> Path:
    """A shipped suite name (bench/suites/NAME.yaml) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SuiteError(f"{name_or_path}: no such suite file")
        return p
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = shipped_suites()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SuiteError(f"unknown suite {name_or_path!r}{hint}; shipped suites: {', '.join(names)}; or give a path")


def _line_map(text: str, fname: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys / list indices) to its 1-based line in the YAML."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{fname}:{mark.line + 1}" if mark else fname
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{where}: not valid YAML: {problem}") from None
    if root is not None:
        walk(root, ())
    return lines


class _Where:
    """Formats 'file:line: dotted.key: message' errors."""

    def __init__(self, fname: str, lines: dict[tuple, int]) -> None:
        self.fname, self.lines = fname, lines

    def error(self, path: tuple, msg: str) -> SuiteError:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        dotted = ".".join(str(p) for p in path)
        loc = f"{self.fname}:{line}" if line else self.fname
        return SuiteError(f"{loc}: {dotted}: {msg}" if dotted else f"{loc}: {msg}")


def _hint(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- overrides ----------------------------------------------------------------------------

def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a copy of the document."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise SuiteError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. measures.accuracy.steps=500")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SuiteError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SuiteError(f"--set {item!r}: value is not valid YAML") from None
        node = doc
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                if p in node and node[p] is not None:
                    raise SuiteError(f"--set {item!r}: {p!r} is not a mapping")
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return doc


# --- validation -----------------------------------------------------------------------------

def _int_list(w: _Where, path: tuple, value: Any, minimum: int = 0) -> list[int]:
    items = value if isinstance(value, list) else [value]
    for i, v in enumerate(items):
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise w.error(path + ((i,) if isinstance(value, list) else ()),
                          f"must be an int >= {minimum} (or a list of them), got {v!r}")
    if not items:
        raise w.error(path, "must not be empty")
    return items


def _mapping(w: _Where, path: tuple, value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise w.error(path, f"must be a mapping of {what}, got {type(value).__name__}")
    return value


def _validate_models(w: _Where, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defaults = _mapping(w, ("defaults",), doc.get("defaults"), "model config keys")
    raw = _mapping(w, ("models",), doc.get("models"), "name -> {family, …}")
    if not raw:
        raise w.error(("models",), "at least one model is required")
    out = {}
    for name, spec in raw.items():
        spec = _mapping(w, ("models", name), spec, "config keys")
        family = spec.get("family", name)
        if family not in models.names():
            raise w.error(("models", name, "family"),
                          f"unknown model family {family!r}{_hint(family, models.names())}; "
                          f"registered: {', '.join(models.names())}")
        fields = models.config_class(family).__dataclass_fields__
        cfg = {k: v for k, v in defaults.items() if k in fields}
        cfg.update({k: v for k, v in spec.items() if k != "family"})
        try:
            models.make(family, **cfg)
        except models.ConfigError as exc:
            key = next((k for k in spec if k != "family" and repr(k) in str(exc)), None)
            raise w.error(("models", name) + ((key,) if key else ()), str(exc)) from None
        out[name] = {"family": family, **cfg}
    for key in defaults:
        if not any(key in models.config_class(m["family"]).__dataclass_fields__ for m in out.values()):
            raise w.error(("defaults", key), "is not a config key of any model in this suite")
    return out


def _validate_tasks(w: _Where, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = _mapping(w, ("tasks",), doc.get("tasks"), "name -> {task, …}")
    out = {}
    for name, spec in raw.items():
        spec = _mapping(w, ("tasks", name), spec, "task params")
        kind = spec.get("task", name)
        if kind not in tasks.names():
            raise w.error(("tasks", name, "task"),
                          f"unknown task {kind!r}{_hint(kind, tasks.names())}; registered: {', '.join(tasks.names())}")
        params = {k: v for k, v in spec.items() if k != "task"}
        try:
            tasks.build(kind, **params)
        except tasks.ConfigError as exc:
            key = next((k for k in params if repr(k) in str(exc)), None)
            raise w.error(("tasks", name) + ((key,) if key else ()), str(exc)) from None
        out[name] = {"task": kind, **params}
    return out


def _validate_filters(w: _Where, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise w.error((key,), "must be a list of mappings")
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            raise w.error((key, i), "must be a non-empty mapping such as {model: lstm, measure: latency}")
        for k in entry:
            if k not in MATCH_KEYS:
                raise w.error((key, i, k), f"unknown matrix key{_hint(k, MATCH_KEYS)}; valid: {', '.join(MATCH_KEYS)}")
    return raw


def _validate_faults(w: _Where, doc: dict[str, Any]) -> list[dict[str, Any]]:
    raw = doc.get("faults") or []
    if not isinstance(raw, list):
        raise w.error(("faults",), "must be a list of {match, kind, value}")
    for i, f in enumerate(raw):
        if not isinstance(f, dict) or f.get("kind") not in FAULT_KINDS:
            kind = f.get("kind") if isinstance(f, dict) else f
            raise w.error(("faults", i, "kind"), f"must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        match = f.get("match", {})
        if not isinstance(match, dict) or any(k not in MATCH_KEYS for k in match):
            raise w.error(("faults", i, "match"), f"must map matrix keys ({', '.join(MATCH_KEYS)}) to values")
    return raw


def validate(doc: Any, fname: str, lines: dict[tuple, int] | None = None) -> Suite:
    """Validate a parsed suite document completely; raise SuiteError on the first problem."""
    w = _Where(fname, lines or {})
    if not isinstance(doc, dict):
        raise w.error((), "a suite must be a YAML mapping with at least 'models' and 'measures'")
    for key in doc:
        if key not in TOP_KEYS:
            raise w.error((key,), f"unknown top-level key{_hint(key, TOP_KEYS)}; valid: {', '.join(TOP_KEYS)}")
    device = doc.get("device", "cpu")
    if device not in DEVICES:
        raise w.error(("device",), f"must be one of {', '.join(DEVICES)}, got {device!r}{_hint(device, DEVICES)}")
    dtypes = doc.get("dtype", "float32")
    dtypes = dtypes if isinstance(dtypes, list) else [dtypes]
    for i, d in enumerate(dtypes):
        if d not in DTYPES:
            raise w.error(("dtype",), f"must be one of {', '.join(DTYPES)}, got {d!r}{_hint(d, DTYPES)}")
    seeds = _int_list(w, ("seeds",), doc.get("seeds", [0]))
    timeout = doc.get("timeout_s", 600)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise w.error(("timeout_s",), f"must be a positive number of seconds, got {timeout!r}")
    threads = doc.get("threads")
    if threads is not None:
        _int_list(w, ("threads",), threads, minimum=1)
    suite_models = _validate_models(w, doc)
    suite_tasks = _validate_tasks(w, doc)
    measures = _mapping(w, ("measures",), doc.get("measures"), "measure -> settings")
    if not measures:
        raise w.error(("measures",), f"at least one measure is required; available: {', '.join(sorted(MEASURES))}")
    for m, settings in measures.items():
        if m not in MEASURES:
            raise w.error(("measures", m), f"unknown measure{_hint(m, MEASURES)}; available: {', '.join(sorted(MEASURES))}")
        measures[m] = _mapping(w, ("measures", m), settings, "settings")
        defaults = getattr(sys.modules.get(f"bench.measures.{m}"), "DEFAULTS", None)
        for key in measures[m] if defaults is not None else ():
            if key not in defaults:
                raise w.error(("measures", m, key), f"unknown setting{_hint(key, defaults)}; "
                              f"valid: {', '.join(sorted(defaults))}")
    needs_task = [m for m in measures if m in ("accuracy", "gradient_flow")]
    if needs_task and not suite_tasks:
        raise w.error(("tasks",), f"measures {', '.join(needs_task)} need at least one task")
    shapes = _mapping(w, ("shapes",), doc.get("shapes"), "batch_size/seq_len lists")
    for k in shapes:
        if k not in ("batch_size", "seq_len"):
            raise w.error(("shapes", k), f"unknown shape axis{_hint(k, ('batch_size', 'seq_len'))}; valid: batch_size, seq_len")
    shape_lists = {
        "batch_size": _int_list(w, ("shapes", "batch_size"), shapes.get("batch_size", [8]), minimum=1),
        "seq_len": _int_list(w, ("shapes", "seq_len"), shapes.get("seq_len", [128]), minimum=1),
    }
    include = _validate_filters(w, doc, "include")
    for i, entry in enumerate(include):
        for k in ("model", "measure"):
            if k not in entry:
                raise w.error(("include", i), f"an include entry must name {k!r}")
        if entry["model"] not in suite_models:
            raise w.error(("include", i, "model"), f"unknown model{_hint(entry['model'], suite_models)}")
        if entry["measure"] not in measures:
            raise w.error(("include", i, "measure"), f"measure not configured in 'measures'{_hint(entry['measure'], measures)}")
        if "task" in entry and entry["task"] not in suite_tasks:
            raise w.error(("include", i, "task"), f"unknown task{_hint(entry['task'], suite_tasks)}")
    exclude = _validate_filters(w, doc, "exclude")
    faults = _validate_faults(w, doc)
    return Suite(
        name=str(doc.get("name") or Path(fname).stem), path=fname, device=device, dtypes=dtypes, seeds=seeds,
        timeout_s=float(timeout), threads=threads, models=suite_models, tasks=suite_tasks, measures=measures,
        shapes=shape_lists, include=include, exclude=exclude, faults=faults, raw=doc,
    )


def load_suite(name_or_path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override and validate a suite. Raises SuiteError with file:line:key on any problem."""
    path = resolve_suite_path(str(name_or_path))
    text = path.read_text()
    lines = _line_map(text, path.name)
    doc = yaml.safe_load(text)
    if overrides:
        if not isinstance(doc, dict):
            raise SuiteError(f"{path.name}: a suite must be a YAML mapping")
        doc = apply_overrides(doc, overrides)
    return validate(doc, path.name, lines)
