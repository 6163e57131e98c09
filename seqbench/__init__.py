"""seqbench: RNNs, Transformers and state-space models on the same tasks and measures.

    from seqbench import models, tasks
    models.names()
    m = models.build("lstm", vocab_size=16, d_model=64, n_layers=2)
    t = tasks.build("copy", vocab_size=10, n_copy=8, delay=32)

The installed packages are `seqbench.models` (the model zoo), `seqbench.tasks` (task
generators and real-data loaders) and `seqbench.bench` (the harness and its CLI,
`python -m seqbench` or the `seqbench` console script). `import seqbench` itself is
cheap: the subpackages load (and import torch) when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"
_SUBPACKAGES = ("bench", "models", "tasks")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"seqbench.{name}")
    raise AttributeError(f"module 'seqbench' has no attribute {name!r}")


__all__ = ["__version__", "bench", "models", "tasks"]
