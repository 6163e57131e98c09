"""The findings suites of issue 9 (bench/suites/findings-*.yaml) and their analyses (bench/findings/).

Each suite validates, runs at a tiny size (a few steps, short streams; the `--set` path a user
would take) with no failed cell, and its analysis turns that run into a table and a verdict.
The verdict criteria are checked on hand-made rows whose answer is known.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from seqbench.bench.findings.core import FINDINGS, VERDICTS, analyse_run, growth_ratio, to_markdown
from seqbench.bench.run.config import load_suite
from seqbench.bench.run.matrix import expand
from seqbench.bench.run.runner import execute, prepare

ROOT = Path(__file__).resolve().parents[1]
TINY_ACCURACY = ["measures.accuracy.steps=3", "measures.accuracy.batch_size=4", "measures.accuracy.eval_batches=1",
                 "measures.accuracy.eval_batch_size=4"]
TINY = {
    "zoology": TINY_ACCURACY,
    "induction": TINY_ACCURACY + ["tasks.induction.seq_len=16"],
    "formal": TINY_ACCURACY + ["seeds=[0]", "measures.accuracy.lrs=[0.003]"],
    "bai": TINY_ACCURACY + ["tasks.adding_long.seq_len=40", "tasks.copy_long.delay=20"],
    "copying": TINY_ACCURACY,
    "digits": TINY_ACCURACY + ["defaults.d_model=16"],
    "recall-modern": TINY_ACCURACY + ["defaults.n_layers=1"],
    "state-tracking": TINY_ACCURACY + ["seeds=[0]", "measures.accuracy.lrs=[0.003]", "defaults.d_model=16"],
    "latency": ["defaults.d_model=16", "shapes.seq_len=[16,128]", "exclude=[{measure: latency, seq_len: 16}]",
                "measures.latency.warmup=2", "measures.latency.repeats=1"],
}


def suite_path(key: str) -> Path:
    return ROOT / "bench" / "suites" / f"findings-{key}.yaml"


def test_every_finding_has_a_suite_with_a_documented_header():
    assert set(TINY) == set(FINDINGS)
    for key in FINDINGS:
        text = suite_path(key).read_text()
        header = text[: text.index("\nname:")]
        assert "Source" in header and "--set" in header and "GPU" in header, key
        suite = load_suite(suite_path(key))
        assert suite.threads == 1 and suite.name == f"findings-{key}"
        assert expand(suite)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("findings")
    runs = {}
    for key, overrides in TINY.items():
        suite, run_dir = prepare(suite_path(key), root / key, overrides, None, None)
        execute(suite, run_dir, parallel=2, quiet=True)
        runs[key] = run_dir
    return runs


@pytest.mark.parametrize("key", list(TINY))
def test_tiny_run_completes_and_is_analysed(tiny_runs: dict[str, Path], key: str):
    run_dir = tiny_runs[key]
    df = pd.read_json(run_dir / "results.jsonl", lines=True)
    cells = expand(load_suite(run_dir / "suite.yaml"))
    assert set(df.cell_id) == {c.cell_id for c in cells}
    assert set(df.status) == {"ok"}, df[df.status != "ok"][["model", "task", "error"]].to_string()
    a = analyse_run(key, run_dir)
    assert a.verdict in VERDICTS and a.reason and not a.failed
    assert len(a.table) >= 1 and to_markdown(a.table).count("\n") == len(a.table) + 1
    suite = load_suite(run_dir / "suite.yaml")
    for name in suite.models:  # every model of the suite appears in the setup
        assert f"`{name}`" in a.setup


def test_run_findings_script_writes_the_markdown(tiny_runs: dict[str, Path], tmp_path: Path):
    spec = importlib.util.spec_from_file_location("run_findings", ROOT / "scripts" / "run_findings.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = next(iter(tiny_runs.values())).parent
    text = script.write_markdown(root, tmp_path / "findings.md")
    assert text.count("\n## ") == len(FINDINGS)
    assert "**Not run.**" not in text
    for f in FINDINGS.values():
        assert f.source in text and f.claim in text


# --- the criteria, on rows with a known answer ------------------------------------------------


def _acc_rows(values: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    """Final-accuracy rows as the accuracy measure writes them: (model, task, eval_seq_len) -> value."""
    rows = []
    for (model, task, n), v in values.items():
        rows.append({"cell_id": f"{model}-{task}", "measure": "accuracy", "status": "ok", "metric": "accuracy",
                     "split": "eval", "distance": None, "best": True, "model": model, "family": model.split("_")[0],
                     "task": task, "task_kind": None, "seed": 0, "eval_seq_len": n, "length_factor": n / 32,
                     "value": v, "error": None})
    return pd.DataFrame(rows)


def test_zoology_criterion():
    suite = load_suite(suite_path("zoology"))
    tasks_ = {t: suite.tasks[t]["num_kv_pairs"] for t in suite.tasks}
    few, mid, many = sorted(tasks_, key=tasks_.get)

    def run(rec: dict[tuple[str, str], float]) -> str:
        vals = {(m, t, 32): 1.0 for m in suite.models if m.startswith("attn") for t in tasks_}
        vals.update({(m, t, 32): v for (m, t), v in rec.items()})
        return FINDINGS["zoology"].analyse(_acc_rows(vals), suite).verdict

    # recurrent widths needed grow with kv: d16 only the fewest pairs, d32 two sizes, d64 all
    growing = {}
    for fam in ("lstm", "mamba"):
        growing.update({(f"{fam}_d16", few): 1.0, (f"{fam}_d16", mid): 0.2, (f"{fam}_d16", many): 0.1,
                        (f"{fam}_d32", few): 1.0, (f"{fam}_d32", mid): 0.95, (f"{fam}_d32", many): 0.1,
                        (f"{fam}_d64", few): 1.0, (f"{fam}_d64", mid): 1.0, (f"{fam}_d64", many): 0.1})
    assert run(growing) == "agree"
    # recurrent models solving everything: attention's half holds, the width half does not
    assert run({(f"{f}_d{w}", t): 1.0 for f in ("lstm", "mamba") for w in (16, 32, 64) for t in tasks_}) == "partly"
    # a wider recurrent model doing worse breaks the pattern for that family
    broken = dict(growing)
    broken[("lstm_d64", few)] = 0.1
    assert run(broken) == "partly"


def test_induction_criterion():
    suite = load_suite(suite_path("induction"))
    lengths = [64, 128, 1024]
    keep = {("mamba", "induction", n): 1.0 for n in lengths}
    collapse = {(m, "induction", n): v for m in ("attn_rope", "attn_learned") for n, v in zip(lengths, (1.0, 0.4, 0.1))}
    assert FINDINGS["induction"].analyse(_acc_rows({**keep, **collapse}), suite).verdict == "agree"
    fade = {("mamba", "induction", n): v for n, v in zip(lengths, (1.0, 0.6, 0.2))}
    assert FINDINGS["induction"].analyse(_acc_rows({**fade, **collapse}), suite).verdict == "partly"
    hold = {(m, "induction", n): 1.0 for m in ("attn_rope", "attn_learned") for n in lengths}
    assert FINDINGS["induction"].analyse(_acc_rows({**fade, **hold}), suite).verdict == "disagree"


def test_latency_growth_ratio():
    # buckets before position 32 are ignored; last over first remaining
    row = pd.Series({0: 9.0, 8: 9.0, 40: 1.0, 400: 1.5, 4000: 3.0})
    assert growth_ratio(row) == pytest.approx(3.0)
    assert growth_ratio(pd.Series({0: 1.0, 40: 2.0})) != growth_ratio(pd.Series({0: 1.0, 40: 2.0}))  # NaN


def test_formal_criterion():
    suite = load_suite(suite_path("formal"))
    lstm = {("lstm", "parity", n): 1.0 for n in (20, 40, 80)}
    chance_level = {(m, "parity", n): 0.5 for m in ("transformer", "mamba") for n in (20, 40, 80)}
    assert FINDINGS["formal"].analyse(_acc_rows({**lstm, **chance_level}), suite).verdict == "agree"
    extrapolating_attention = {**chance_level, ("transformer", "parity", 40): 0.8}
    assert FINDINGS["formal"].analyse(_acc_rows({**lstm, **extrapolating_attention}), suite).verdict == "partly"


def test_state_tracking_criterion():
    suite = load_suite(suite_path("state-tracking"))
    trackers = {(m, "parity", n): 1.0 for m in ("deltanet_neg", "slstm") for n in (20, 40, 80)}
    linear = {(m, "parity", n): v for m in ("deltanet", "mlstm") for n, v in ((20, 0.66), (40, 0.45), (80, 0.52))}
    assert FINDINGS["state-tracking"].analyse(_acc_rows({**trackers, **linear}), suite).verdict == "agree"
    falls_off = {**trackers, ("deltanet_neg", "parity", 80): 0.6}
    a = FINDINGS["state-tracking"].analyse(_acc_rows({**falls_off, **linear}), suite)
    assert a.verdict == "partly" and "deltanet_neg (expected to track state): not as expected" in a.reason
    both_wrong = {**{k: 0.5 for k in trackers}, **{k: 1.0 for k in linear}}
    assert FINDINGS["state-tracking"].analyse(_acc_rows(both_wrong), suite).verdict == "disagree"


def test_copying_criterion_counts_only_transformers_that_copy():
    suite = load_suite(suite_path("copying"))
    rev, cop = (33, 65, 129), (65, 128, 254)

    def rows(model: str, r: tuple, c: tuple) -> dict:
        return {**{(model, "reverse", n): v for n, v in zip(rev, r)},
                **{(model, "copy", n): v for n, v in zip(cop, c)}}

    fixed_state = {**rows("mamba", (0.7, 0.2, 0.1), (0.3, 0.1, 0.1)), **rows("lstm", (0.6, 0.3, 0.2), (0.1, 0.1, 0.1))}
    gradual = {**rows("attn_rope", (1.0, 0.8, 0.5), (1.0, 0.1, 0.1)), **rows("attn_nope", (0.3, 0.2, 0.1), (0.2, 0.1, 0.1))}
    assert FINDINGS["copying"].analyse(_acc_rows({**fixed_state, **gradual}), suite).verdict == "agree"
    # the RoPE model collapses past training; a NoPE model that never learned keeps a larger *fraction*
    # of its (low) accuracy, which must not count as a transformer degrading gradually
    collapse = {**rows("attn_rope", (1.0, 0.09, 0.08), (1.0, 0.1, 0.1)), **rows("attn_nope", (0.4, 0.35, 0.3), (0.3, 0.1, 0.1))}
    a = FINDINGS["copying"].analyse(_acc_rows({**fixed_state, **collapse}), suite)
    assert a.verdict == "partly" and "attn_rope" in a.reason


def test_digits_criterion_reads_the_test_score_at_the_lr_chosen_on_validation():
    suite = load_suite(suite_path("digits"))
    task = next(iter(suite.tasks))

    def rows(lstm_test: float, lstm_valid_other: float) -> pd.DataFrame:
        out = []
        for model in suite.models:
            fam = suite.models[model]["family"]
            good = lstm_test if fam == "lstm" else 0.8
            # lr 0.003 validates best; lr 0.001 has a higher test score, which must not be picked
            for lr, test, valid in ((0.003, good, 0.95), (0.001, 0.99, lstm_valid_other)):
                for split, v in (("eval", test), ("valid", valid)):
                    out.append({"cell_id": f"{model}-{task}", "measure": "accuracy", "status": "ok",
                                "metric": "accuracy", "split": split, "distance": None, "best": lr == 0.003,
                                "model": model, "family": fam, "task": task, "task_kind": "sequential_image",
                                "seed": 0, "lr": lr, "eval_seq_len": 64, "length_factor": 1.0, "value": v,
                                "chance": 0.1, "n_scored": 364 if split == "eval" else 139, "error": None})
        return pd.DataFrame(out)

    a = FINDINGS["digits"].analyse(rows(0.93, 0.90), suite)
    assert a.verdict == "agree" and "0.930" in a.reason
    assert FINDINGS["digits"].analyse(rows(0.85, 0.90), suite).verdict == "partly"  # learned, below 0.9
    assert FINDINGS["digits"].analyse(rows(0.11, 0.90), suite).verdict == "disagree"  # at chance
