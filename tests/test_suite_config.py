"""Suite validation: malformed suites give one clear line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from seqbench.bench.cli import main
from seqbench.bench.run.config import SuiteError, apply_overrides, load_suite
from seqbench.bench.run.matrix import expand

GOOD = """\
name: tiny
device: cpu
seeds: [0]
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
tasks:
  copy: {task: copy}
measures:
  accuracy: {steps: 2}
  throughput: {}
shapes: {batch_size: [2], seq_len: [8, 16]}
"""

# (name, suite text or a modification, expected fragments of the one-line error)
MALFORMED = [
    ("top_key", GOOD.replace("models:", "modles:"), ["modles", "did you mean 'models'"]),
    ("family", GOOD.replace("family: lstm", "family: lsmt"), ["lsmt", "did you mean 'lstm'", ":6:"]),
    ("model_key", GOOD.replace("{family: gru}", "{family: gru, d_modle: 8}"), ["d_modle", "did you mean 'd_model'"]),
    ("model_type", GOOD.replace("{family: gru}", "{family: gru, d_model: big}"), ["d_model", "int"]),
    ("bool_type", GOOD.replace("{family: gru}", "{family: gru, bidirectional: 3}"), ["bidirectional", "true or false"]),
    ("task", GOOD.replace("task: copy", "task: coppy"), ["coppy", "did you mean 'copy'"]),
    ("task_param", GOOD.replace("{task: copy}", "{task: copy, n_cpy: 3}"), ["n_cpy"]),
    ("measure", GOOD.replace("throughput: {}", "througput: {}"), ["througput", "did you mean 'throughput'"]),
    ("device", GOOD.replace("device: cpu", "device: gpu"), ["device", "cpu, cuda, auto"]),
    ("dtype", GOOD.replace("device: cpu", "device: cpu\ndtype: fp32"), ["dtype", "float32"]),
    ("seeds", GOOD.replace("seeds: [0]", "seeds: [zero]"), ["seeds", "int"]),
    ("seq_len", GOOD.replace("seq_len: [8, 16]", "seq_len: [8, -1]"), ["shapes.seq_len", ">= 1"]),
    ("shape_axis", GOOD.replace("seq_len: [8, 16]", "seqlen: [8]"), ["seqlen", "did you mean 'seq_len'"]),
    ("exclude_key", GOOD + "exclude: [{modle: lstm}]\n", ["exclude", "modle", "did you mean 'model'"]),
    ("include_model", GOOD + "include: [{model: lst, measure: throughput}]\n", ["include", "did you mean 'lstm'"]),
    ("not_yaml", GOOD.replace("seeds: [0]", "seeds: [0"), ["not valid YAML"]),
    ("empty", "", ["mapping"]),
    ("a_list", "- a\n- b\n", ["mapping"]),
    ("no_measures", GOOD.split("measures:")[0], ["measures", "at least one measure"]),
    ("no_tasks", GOOD.replace("tasks:\n  copy: {task: copy}\n", ""), ["need at least one task"]),
    ("timeout", GOOD + "timeout_s: -3\n", ["timeout_s", "positive"]),
    ("models_not_mapping", GOOD.replace("  lstm: {family: lstm}\n  gru: {family: gru}\n", "  - lstm\n"),
     ["models", "mapping"]),
]


@pytest.mark.parametrize("name,text,fragments", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_suite_exits_2_with_one_line(tmp_path: Path, capsys, name: str, text: str, fragments: list[str]):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert "bad.yaml" in err
    for frag in fragments:
        assert frag in err, (frag, err)


def test_good_suite_validates_and_expands(tmp_path: Path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path)]) == 0
    suite = load_suite(path)
    cells = expand(suite)
    # accuracy: 2 models x 1 task; throughput: 2 models x 1 batch x 2 seq_len
    assert sorted(c.measure for c in cells) == ["accuracy"] * 2 + ["throughput"] * 4
    assert len({c.cell_id for c in cells}) == len(cells)
    assert all(c.model_config["d_model"] == 16 for c in cells)


def test_exclude_and_include(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD + "exclude: [{model: gru, measure: throughput}, {seq_len: 16}]\n"
                    "include: [{model: gru, measure: throughput, seq_len: 32}]\n")
    cells = expand(load_suite(path))
    speed = sorted((c.model, c.seq_len) for c in cells if c.measure == "throughput")
    assert speed == [("gru", 32), ("lstm", 8)]


def test_cell_id_changes_with_definition(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD)
    a = {c.label: c.cell_id for c in expand(load_suite(path))}
    b = {c.label: c.cell_id for c in expand(load_suite(path, ["measures.accuracy.steps=3"]))}
    assert a.keys() == b.keys()
    changed = [k for k in a if a[k] != b[k]]
    assert changed and all(k.startswith("accuracy") for k in changed)


def test_set_overrides():
    doc = {"measures": {"accuracy": {"steps": 1}}}
    out = apply_overrides(doc, ["measures.accuracy.steps=500", "shapes.seq_len=[1, 2]", "device=cuda"])
    assert out == {"measures": {"accuracy": {"steps": 500}}, "shapes": {"seq_len": [1, 2]}, "device": "cuda"}
    assert doc["measures"]["accuracy"]["steps"] == 1  # the input is untouched
    with pytest.raises(SuiteError, match="KEY.PATH=VALUE"):
        apply_overrides(doc, ["measures.accuracy.steps"])


@pytest.mark.parametrize("argv,fragment", [
    (["validate", "quik"], "did you mean 'quick'"),
    (["validate", "no/such/file.yaml"], "no such suite file"),
    (["run", "--resume", "/nonexistent-run-dir"], "not a run directory"),
    (["validate", "smoke", "--set", "models.lstm.d_model=-4"], "d_model"),
    (["validate", "smoke", "--set", "oops"], "KEY.PATH=VALUE"),
])
def test_cli_bad_input(capsys, argv: list[str], fragment: str):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize("suite", ["smoke", "quick", "standard"])
def test_shipped_suites_validate(suite: str):
    s = load_suite(suite)
    assert expand(s, "cpu")


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "seqbench", "list", "models"], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == sorted(out) and {"rnn", "lstm", "gru", "seq2seq", "transformer", "mamba"} <= set(out)


def test_unknown_measure_setting_is_caught_before_running(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("accuracy: {steps: 2}", "accuracy: {stpes: 2}"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "measures.accuracy.stpes" in err and "did you mean 'steps'" in err


def test_measure_settings_per_model_and_per_task(tmp_path: Path) -> None:
    """A cell's settings: the suite's, then its task's `measures:` entry, then its model's (the model wins)."""
    text = GOOD.replace("{family: lstm}", "{family: lstm, measures: {accuracy: {steps: 7}}}").replace(
        "{task: copy}", "{task: copy, measures: {accuracy: {steps: 5, lrs: [0.01]}}}")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    cells = {(c.model, c.measure): c.settings for c in expand(load_suite(path)) if c.task}
    assert cells[("lstm", "accuracy")] == {"steps": 7, "lrs": [0.01]}  # model beats task beats suite
    assert cells[("gru", "accuracy")] == {"steps": 5, "lrs": [0.01]}
    assert all(s == {} for (m, measure), s in cells.items() if measure == "throughput")


def test_match_key_in_a_model_entry_and_in_defaults(tmp_path: Path) -> None:
    text = GOOD.replace("defaults: {d_model: 16, n_layers: 1}", "defaults: {n_layers: 1, match: {params: 3000}}")
    text = text.replace("{family: gru}", "{family: gru, match: {state_bytes: 256}}")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    suite = load_suite(path)
    assert suite.models["lstm"]["match"] == {"params": 3000} and suite.models["gru"]["match"] == {"state_bytes": 256}
    path.write_text(text.replace("{state_bytes: 256}", "{flops: 1}"))
    with pytest.raises(SuiteError, match=r"s.yaml:\d+: models.gru.match: unknown key 'flops'; valid: params, state_bytes"):
        load_suite(path)
