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
      mine: {family: "my_pkg.mixers:MyMixer", hidden: 128}   # your own model, by import path
      rnn: {family: rnn, measures: {accuracy: {steps: 400}}}  # this model's own settings of a measure
      gru: {family: gru, match: {params: 50000}}   # width fitted to a size (bench/run/match.py)
    tasks:                      # suite name -> task + params
      copy: {task: copy, n_copy: 4, measures: {accuracy: {lrs: [0.003]}}}  # and this task's
    measures:                   # measure -> settings (see bench/measures/*.py)
      accuracy: {steps: 100}
      throughput: {}
    shapes: {batch_size: [8], seq_len: [64, 256]}
    exclude: [{model: lstm, measure: latency}]   # drop cells matching every key of an entry
    include: [{model: lstm, measure: throughput, seq_len: 4096}]  # add cells

A cell's settings of a measure are the suite's, updated by its task's `measures:` entry,
then by its model's (the model's win). Every error names the file, the line, the dotted key and, for names, the closest
valid one: `smoke.yaml:12: models.lstm.famly: unknown key (did you mean 'family'?)`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seqbench import models, tasks
from seqbench.bench.measures import MEASURES
from seqbench.bench.run.match import MATCH_KEY, check_match  # a model's `match: {params: N}`
from seqbench.config import did_you_mean
from seqbench.errors import ConfigError, SuiteError

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
MAX_ALIASES = 100  # YAML alias uses allowed in one suite
MAX_NODES = 100_000  # nodes of the document with every alias expanded

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
OVERRIDE_KEY = "measures"  # in a model or task entry: that entry's own measure settings
FAULT_KINDS = ("raise", "oom", "hang", "kill", "slowdown", "extra_bytes", "accuracy_drop")


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
    # per model / per task: measure -> settings replacing the suite's (a model's win over a task's)
    model_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    task_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
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
    raise SuiteError(f"unknown suite {name_or_path!r}{did_you_mean(name_or_path, names)}; shipped suites: {', '.join(names)}; or give a path")


def _yaml_error(exc: yaml.YAMLError, fname: str, what: str = "not valid YAML") -> SuiteError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{fname}:{mark.line + 1}" if mark else fname
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "python/" in str(problem) or "could not determine a constructor" in str(problem):
        problem = f"{problem} (suites are plain YAML: tags such as !!python/… are not allowed)"
    return SuiteError(f"{where}: {what}: {problem}")


def _line_map(text: str, fname: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys / list indices) to its 1-based line in the YAML.

    The node graph is walked once per node: an alias is counted, not expanded, so a few
    hundred bytes of nested aliases (a "billion laughs" document) are refused here instead
    of hanging whatever walks the loaded data later. Duplicate keys are refused with both
    lines (YAML loaders silently keep the later one).
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, fname) from None
    lines: dict[tuple, int] = {}
    sizes: dict[int, int] = {}  # id(node) -> nodes under it with aliases expanded
    aliases = 0

    def dotted(path: tuple) -> str:
        return ".".join(str(p) for p in path)

    def walk(node: yaml.Node, path: tuple) -> int:
        nonlocal aliases
        if id(node) in sizes:  # a second reference to one node: an alias
            aliases += 1
            if aliases > MAX_ALIASES:
                raise SuiteError(f"{fname}:{node.start_mark.line + 1}: more than {MAX_ALIASES} YAML alias uses; "
                                 "write the values out")
            return sizes[id(node)]
        sizes[id(node)] = 1
        lines[path] = node.start_mark.line + 1
        size = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in node.value:
                key = k.value
                line = k.start_mark.line + 1
                if isinstance(k, yaml.ScalarNode) and key in first:
                    raise SuiteError(f"{fname}:{line}: {dotted(path + (key,))}: duplicate key (first at line "
                                     f"{first[key]}); keep one of them")
                first[key] = line
                size += walk(v, path + (key,))
                lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                size += walk(v, path + (i,))
        if size > MAX_NODES:
            raise SuiteError(f"{fname}:{node.start_mark.line + 1}: the document expands to more than "
                             f"{MAX_NODES} values through YAML aliases; write the values out")
        sizes[id(node)] = size
        return size

    if root is not None:
        walk(root, ())
    return lines


def read_suite_text(path: Path) -> str:
    """The suite file's text; SuiteError when it cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SuiteError(f"{path.name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                         "save the suite as UTF-8") from None


class _Where:
    """Formats 'file:line: dotted.key: message' errors."""

    def __init__(self, fname: str, lines: dict[tuple, int]) -> None:
        self.fname, self.lines = fname, lines

    def error(self, path: tuple, msg: str) -> SuiteError:
        """SuiteError 'file:line: dotted.key: msg' at the closest line known for `path`."""
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        dotted = ".".join(str(p) for p in path)
        loc = f"{self.fname}:{line}" if line else self.fname
        return SuiteError(f"{loc}: {dotted}: {msg}" if dotted else f"{loc}: {msg}")


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
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SuiteError(f"--set {item!r}: the value is not valid plain YAML ({problem})") from None
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


def _config_error(w: _Where, path: tuple, exc: Exception) -> SuiteError:
    """A ConfigError of the validator, placed at the line of the key it names."""
    key = getattr(exc, "key", None)
    if key is None:
        return w.error(path, str(exc))
    return w.error(path + (key,), getattr(exc, "detail", str(exc)))


def _overrides(w: _Where, path: tuple, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `measures:` block of a model or task entry: measure -> settings that replace the suite's."""
    raw = _mapping(w, path + (OVERRIDE_KEY,), spec.get(OVERRIDE_KEY), "measure -> settings")
    for m, settings in raw.items():
        if m not in MEASURES:
            raise w.error(path + (OVERRIDE_KEY, m), f"unknown measure{did_you_mean(m, MEASURES)}; "
                          f"available: {', '.join(sorted(MEASURES))}")
        raw[m] = _mapping(w, path + (OVERRIDE_KEY, m), settings, "settings")
    return raw


def _validate_models(w: _Where, doc: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    defaults = _mapping(w, ("defaults",), doc.get("defaults"), "model config keys")
    raw = _mapping(w, ("models",), doc.get("models"), "name -> {family, …}")
    if not raw:
        raise w.error(("models",), "at least one model is required")
    out, overrides = {}, {}
    for name, spec in raw.items():
        spec = _mapping(w, ("models", name), spec, "config keys")
        family = spec.get("family", name)
        try:
            fields = models.config_class(family).__dataclass_fields__
        except ConfigError as exc:
            raise w.error(("models", name, "family"), str(exc)) from None
        cfg = {k: v for k, v in defaults.items() if k in fields}
        cfg.update({k: v for k, v in spec.items() if k not in ("family", OVERRIDE_KEY, MATCH_KEY)})
        try:
            models.make(family, **cfg)
        except ConfigError as exc:
            raise _config_error(w, ("models", name), exc) from None
        out[name] = {"family": family, **cfg}
        where = ("models", name, MATCH_KEY) if MATCH_KEY in spec else ("defaults", MATCH_KEY)
        if spec.get(MATCH_KEY, defaults.get(MATCH_KEY)) is not None:
            try:
                out[name][MATCH_KEY] = check_match(spec.get(MATCH_KEY, defaults.get(MATCH_KEY)))
            except ConfigError as exc:
                raise w.error(where, str(exc)) from None
        overrides[name] = _overrides(w, ("models", name), spec)
    for key in defaults:
        if key != MATCH_KEY and not any(key in models.config_class(m["family"]).__dataclass_fields__ for m in out.values()):
            raise w.error(("defaults", key), "is not a config key of any model in this suite")
    return out, overrides


def _validate_tasks(w: _Where, doc: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    raw = _mapping(w, ("tasks",), doc.get("tasks"), "name -> {task, …}")
    out, overrides = {}, {}
    for name, spec in raw.items():
        spec = _mapping(w, ("tasks", name), spec, "task params")
        kind = spec.get("task", name)
        params = {k: v for k, v in spec.items() if k not in ("task", OVERRIDE_KEY)}
        try:
            tasks.config_class(kind)
        except ConfigError as exc:
            raise w.error(("tasks", name, "task"), str(exc)) from None
        try:
            tasks.build(kind, **params)
        except ConfigError as exc:
            raise _config_error(w, ("tasks", name), exc) from None
        out[name] = {"task": kind, **params}
        overrides[name] = _overrides(w, ("tasks", name), spec)
    return out, overrides


def _validate_settings(w: _Where, path: tuple, measure: str, settings: dict[str, Any]) -> None:
    try:
        MEASURES[measure].make_settings(settings)
    except ConfigError as exc:
        raise _config_error(w, path, exc) from None


def _validate_filters(w: _Where, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise w.error((key,), "must be a list of mappings")
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            raise w.error((key, i), "must be a non-empty mapping such as {model: lstm, measure: latency}")
        for k in entry:
            if k not in MATCH_KEYS:
                raise w.error((key, i, k), f"unknown matrix key{did_you_mean(k, MATCH_KEYS)}; valid: {', '.join(MATCH_KEYS)}")
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
            raise w.error((key,), f"unknown top-level key{did_you_mean(key, TOP_KEYS)}; valid: {', '.join(TOP_KEYS)}")
    device = doc.get("device", "cpu")
    if device not in DEVICES:
        raise w.error(("device",), f"must be one of {', '.join(DEVICES)}, got {device!r}{did_you_mean(device, DEVICES)}")
    dtypes = doc.get("dtype", "float32")
    dtypes = dtypes if isinstance(dtypes, list) else [dtypes]
    for i, d in enumerate(dtypes):
        if d not in DTYPES:
            raise w.error(("dtype",), f"must be one of {', '.join(DTYPES)}, got {d!r}{did_you_mean(d, DTYPES)}")
    seeds = _int_list(w, ("seeds",), doc.get("seeds", [0]))
    timeout = doc.get("timeout_s", 600)
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not math.isfinite(timeout)
            or timeout <= 0):
        raise w.error(("timeout_s",), f"must be a positive, finite number of seconds, got {timeout!r}")
    threads = doc.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise w.error(("threads",), f"must be an int >= 1 (torch threads per worker) or null, got {threads!r}")
    suite_models, model_overrides = _validate_models(w, doc)
    suite_tasks, task_overrides = _validate_tasks(w, doc)
    measures = _mapping(w, ("measures",), doc.get("measures"), "measure -> settings")
    if not measures:
        raise w.error(("measures",), f"at least one measure is required; available: {', '.join(sorted(MEASURES))}")
    for m, settings in measures.items():
        if m not in MEASURES:
            raise w.error(("measures", m), f"unknown measure{did_you_mean(m, MEASURES)}; available: {', '.join(sorted(MEASURES))}")
        measures[m] = _mapping(w, ("measures", m), settings, "settings")
        _validate_settings(w, ("measures", m), m, measures[m])
    for kind, table, entries in (("models", model_overrides, suite_models), ("tasks", task_overrides, suite_tasks)):
        for name, by_measure in table.items():
            for m, settings in by_measure.items():
                if m not in measures:
                    raise w.error((kind, name, OVERRIDE_KEY, m), "this measure is not in the suite's 'measures'; "
                                  "add it there first")
                _validate_settings(w, (kind, name, OVERRIDE_KEY, m), m, {**measures[m], **settings})
    for mname, mdict in model_overrides.items():  # a model's and a task's overrides combine
        for tname, tdict in task_overrides.items():
            for m in set(mdict) & set(tdict):
                _validate_settings(w, ("models", mname, OVERRIDE_KEY, m), m,
                                   {**measures[m], **tdict[m], **mdict[m]})
    needs_task = [m for m in measures if MEASURES[m].needs_task]
    if needs_task and not suite_tasks:
        raise w.error(("tasks",), f"measures {', '.join(needs_task)} need at least one task")
    shapes = _mapping(w, ("shapes",), doc.get("shapes"), "batch_size/seq_len lists")
    for k in shapes:
        if k not in ("batch_size", "seq_len"):
            raise w.error(("shapes", k), f"unknown shape axis{did_you_mean(k, ('batch_size', 'seq_len'))}; valid: batch_size, seq_len")
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
            raise w.error(("include", i, "model"), f"unknown model{did_you_mean(entry['model'], suite_models)}")
        if entry["measure"] not in measures:
            raise w.error(("include", i, "measure"), f"measure not configured in 'measures'{did_you_mean(entry['measure'], measures)}")
        if "task" in entry and entry["task"] not in suite_tasks:
            raise w.error(("include", i, "task"), f"unknown task{did_you_mean(entry['task'], suite_tasks)}")
    exclude = _validate_filters(w, doc, "exclude")
    faults = _validate_faults(w, doc)
    return Suite(
        name=str(doc.get("name") or Path(fname).stem), path=fname, device=device, dtypes=dtypes, seeds=seeds,
        timeout_s=float(timeout), threads=threads, models=suite_models, tasks=suite_tasks, measures=measures,
        shapes=shape_lists, include=include, exclude=exclude, faults=faults, raw=doc,
        model_settings=model_overrides, task_settings=task_overrides,
    )


def load_suite(name_or_path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override and validate a suite. Raises SuiteError with file:line:key on any problem."""
    path = resolve_suite_path(str(name_or_path))
    text = read_suite_text(path)
    lines = _line_map(text, path.name)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path.name) from None
    if overrides:
        if not isinstance(doc, dict):
            raise SuiteError(f"{path.name}: a suite must be a YAML mapping")
        doc = apply_overrides(doc, overrides)
    return validate(doc, path.name, lines)
