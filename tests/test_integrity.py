"""Nothing lost, nothing garbled: hostile inputs and faults.

Part 1: malformed or hostile inputs, each a one-line error and exit 2 before anything runs
(never a traceback). Part 2: faults — a full disk, torn lines, kill -9 of the main process,
two runs on one directory — each ending, after `--resume`, with every cell exactly once.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqbench.bench.cli import main
from seqbench.bench.results import io
from seqbench.bench.run.cell import _is_oom
from seqbench.bench.run.config import load_suite
from seqbench.bench.run.matrix import expand

GOOD = """\
name: tiny
device: cpu
threads: 1
timeout_s: 120
seeds: [0]
models:
  lstm: {family: lstm, d_model: 8, n_layers: 1}
  gru: {family: gru, d_model: 8, n_layers: 1}
tasks:
  copy: {task: copy, n_copy: 2, delay: 4}
measures:
  static: {}
  accuracy: {steps: 2, lrs: [0.003], batch_size: 2, eval_batches: 1, length_factors: [1]}
shapes: {batch_size: [2], seq_len: [8]}
"""
ACC = "accuracy: {steps: 2, lrs: [0.003], batch_size: 2, eval_batches: 1, length_factors: [1]}"


def acc(**changes: str) -> str:
    """GOOD with accuracy settings changed, e.g. acc(steps="five")."""
    inner = {"steps": "2", "lrs": "[0.003]", "batch_size": "2", "eval_batches": "1", "length_factors": "[1]"}
    inner.update(changes)
    return GOOD.replace(ACC, "accuracy: {" + ", ".join(f"{k}: {v}" for k, v in inner.items()) + "}")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + \
    "models: {lstm: {family: lstm, d_model: *i}}\n"

# (id, suite text (str or bytes), fragments the one-line message must contain)
SUITES = [
    ("alias_bomb", BOMB, ["alias"]),
    ("duplicate_model", GOOD.replace("  gru: {family: gru", "  lstm: {family: gru"), ["duplicate key", "line 7"]),
    ("duplicate_nested", GOOD.replace("{family: lstm, d_model: 8", "{family: lstm, family: gru, d_model: 8"),
     ["models.lstm.family", "duplicate key"]),
    ("timeout_nan", GOOD.replace("timeout_s: 120", "timeout_s: .nan"), ["timeout_s", "finite"]),
    ("timeout_inf", GOOD.replace("timeout_s: 120", "timeout_s: .inf"), ["timeout_s", "finite"]),
    ("timeout_negative", GOOD.replace("timeout_s: 120", "timeout_s: -1"), ["timeout_s", "positive"]),
    ("timeout_text", GOOD.replace("timeout_s: 120", "timeout_s: ten"), ["timeout_s"]),
    ("lrs_inf", acc(lrs="[.inf]"), ["measures.accuracy.lrs", "finite"]),
    ("lrs_nan", acc(lrs="[.nan]"), ["measures.accuracy.lrs", "finite"]),
    ("lrs_empty", acc(lrs="[]"), ["measures.accuracy.lrs", "empty"]),
    ("lrs_negative", acc(lrs="[-0.003]"), ["measures.accuracy.lrs", "> 0"]),
    ("lrs_text", acc(lrs="[fast]"), ["measures.accuracy.lrs", "number"]),
    ("steps_text", acc(steps="five"), ["measures.accuracy.steps", "an int"]),
    ("steps_negative", acc(steps="-5"), ["measures.accuracy.steps", ">= 1"]),
    ("steps_zero", acc(steps="0"), ["measures.accuracy.steps", ">= 1"]),
    ("steps_float", acc(steps="2.5"), ["measures.accuracy.steps", "an int"]),
    ("batch_zero", acc(batch_size="0"), ["measures.accuracy.batch_size", ">= 1"]),
    ("eval_batches_inf", acc(eval_batches=".inf"), ["measures.accuracy.eval_batches", "an int"]),
    ("warmup_frac", acc(warmup_frac="2"), ["measures.accuracy.warmup_frac", "<= 1"]),
    ("betas_short", acc(betas="[0.9]"), ["measures.accuracy.betas", "2 items"]),
    ("betas_one", acc(betas="[0.9, 1.0]"), ["measures.accuracy.betas", "< 1"]),
    ("length_factor_zero", acc(length_factors="[0]"), ["measures.accuracy.length_factors", "> 0"]),
    ("time_limit_nan", acc(time_limit_s=".nan"), ["measures.accuracy.time_limit_s", "finite"]),
    ("accuracy_unknown", acc(stpes="3"), ["measures.accuracy.stpes", "did you mean 'steps'"]),
    ("settings_not_mapping", GOOD.replace("static: {}", "static: 3"), ["measures.static", "mapping"]),
    ("throughput_repeats", GOOD.replace("static: {}", "throughput: {repeats: 0}"), ["repeats", ">= 1"]),
    ("throughput_mode", GOOD.replace("static: {}", "throughput: {modes: [fast]}"), ["modes", "inference"]),
    ("throughput_no_modes", GOOD.replace("static: {}", "throughput: {modes: []}"), ["modes", "empty"]),
    ("latency_guard", GOOD.replace("static: {}", "latency: {guard: -1}"), ["measures.latency.guard", ">= 0"]),
    ("non_utf8", GOOD.encode().replace(b"name: tiny", b"name: tiny\xff\xfe"), ["UTF-8"]),
    ("python_tag", GOOD.replace("name: tiny", "name: !!python/object/apply:os.system [echo hi]"),
     ["tags such as !!python"]),
    ("python_name", GOOD.replace("name: tiny", "name: !!python/name:os.system"), ["!!python"]),
    ("yaml_syntax", GOOD.replace("seeds: [0]", "seeds: [0"), ["not valid YAML"]),
    ("yaml_tab", GOOD.replace("  gru:", "\tgru:"), ["not valid YAML"]),
    ("a_list", "- 1\n- 2\n", ["mapping"]),
    ("empty", "", ["mapping"]),
    ("top_key", GOOD + "modles: {}\n", ["modles", "did you mean 'models'"]),
    ("unknown_measure", GOOD.replace("static: {}", "statik: {}"), ["statik", "did you mean 'static'"]),
    ("no_models", GOOD.replace("models:", "modelz_gone: null\nmodels:").replace(
        "  lstm: {family: lstm, d_model: 8, n_layers: 1}\n  gru: {family: gru, d_model: 8, n_layers: 1}\n", ""),
     ["modelz_gone"]),
    ("unknown_family", GOOD.replace("family: gru", "family: gur"), ["models.gru.family", "did you mean 'gru'"]),
    ("model_key", GOOD.replace("d_model: 8, n_layers: 1}\n  gru", "d_modle: 8, n_layers: 1}\n  gru"),
     ["models.lstm.d_modle", "did you mean 'd_model'"]),
    ("d_model_text", GOOD.replace("{family: gru, d_model: 8", "{family: gru, d_model: big"),
     ["models.gru.d_model", "an int"]),
    ("d_model_zero", GOOD.replace("{family: gru, d_model: 8", "{family: gru, d_model: 0"), ["d_model", ">= 1"]),
    ("dropout_high", GOOD.replace("{family: gru, d_model: 8", "{family: gru, dropout: 1.5, d_model: 8"),
     ["models.gru.dropout", "< 1"]),
    ("dropout_nan", GOOD.replace("{family: gru, d_model: 8", "{family: gru, dropout: .nan, d_model: 8"),
     ["models.gru.dropout", "finite"]),
    ("heads_divide", GOOD.replace("family: gru, d_model: 8", "family: transformer, n_heads: 3, d_model: 8"),
     ["divisible"]),
    ("unknown_task", GOOD.replace("task: copy,", "task: cpy,"), ["tasks.copy.task", "did you mean 'copy'"]),
    ("task_param_type", GOOD.replace("n_copy: 2", "n_copy: two"), ["tasks.copy.n_copy", "an int"]),
    ("task_param_range", GOOD.replace("n_copy: 2", "n_copy: 0"), ["tasks.copy.n_copy", ">= 1"]),
    ("seq_len_zero", GOOD.replace("seq_len: [8]", "seq_len: [0]"), ["shapes.seq_len", ">= 1"]),
    ("seq_len_empty", GOOD.replace("seq_len: [8]", "seq_len: []"), ["shapes.seq_len", "empty"]),
    ("batch_negative", GOOD.replace("batch_size: [2]", "batch_size: [-1]"), ["shapes.batch_size", ">= 1"]),
    ("shape_axis", GOOD.replace("seq_len: [8]", "seqlen: [8]"), ["shapes.seqlen", "did you mean 'seq_len'"]),
    ("seeds_negative", GOOD.replace("seeds: [0]", "seeds: [-1]"), ["seeds", ">= 0"]),
    ("seeds_text", GOOD.replace("seeds: [0]", "seeds: [a]"), ["seeds", "int"]),
    ("dtype", GOOD.replace("seeds: [0]", "seeds: [0]\ndtype: float64"), ["dtype", "float32"]),
    ("device", GOOD.replace("device: cpu", "device: tpu"), ["device", "cpu, cuda, auto"]),
    ("threads_zero", GOOD.replace("threads: 1", "threads: 0"), ["threads", ">= 1"]),
    ("threads_float", GOOD.replace("threads: 1", "threads: 1.5"), ["threads", "int"]),
    ("include_no_model", GOOD + "include: [{measure: static}]\n", ["include", "'model'"]),
    ("exclude_key", GOOD + "exclude: [{modle: lstm}]\n", ["exclude", "did you mean 'model'"]),
    ("fault_kind", GOOD + "faults: [{match: {model: lstm}, kind: explode}]\n", ["faults", "slowdown"]),
    ("no_tasks_for_accuracy", GOOD.replace("tasks:\n  copy: {task: copy, n_copy: 2, delay: 4}\n", ""),
     ["need at least one task"]),
    ("override_measure", GOOD.replace("{family: gru, d_model: 8", "{family: gru, measures: {acuracy: {}}, d_model: 8"),
     ["models.gru.measures.acuracy", "did you mean 'accuracy'"]),
    ("override_value", GOOD.replace("{family: gru, d_model: 8", "{family: gru, measures: {accuracy: {steps: -1}}, d_model: 8"),
     ["models.gru.measures.accuracy.steps", ">= 1"]),
    ("user_model_missing", GOOD.replace("family: gru", 'family: "nope_pkg.mod:Thing"'),
     ["models.gru.family", "nope_pkg", "PYTHONPATH"]),
]


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, fragments: list[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("seqbench"), err
    for frag in fragments:
        assert frag in err, (frag, err)
    return err


@pytest.mark.parametrize("name,text,fragments", SUITES, ids=[s[0] for s in SUITES])
def test_hostile_suite_is_one_line_exit_2(tmp_path: Path, capsys, name: str, text: str | bytes, fragments: list[str]):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    t0 = time.monotonic()
    one_line_error(capsys, main(["validate", str(path)]), fragments)
    assert time.monotonic() - t0 < 20  # the alias bomb is refused, not expanded


def good_suite(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


CLI = [
    ("parallel_negative", ["run", "{suite}", "--parallel", "-3"], ["--parallel", "-3"]),
    ("parallel_zero", ["run", "{suite}", "--parallel", "0"], ["--parallel"]),
    ("parallel_text", ["run", "{suite}", "--parallel", "two"], ["--parallel"]),
    ("set_no_equals", ["validate", "{suite}", "--set", "seeds"], ["--set", "KEY.PATH=VALUE"]),
    ("set_unknown_key", ["validate", "{suite}", "--set", "sedes=[1]"], ["sedes", "did you mean 'seeds'"]),
    ("set_bad_value", ["validate", "{suite}", "--set", "measures.accuracy.steps=-1"], ["steps", ">= 1"]),
    ("set_python_tag", ["validate", "{suite}", "--set", "name=!!python/name:os.system"], ["--set", "plain YAML"]),
    ("set_not_yaml", ["validate", "{suite}", "--set", "seeds=[1"], ["--set"]),
    ("out_is_file", ["run", "{suite}", "--out", "{file}"], ["--out", "is a file"]),
    ("out_under_file", ["run", "{suite}", "--out", "{file}/run"], ["--out", "is a file"]),
    ("device_cuda", ["run", "{suite}", "--device", "cuda", "--out", "{tmp}/r"], ["cuda", "--device cpu"]),
    ("device_unknown", ["run", "{suite}", "--device", "tpu"], ["--device"]),
    ("resume_not_run", ["run", "--resume", "{tmp}"], ["not a run directory"]),
    ("resume_missing", ["run", "--resume", "{tmp}/nope"], ["not a run directory"]),
    ("suite_missing", ["validate", "{tmp}/nope.yaml"], ["no such suite file"]),
    ("suite_unknown_name", ["validate", "quik"], ["unknown suite", "did you mean 'quick'"]),
    ("list_unknown", ["list", "modles"], ["invalid choice"]),
    ("command_unknown", ["rnu"], ["invalid choice"]),
    ("report_missing", ["report", "{tmp}/nope"], ["nope"]),
    ("compare_missing", ["compare", "{tmp}/a", "{tmp}/b"], ["no such file"]),
    ("executor_unknown", ["run", "{suite}", "--executor", "slurm"], ["--executor"]),
]


@pytest.mark.parametrize("name,argv,fragments", CLI, ids=[c[0] for c in CLI])
def test_hostile_cli_is_one_line_exit_2(tmp_path: Path, capsys, name: str, argv: list[str], fragments: list[str]):
    file = tmp_path / "a_file"
    file.write_text("x")
    fill = {"suite": str(good_suite(tmp_path)), "file": str(file), "tmp": str(tmp_path)}
    try:
        code = main([a.format(**fill) for a in argv])
    except SystemExit as exc:  # argparse
        code = int(exc.code)
    one_line_error(capsys, code, fragments)


def test_compare_of_two_disjoint_runs_exits_2_unless_allowed(tmp_path: Path, capsys):
    rows = {"a": {"cell_id": "a1", "metric": "tokens_per_s", "value": 1.0, "status": "ok", "samples": [1.0]},
            "b": {"cell_id": "b1", "metric": "tokens_per_s", "value": 1.0, "status": "ok", "samples": [1.0]}}
    for side, row in rows.items():
        (tmp_path / side).mkdir()
        (tmp_path / side / "results.jsonl").write_text(json.dumps(row) + "\n")
    one_line_error(capsys, main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]), ["nothing to compare"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--allow-partial"]) == 0
    assert "the cell sets differ" in capsys.readouterr().out


# --- part 2: faults ------------------------------------------------------------------------------


def cells_once(run_dir: Path) -> dict[str, int]:
    """cell_id -> number of complete blocks of its rows in results.jsonl (1 each when all is well)."""
    counts: dict[str, int] = {}
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    i = 0
    while i < len(lines):
        row = json.loads(lines[i])
        n = row["cell_rows"]
        block = [json.loads(x) for x in lines[i:i + n]]
        assert len(block) == n and {r["cell_id"] for r in block} == {row["cell_id"]}, lines[i:i + n]
        counts[row["cell_id"]] = counts.get(row["cell_id"], 0) + 1
        i += n
    return counts


def assert_every_cell_once(run_dir: Path) -> None:
    planned = {c["cell_id"] for c in io.read_plan(run_dir)}
    assert cells_once(run_dir) == dict.fromkeys(planned, 1)


def test_disk_full_mid_run_loses_nothing_and_resume_completes(tmp_path: Path, capsys, monkeypatch):
    suite, out = good_suite(tmp_path), tmp_path / "run"
    real_write = os.write
    state = {"appends": 0}

    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
            state["appends"] += 1
            if state["appends"] == 3:  # the third cell: half of it lands, then the disk is full
                real_write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(io.os, "write", write)
    code = main(["run", str(suite), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "No space left on device" in last and f"seqbench run --resume {out}" in last and "Traceback" not in err
    # nothing written before is damaged: two complete cells, no partial block, no torn line
    assert sum(cells_once(out).values()) == 2 and io.scan(out / "results.jsonl").clean
    monkeypatch.setattr(io.os, "write", real_write)  # space is back
    assert main(["run", "--resume", str(out)]) == 0
    assert_every_cell_once(out)


def test_read_only_run_directory_is_one_line(tmp_path: Path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.os, "open", refuse)
    code = main(["run", str(good_suite(tmp_path)), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and "Read-only file system" in err and "Traceback" not in err
    assert len(err.splitlines()) <= 2  # the 'suite -> dir' line, then the error


@pytest.mark.parametrize("where", ["last", "middle"])
def test_torn_line_is_quarantined_and_its_cell_rerun(tmp_path: Path, capsys, where: str):
    suite, out = good_suite(tmp_path), tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out)]) == 0
    path = out / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    k = len(lines) - 1 if where == "last" else len(lines) // 2
    torn = lines[k][: len(lines[k]) // 2]
    lines[k] = torn if where == "last" else torn + "\n"
    path.write_text("".join(lines))
    torn_cell = json.loads(path.read_text().splitlines()[0])["cell_id"]  # any row, to read the file back
    assert torn_cell
    # the report warns and goes on
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "unreadable line" in capsys.readouterr().err
    # resume repairs: the torn line and the rest of its cell go to the quarantine, the cell runs again
    assert main(["run", "--resume", str(out)]) == 0
    assert "repaired results.jsonl" in capsys.readouterr().err
    quarantine = [json.loads(x) for x in (out / io.QUARANTINE_FILE).read_text().splitlines()]
    assert torn.rstrip("\n") in [q["text"] for q in quarantine]
    assert_every_cell_once(out)


SLOW = """\
name: slow
device: cpu
threads: 1
timeout_s: 120
models:
  lstm: {family: lstm, d_model: 8, n_layers: 1}
  gru: {family: gru, d_model: 8, n_layers: 1}
measures:
  static: {}
shapes: {batch_size: [2], seq_len: [8, 16]}
faults:
  - {match: {model: gru, seq_len: 16}, kind: hang}
"""


def start_run(tmp_path: Path, out: Path, text: str = SLOW, *extra: str) -> subprocess.Popen:
    (tmp_path / "slow.yaml").write_text(text)
    return subprocess.Popen([sys.executable, "-m", "seqbench", "run", str(tmp_path / "slow.yaml"), "--out",
                             str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_kill_9_of_the_main_process_leaves_no_orphan_and_resume_completes(tmp_path: Path, capsys):
    out = tmp_path / "run"
    proc = start_run(tmp_path, out)
    # wait until the hanging cell is in its worker (three cells done before it)
    assert wait_for(lambda: (out / "results.jsonl").is_file() and len(io.read_rows(out / "results.jsonl")) >= 3)
    workers = children(proc.pid)
    assert workers
    proc.kill()
    proc.wait()
    assert wait_for(lambda: not any(alive(w) for w in workers), timeout_s=2.0), "a worker outlived kill -9"
    # the lock of the dead run is stale: the resume takes it over and finishes (without the hang)
    suite_yaml = (out / "suite.yaml").read_text()
    assert "hang" in suite_yaml
    code = main(["run", "--resume", str(out), "--set", "faults=[]"])
    err = capsys.readouterr().err
    assert "taking over the stale lock" in err
    assert code == 0
    rows = io.read_rows(out / "results.jsonl")
    assert {r["cell_id"] for r in rows} == {c.cell_id for c in expand(load_suite(out / "suite.yaml"))}
    assert all(n == 1 for n in cells_once(out).values())


@pytest.mark.slow
def test_second_run_and_live_resume_are_refused(tmp_path: Path, capsys):
    out = tmp_path / "run"
    proc = start_run(tmp_path, out)
    try:
        assert wait_for(lambda: (out / ".lock").is_file() and (out / ".lock").read_text().strip() != "")
        assert wait_for(lambda: (out / "results.jsonl").is_file())
        holder = json.loads((out / ".lock").read_text())["pid"]
        code = main(["run", "--resume", str(out)])
        err = one_line_error(capsys, code, ["in use by another seqbench run", f"pid {holder}"])
        assert "wait for it to finish" in err
        # a second `run` on the same --out: refused too (it holds results, or the lock)
        second = subprocess.run([sys.executable, "-m", "seqbench", "run", str(tmp_path / "slow.yaml"), "--out",
                                 str(out)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    finally:
        proc.kill()
        proc.wait()
    assert main(["run", "--resume", str(out), "--set", "faults=[]"]) == 0
    assert all(n == 1 for n in cells_once(out).values())
    assert set(cells_once(out)) == {c["cell_id"] for c in io.read_plan(out)}


def test_lock_refuses_a_live_holder_in_this_process_family(tmp_path: Path):
    from seqbench.bench.run.lock import RunLock
    from seqbench.errors import RunDirError

    with RunLock(tmp_path):
        holder = subprocess.run([sys.executable, "-c", (
            "import sys; from pathlib import Path; from seqbench.bench.run.lock import RunLock\n"
            f"RunLock(Path({str(tmp_path)!r})).acquire()")], capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and "in use by another seqbench run" in holder.stderr
    lock = RunLock(tmp_path)
    lock.acquire()  # free again once released
    lock.release()
    with pytest.raises(RunDirError), RunLock(tmp_path):
        RunLock(tmp_path).acquire()  # flock is per open file: a second open in one process is refused


def test_out_of_memory_of_any_allocator_is_oom(tmp_path: Path):
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                                "memory: you tried to allocate 640000000000 bytes. Error code 12 (Cannot allocate "
                                "memory)"))
    assert _is_oom(MemoryError()) and not _is_oom(RuntimeError("shape mismatch"))
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD.replace("{family: lstm, d_model: 8", "{family: lstm, d_model: 400000")
                    .replace("  accuracy: {steps: 2, lrs: [0.003], batch_size: 2, eval_batches: 1, length_factors: [1]}\n", ""))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 1
    rows = io.read_rows(tmp_path / "run" / "results.jsonl")
    (huge,) = [r for r in rows if r["model"] == "lstm"]
    assert huge["status"] == "oom", huge["error"]


def test_signal_names_are_readable():
    from seqbench.bench.run.executors import signal_name

    assert signal_name(-signal.SIGKILL) == "SIGKILL" and signal_name(1) == "exit code 1"
