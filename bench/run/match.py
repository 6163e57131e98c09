"""Fair budgets by size: fit each model's width (d_model) so that its parameter count, or the bytes of
its recurrent state, lands on a target within ±10%.

    models:
      lstm:  {family: lstm, match: {params: 50000}}
      mamba: {family: mamba, match: {state_bytes: 8192}}
    defaults: {match: {params: 50000}}          # every model (a model's own `match` wins)

A match replaces the model's d_model. The width is searched once per cell where the model is
built (bench/run/cell.py), with the task's vocabulary and outputs, since embeddings and heads
count: the width whose size is nearest to the target among the widths the family accepts (e.g.
multiples of n_heads). Parameters are counted as `model.n_params`; state bytes as
`model.state_bytes(seq_len, 1)` at the cell's trained length (a KV cache grows with it, a
recurrent state does not; non-streamable models have none to match). A target no width reaches
within the tolerance is a skipped cell saying the nearest size. Rows record `match` ("params=50000")
and the `d_model` used; `params` is the model's own count as always.
"""

from __future__ import annotations

from typing import Any

import torch

from seqbench import models
from seqbench.errors import ConfigError

MATCH_KEY = "match"  # the key of a model entry (or of `defaults`) in a suite
MATCH_KEYS = ("params", "state_bytes")
TOLERANCE = 0.10  # relative distance to the target a fitted width must reach
MAX_WIDTH = 8192


class MatchError(ConfigError):
    """No width of the family lands within TOLERANCE of the target."""


def check_match(value: Any) -> dict[str, int]:
    """The validated `match` mapping: exactly one of MATCH_KEYS -> a positive int (ConfigError otherwise)."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"must be a mapping with one of {', '.join(MATCH_KEYS)}, e.g. {{params: 50000}}; "
                          f"got {value!r}")
    (key, target), = value.items()
    if key not in MATCH_KEYS:
        raise ConfigError(f"unknown key {key!r}; valid: {', '.join(MATCH_KEYS)}")
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ConfigError(f"{key} must be a positive int, got {target!r}")
    return {key: target}


def label(match: dict[str, int]) -> str:
    """'params=50000': how rows record the target."""
    (key, target), = match.items()
    return f"{key}={target}"


def size_of(family: str, config: dict[str, Any], key: str, seq_len: int) -> int:
    """n_params or state_bytes(seq_len, 1) of family built with `config`, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = models.build(family, **config)
    if key == "params":
        return int(model.n_params)
    if not model.streamable:
        raise MatchError(f"{family} is not streamable (bidirectional, pooled or encoder-decoder): "
                         "it has no recurrent state to match; match params instead")
    return int(model.state_bytes(seq_len, 1))


def _accepts(family: str, config: dict[str, Any], width: int) -> bool:
    try:
        models.make(family, **{**config, "d_model": width})
    except ConfigError:
        return False
    return True


def _valid_near(family: str, config: dict[str, Any], width: int, step: int) -> int | None:
    """The first width the family accepts from `width` on, going by `step` (+1 up, -1 down); None past the range."""
    w = width
    while 1 <= w <= MAX_WIDTH:
        if _accepts(family, config, w):
            return w
        w += step
    return None


def fit_width(family: str, config: dict[str, Any], match: dict[str, int], seq_len: int) -> tuple[int, int]:
    """(d_model, size) nearest to the target among the widths the family accepts (e.g. multiples of n_heads).
    Sizes grow with the width, so a binary search for the first accepted width whose size reaches the
    target, then the accepted width below it, bracket it. MatchError when the nearer of the two is off by
    more than TOLERANCE."""
    (key, target), = match.items()
    sizes: dict[int, int] = {}

    def size(w: int) -> int:
        if w not in sizes:
            sizes[w] = size_of(family, {**config, "d_model": w}, key, seq_len)
        return sizes[w]

    def reaches(w: int) -> bool:  # monotone in w: the next accepted width from w has size >= target
        v = _valid_near(family, config, w, +1)
        return v is None or size(v) >= target

    lo, hi = 1, MAX_WIDTH
    while lo < hi:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid + 1
    above = _valid_near(family, config, lo, +1)
    below = _valid_near(family, config, (above or MAX_WIDTH + 1) - 1, -1)
    found = [w for w in (below, above) if w is not None]
    if not found:
        raise MatchError(f"{family}: no d_model in 1..{MAX_WIDTH} is valid with {config}")
    best = min(found, key=lambda w: abs(size(w) - target))
    if abs(size(best) - target) > TOLERANCE * target:
        raise MatchError(f"{family}: no width reaches {key} {target} within ±{TOLERANCE:.0%} (nearest: d_model "
                         f"{best} with {size(best)}); change the target or the other keys (n_layers, …)")
    return best, size(best)


def apply(family: str, config: dict[str, Any], match: dict[str, int] | None, seq_len: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config with the fitted d_model, row facts {match, d_model}); without a match the config unchanged and
    facts {d_model} when the config names one."""
    if not match:
        return config, ({"d_model": config["d_model"]} if "d_model" in config else {})
    width, _ = fit_width(family, config, match, seq_len)
    return {**config, "d_model": width}, {"match": label(match), "d_model": width}
