"""seqbench model zoo: every family behind one interface (see models/base.py).

    import models
    models.names()
    m = models.build("lstm", vocab_size=16, d_model=64, n_layers=2)
"""

from models.base import BackboneModel, Mixer, ModelConfig, SequenceModel
from models.config import ConfigError
from models.registry import build, config_class, config_dict, make, names, register

# Registration happens by these explicit imports (one module per family).
from models import rnn  # noqa: E402,F401  rnn, lstm, gru
from models import seq2seq  # noqa: E402,F401
from models import transformer  # noqa: E402,F401
from models import mamba  # noqa: E402,F401

__all__ = [
    "BackboneModel", "ConfigError", "Mixer", "ModelConfig", "SequenceModel",
    "build", "config_class", "config_dict", "make", "names", "register",
]
