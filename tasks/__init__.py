"""seqbench tasks: seeded synthetic generators and offline real-data loaders.

    import tasks
    tasks.names()
    t = tasks.build("copy", vocab_size=10, n_copy=8, delay=32)
    b = t.batch(32, seed=0, split="train")
"""

from tasks.base import IGNORE_INDEX, Batch, Task, loss, score, task_rng, token_batch
from tasks.config import ConfigError
from tasks.registry import build, config_class, names, register

# Registration happens by these explicit imports (one module per task or task family).
from tasks import copy  # noqa: E402,F401  copy, selective_copy
from tasks import recall  # noqa: E402,F401  associative_recall, induction_heads, long_range_recall
from tasks import adding  # noqa: E402,F401
from tasks import seq2seq_tasks  # noqa: E402,F401  reverse
from tasks import formal  # noqa: E402,F401  parity, modular_arithmetic, cycle_navigation, even_pairs
from tasks import listops  # noqa: E402,F401
from tasks import sequential_image  # noqa: E402,F401
from tasks import timeseries  # noqa: E402,F401  timeseries_classification, forecasting
from tasks import char_lm  # noqa: E402,F401

__all__ = [
    "IGNORE_INDEX", "Batch", "ConfigError", "Task", "build", "config_class", "loss",
    "names", "register", "score", "task_rng", "token_batch",
]
