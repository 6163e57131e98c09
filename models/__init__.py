"""seqbench model zoo: every family behind one interface (see models/base.py).

    from seqbench import models
    models.names()
    m = models.build("lstm", vocab_size=16, d_model=64, n_layers=2)
    m = models.build("my_pkg.mixers:MyMixer", d_model=64)   # your own model (models/user.py)
"""

# ruff: noqa: I001, F401  (the registration imports come last, in this order)
from seqbench.errors import ConfigError
from seqbench.models.base import BackboneModel, Mixer, ModelConfig, SequenceModel
from seqbench.models.registry import build, config_class, config_dict, make, names, register

# Registration happens by these explicit imports (one module per family).
from seqbench.models import rnn  # rnn, lstm, gru
from seqbench.models import seq2seq
from seqbench.models import transformer
from seqbench.models import mamba
from seqbench.models import mamba2
from seqbench.models import minrnn  # mingru, minlstm
from seqbench.models import xlstm  # mLSTM and sLSTM blocks
from seqbench.models import linear_attention  # kind: gla | retnet | deltanet

__all__ = [
    "BackboneModel", "ConfigError", "Mixer", "ModelConfig", "SequenceModel",
    "build", "config_class", "config_dict", "make", "names", "register",
]
