"""seqbench tasks: seeded synthetic generators and offline real-data loaders.

    from seqbench import tasks
    tasks.names()
    t = tasks.build("copy", vocab_size=10, n_copy=8, delay=32)
    b = t.batch(32, seed=0, split="train")
"""

# ruff: noqa: I001, F401  (the registration imports come last, in this order)
from seqbench.errors import ConfigError, MissingDataError
from seqbench.tasks.base import IGNORE_INDEX, Batch, RealTask, Task, loss, score, task_rng, token_batch
from seqbench.tasks.registry import build, config_class, names, register

# Registration happens by these explicit imports (one module per task or task family).
from seqbench.tasks import copy  # copy, selective_copy
from seqbench.tasks import recall  # associative_recall, induction_heads, long_range_recall
from seqbench.tasks import adding
from seqbench.tasks import seq2seq_tasks  # reverse
from seqbench.tasks import formal  # parity, modular_arithmetic, cycle_navigation, even_pairs
from seqbench.tasks import listops
from seqbench.tasks import sequential_image
from seqbench.tasks import timeseries  # timeseries_classification, forecasting
from seqbench.tasks import char_lm

__all__ = [
    "IGNORE_INDEX", "Batch", "ConfigError", "MissingDataError", "RealTask", "Task", "build", "config_class", "loss",
    "names", "register", "score", "task_rng", "token_batch",
]
