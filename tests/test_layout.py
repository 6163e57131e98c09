"""seqbench inside anyone's project: the `seqbench.*` namespace, and users' own models and tasks.

Everything here runs the real console script in a subprocess, from a temporary folder that
holds its own `models/`, `tasks/` and `bench/` packages (the most common module names in ML
code), as a new user's repository would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from seqbench import models

pytestmark = pytest.mark.slow

SEQBENCH = shutil.which("seqbench")
MEASURES = {"static", "throughput", "memory", "latency", "accuracy"}

USER_MIXER = '''
import torch
from torch import nn


class Smooth(nn.Module):
    """y_t = W (a * y_{t-1} + (1 - a) * x_t): an exponential moving average, with a streaming step."""

    def __init__(self, d_model: int, decay: float = 0.5):
        super().__init__()
        self.decay = decay
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):  # (B, T, D)
        h, out = torch.zeros_like(x[:, 0]), []
        for t in range(x.shape[1]):
            h = self.decay * h + (1 - self.decay) * x[:, t]
            out.append(h)
        return self.proj(torch.stack(out, 1))

    def init_state(self, batch_size, max_len, device, dtype):
        return torch.zeros(batch_size, self.proj.in_features, device=device, dtype=dtype)

    def step(self, x_t, h):
        h = self.decay * h + (1 - self.decay) * x_t
        return self.proj(h), h


def not_a_class(d_model):
    return None


class NoWidth(nn.Module):
    def __init__(self, hidden: int = 4):
        super().__init__()
'''

USER_TASK = '''
import numpy as np
from seqbench.tasks import Task, token_batch


class Echo(Task):
    """Echo the input token one position later: inputs x, targets x shifted right (first unscored)."""

    metric = "token_accuracy"

    def __init__(self, vocab: int = 6, length: int = 16):
        super().__init__(None)
        self.vocab, self.length = vocab, length

    @property
    def vocab_size(self):
        return self.vocab

    @property
    def seq_len(self):
        return self.length

    def chance(self, seq_len=None):
        return 1.0 / self.vocab

    def _batch(self, batch_size, seq_len, rng, split):
        x = rng.integers(0, self.vocab, size=(batch_size, seq_len))
        y = np.full_like(x, -100)
        y[:, 1:] = x[:, :-1]
        return token_batch(x, y)
'''


def suite_text(models_block: str, tasks_block: str = "echo: {task: echo_task}") -> str:
    def block(text: str) -> str:
        return "".join(f"  {line}\n" for line in text.strip().splitlines())

    return ("name: byo\ndevice: cpu\nthreads: 1\ntimeout_s: 300\ndefaults: {d_model: 8, n_layers: 1}\n"
            f"models:\n{block(models_block)}tasks:\n{block(tasks_block)}"
            "measures:\n"
            "  static: {}\n"
            "  throughput: {repeats: 2, warmup: 1, min_time_s: 0}\n"
            "  memory: {}\n"
            "  latency: {warmup: 1}\n"
            "  accuracy: {steps: 4, lrs: [0.01], batch_size: 4, eval_batches: 1, length_factors: [1]}\n"
            "shapes: {batch_size: [2], seq_len: [8]}\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's repository: its own models/, tasks/ and bench/ packages, a package `userpkg` with a
    mixer and a task, and an installed-looking distribution that registers entry points."""
    root = tmp_path_factory.mktemp("project")
    for name in ("models", "tasks", "bench"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('the user project\\'s own {name}')\n")
    (root / "models.py").write_text("# shadowed by the package, but present as in many repos\n")
    pkg = root / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mixers.py").write_text(USER_MIXER)
    (pkg / "tasks.py").write_text(USER_TASK)
    (pkg / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    dist = root / "userpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[seqbench.models]\nsmooth_ep = userpkg.mixers:Smooth\nghost = userpkg.nowhere:Nothing\n\n"
        "[seqbench.tasks]\necho_task = userpkg.tasks:Echo\n")
    return root


def cli(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([SEQBENCH, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run the CLI in this process with the project on sys.path: `validate(name) -> (code, stderr)`."""
    from seqbench.bench.cli import main
    from seqbench.models.registry import REGISTRY as MODEL_REGISTRY
    from seqbench.tasks.registry import REGISTRY as TASK_REGISTRY

    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    for reg in (MODEL_REGISTRY, TASK_REGISTRY):  # entry points are read once; read them with the project
        monkeypatch.setattr(reg, "_entry_points", None)
        monkeypatch.setattr(reg, "_resolved", {})

    def validate(name: str) -> tuple[int, str]:
        code = main(["validate", name])
        return code, capsys.readouterr().err.strip()

    return validate


def test_nothing_installs_top_level_models_tasks_or_bench():
    dist = importlib.metadata.distribution("seqbench")
    assert (dist.read_text("top_level.txt") or "").split() == ["seqbench"]
    assert dist.entry_points.select(group="console_scripts")["seqbench"].value == "seqbench.bench.cli:main"


def test_cli_lists_models_beside_the_users_own_packages(project: Path):
    assert SEQBENCH, "the seqbench console script is not on PATH (pip install -e .)"
    out = cli(project, "list", "models")
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    builtins = {"rnn", "lstm", "gru", "seq2seq", "transformer", "mamba"}
    assert builtins <= set(names) and "smooth_ep" in names  # built-ins and the entry point
    env = {**os.environ, "PYTHONPATH": str(project)}
    mod = subprocess.run([sys.executable, "-m", "seqbench", "list", "tasks"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=120)
    assert mod.returncode == 0 and "echo_task" in mod.stdout.split(), mod.stderr


def test_user_models_by_import_path_and_entry_point_go_through_every_measure(project: Path):
    (project / "byo.yaml").write_text(suite_text(
        'path_model: {family: "userpkg.mixers:Smooth", decay: 0.3}\n'
        "ep_model: {family: smooth_ep}\n"
        "lstm: {family: lstm}\n",
        'echo: {task: echo_task, length: 12}\npath_task: {task: "userpkg.tasks:Echo", vocab: 5}'))
    out = cli(project, "run", "byo.yaml", "--out", "run", "--parallel", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_json(project / "run" / "results.jsonl", lines=True)
    assert set(df.status) == {"ok"}, df[df.status != "ok"][["model", "measure", "error"]].to_string()
    for model in ("path_model", "ep_model"):
        rows = df[df.model == model]
        assert set(rows.measure) == MEASURES, model
        assert set(rows.family) == {"userpkg.mixers:Smooth" if model == "path_model" else "smooth_ep"}
        assert {"tokens_per_s", "peak_bytes", "latency_p50_ms", "state_bytes", "accuracy"} <= set(rows.metric)
        assert set(rows[rows.measure == "accuracy"].task) == {"echo", "path_task"}
    # the state of the mixer is (B, D) per layer: d_model 8 floats of 4 bytes, batch 1
    state = df[(df.metric == "state_bytes") & (df.model == "path_model") & (df.measure == "static")]
    assert set(state.value) == {8 * 4}
    assert (project / "run" / "report" / "index.html").is_file()


BAD_PATHS = [
    ("userpkg.nothere:Smooth", ["userpkg.nothere", "PYTHONPATH"]),
    ("missing_pkg.mixers:Smooth", ["missing_pkg", "PYTHONPATH"]),
    ("userpkg.mixers:Smoth", ["no attribute 'Smoth'", "did you mean 'Smooth'"]),
    ("userpkg.mixers:not_a_class", ["not a class", "Mixer subclass"]),
    ("userpkg.mixers:NoWidth", ["does not take d_model"]),
    ("userpkg.tasks:Echo", ["not an nn.Module"]),
    ("userpkg.broken:Anything", ["RuntimeError: boom at import"]),
    ("userpkg.mixers", ["package.module:Name"]),
    ("ghost", ["entry point", "userpkg.nowhere"]),
]


@pytest.mark.parametrize("family,expect", BAD_PATHS, ids=[b[0] for b in BAD_PATHS])
def test_bad_model_path_is_one_line_exit_2(project: Path, in_project, family: str, expect: list[str]):
    (project / "bad.yaml").write_text(suite_text(f'm: {{family: "{family}"}}'))
    code, err = in_project("bad.yaml")
    assert code == 2, err
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith("seqbench: error: bad.yaml:") and "models.m.family" in err, err
    for word in expect:
        assert word in err, (word, err)


@pytest.mark.parametrize("task,expect", [
    ("userpkg.mixers:Smooth", ["not a Task subclass"]),
    ("userpkg.tasks:Ech", ["did you mean 'Echo'"]),
])
def test_bad_task_path_is_one_line_exit_2(project: Path, in_project, task: str, expect: list[str]):
    (project / "bad.yaml").write_text(suite_text("lstm: {family: lstm}", f't: {{task: "{task}"}}'))
    code, err = in_project("bad.yaml")
    assert code == 2 and "Traceback" not in err and "\n" not in err, err
    assert "tasks.t.task" in err and all(w in err for w in expect), err


def test_bad_key_of_a_user_model_names_the_key(project: Path, in_project):
    (project / "bad.yaml").write_text(suite_text('m: {family: "userpkg.mixers:Smooth", decy: 0.3}'))
    code, err = in_project("bad.yaml")
    assert code == 2 and "models.m.decy" in err and "did you mean 'decay'" in err
    (project / "bad.yaml").write_text(suite_text('m: {family: "userpkg.mixers:Smooth", decay: fast}'))
    code, err = in_project("bad.yaml")
    assert code == 2 and "models.m.decay" in err and "a number" in err


def test_python_api_builds_a_user_model(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(project))
    import torch

    m = models.build("userpkg.mixers:Smooth", vocab_size=5, d_model=8, n_layers=2, decay=0.25)
    x = torch.randint(0, 5, (2, 7))
    y = m(x)
    state, steps = m.init_state(2, 7), []
    for t in range(7):
        out, state = m.step(x[:, t], state)
        steps.append(out)
    assert m.streamable and torch.allclose(torch.stack(steps, 1), y, atol=1e-5)
    assert m.state_bytes(100) == 2 * 8 * 4  # two layers of (1, D) floats, whatever the length
    assert json.loads(json.dumps(models.config_dict(models.make("userpkg.mixers:Smooth", decay=0.25))))["decay"] == 0.25
