"""seq2seq: parameter count against a closed-form formula, output layout, the teacher-forcing
shift, teacher forcing vs greedy decoding, learning to copy, config errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from seqbench import models

IGNORE = -100
CELLS = ["lstm", "gru"]
ATTENTIONS = ["none", "additive", "dot"]
GATES = {"gru": 3, "lstm": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def expected_params(cell: str, attention: str, bi: bool, V: int, D: int, L: int, C: int) -> int:
    g, dirs = GATES[cell], (2 if bi else 1)

    def rnn_layer(d_in: int) -> int:  # one layer, one direction: g * (W_ih + W_hh + b_ih + b_hh)
        return g * ((d_in + D) * D + 2 * D)

    embed = V * D
    encoder = dirs * rnn_layer(D) + (L - 1) * dirs * rnn_layer(dirs * D)
    bridge = 0
    if bi:
        n_states = 2 if cell == "lstm" else 1  # W_bh (+ W_bc), each (D, 2D) + bias
        bridge = 2 * D * D + n_states * (2 * D * D + D)  # + W_m (D, 2D), no bias
    d_dec_in = 2 * D if attention == "additive" else D
    decoder = rnn_layer(d_dec_in) + (L - 1) * rnn_layer(D)
    attn = 0
    if attention == "additive":
        attn += D * D + (D * D + D) + D  # W_q, W_k + bias, v
    if attention != "none":
        attn += 2 * D * D + D  # W_c
    head = D * C + C
    return embed + encoder + bridge + decoder + attn + head


@pytest.mark.parametrize("cell,attention,bi", itertools.product(CELLS, ATTENTIONS, [False, True]))
def test_param_count_formula(cell: str, attention: str, bi: bool) -> None:
    V, D, L, C = 11, 6, 3, 9
    m = models.build("seq2seq", vocab_size=V, d_model=D, n_layers=L, d_output=C, cell=cell,
                     attention=attention, bidirectional_encoder=bi)
    assert m.n_params == expected_params(cell, attention, bi, V, D, L, C)


def make(cell: str = "lstm", attention: str = "dot", bi: bool = False, **kw) -> models.SequenceModel:
    torch.manual_seed(0)
    cfg = {"vocab_size": 10, "d_model": 16, "n_layers": 2, "cell": cell, "attention": attention, "bidirectional_encoder": bi}
    return models.build("seq2seq", **{**cfg, **kw})


@pytest.mark.parametrize("cell,attention,bi", itertools.product(CELLS, ATTENTIONS, [False, True]))
def test_shapes_zeros_and_teacher_forcing_matches_greedy(cell: str, attention: str, bi: bool) -> None:
    """Greedy decoding, then teacher forcing on the greedy choices, must give the same logits:
    the fused teacher-forced decoder (none/dot) and the stepping one agree, and the shift is t-1."""
    m = make(cell, attention, bi)
    B, T, S = 3, 11, 5
    x = torch.randint(0, 10, (B, T))
    m.eval()
    with torch.no_grad():
        greedy = m(x, S)  # (B, T, C)
    assert greedy.shape == (B, T, 10)
    assert torch.count_nonzero(greedy[:, :S]) == 0
    targets = torch.full((B, T), IGNORE)
    targets[:, S:] = greedy[:, S:].argmax(-1)
    m.train()  # dropout is 0, so train mode differs only by using the targets
    forced = m(x, S, targets=targets)
    assert forced.shape == (B, T, 10)
    assert torch.allclose(forced, greedy, atol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_teacher_forcing_is_shifted_by_one(attention: str) -> None:
    """Logits at position t depend on targets before t only."""
    m = make("gru", attention).train()
    B, T, S, t0 = 2, 10, 4, 6
    x = torch.randint(0, 10, (B, T))
    targets = torch.randint(0, 10, (B, T))
    changed = targets.clone()
    changed[:, t0] = (targets[:, t0] + 1) % 10
    with torch.no_grad():
        a, b = m(x, S, targets=targets), m(x, S, targets=changed)
    assert torch.equal(a[:, : t0 + 1], b[:, : t0 + 1])
    assert not torch.allclose(a[:, t0 + 1], b[:, t0 + 1])


def test_encoder_reads_only_the_source() -> None:
    m = make("lstm", "additive", bi=True).eval()
    x = torch.randint(0, 10, (2, 9))
    x2 = x.clone()
    x2[:, 4:] = (x[:, 4:] + 3) % 10  # change everything after the source x[:, :4]
    x3 = x.clone()
    x3[:, 0] = (x[:, 0] + 3) % 10  # change the first source token
    with torch.no_grad():
        assert torch.equal(m(x, 4), m(x2, 4))
        assert not torch.allclose(m(x, 4), m(x3, 4))


def test_ignored_targets_fall_back_to_inputs() -> None:
    m = make("lstm", "none").train()
    x = torch.randint(0, 10, (2, 8))
    targets = torch.randint(0, 10, (2, 8))
    holes = targets.clone()
    holes[:, 5] = IGNORE
    filled = targets.clone()
    filled[:, 5] = x[:, 5]
    with torch.no_grad():
        assert torch.equal(m(x, 3, targets=holes), m(x, 3, targets=filled))


def copy_batch(B: int = 16, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, int]:
    """x = [a_1..a_n, MARK, 0 x n], targets a_1..a_n after the marker; src_len = n + 1."""
    g = torch.Generator().manual_seed(0)
    data = torch.randint(2, 8, (B, n), generator=g)  # 6 data symbols: chance accuracy 1/6
    x = torch.cat([data, torch.ones(B, 1, dtype=torch.long), torch.zeros(B, n, dtype=torch.long)], dim=1)
    targets = torch.cat([torch.full((B, n + 1), IGNORE), data], dim=1)
    return x, targets, n + 1


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_learns_to_copy_and_greedy_reproduces(attention: str) -> None:
    x, targets, S = copy_batch()
    m = make("lstm", attention, vocab_size=8, d_model=32, n_layers=1)
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    losses = []
    for _ in range(50):
        m.train()
        logits = m(x, S, targets=targets)
        loss = F.cross_entropy(logits.reshape(-1, 8), targets.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    m.eval()
    with torch.no_grad():
        pred = m(x, S).argmax(-1)[:, S:]  # greedy: feeds back its own predictions
    accuracy = (pred == targets[:, S:]).float().mean().item()
    assert accuracy >= 0.9, accuracy  # chance is 1/6


def test_not_streamable_and_needs_src_len() -> None:
    m = make()
    assert not m.streamable and m.needs_src_len
    with pytest.raises(NotImplementedError, match="not streamable"):
        m.step(torch.zeros(2, dtype=torch.long), None)
    with pytest.raises(NotImplementedError, match="not streamable"):
        m.init_state(2, 8)
    x = torch.randint(0, 10, (2, 8))
    with pytest.raises(ValueError, match="no source/target split"):
        m(x)
    with pytest.raises(ValueError, match="src_len must be in"):
        m(x, 0)
    assert torch.count_nonzero(m(x, 8)) == 0  # all source: nothing to decode


def test_bad_configs_raise_config_error() -> None:
    cases = [
        ({"attention": "dott"}, "'attention' must be one of.*did you mean 'dot'"),
        ({"cell": "lstn"}, "'cell' must be one of.*did you mean 'lstm'"),
        ({"atention": "dot"}, "unknown config key 'atention'.*did you mean 'attention'"),
        ({"bidirectional_encoder": 1}, "'bidirectional_encoder' must be true or false"),
        ({"d_input": 3}, "d_input must be null"),
        ({"pool": "mean"}, "pool must be 'none'"),
        ({"mlp_ratio": 4.0}, "mlp_ratio must be 0"),
        ({"vocab_size": 5, "d_output": 6}, r"d_output \(6\) must be <= vocab_size"),
    ]
    for config, message in cases:
        with pytest.raises(models.ConfigError, match=message):
            models.build("seq2seq", **config)
