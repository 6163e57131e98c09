"""rnn / lstm / gru: parameter counts against closed-form formulas, step == forward,
causality, the plain stack against a bare multi-layer torch RNN, impl against the autograd graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqbench import models
from seqbench.models.rnn import state_dict_from_stacked

FAMILIES = ["rnn", "lstm", "gru"]
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
BARE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def recurrent_params(family: str, d_in: int, d: int) -> int:
    """One torch recurrent layer, one direction: g * (W_ih (d, d_in) + W_hh (d, d) + b_ih + b_hh)."""
    return GATES[family] * ((d_in + d) * d + 2 * d)


def expected_params(family: str, V: int, D: int, L: int, C: int, bidirectional: bool, residual: bool,
                    d_input: int | None = None, norm: str = "layernorm") -> int:
    embed = d_input * D + D if d_input is not None else V * D
    norm_p = 2 * D if norm == "layernorm" else D
    dirs = 2 if bidirectional else 1
    layer = dirs * recurrent_params(family, D, D) + (2 * D * D if bidirectional else 0)  # + W_o (D, 2D)
    if residual:
        layer += norm_p  # pre-norm
    final_norm = norm_p if residual else 0
    head = D * C + C
    return embed + L * layer + final_norm + head


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_param_count_formula(family: str, bidirectional: bool, residual: bool) -> None:
    V, D, L, C = 11, 12, 3, 7
    m = models.build(family, vocab_size=V, d_model=D, n_layers=L, d_output=C,
                     bidirectional=bidirectional, residual=residual)
    assert m.n_params == expected_params(family, V, D, L, C, bidirectional, residual)


def test_param_count_float_inputs_rmsnorm() -> None:
    m = models.build("gru", d_input=5, d_output=2, d_model=8, n_layers=2, norm="rmsnorm")
    assert m.n_params == expected_params("gru", 0, 8, 2, 2, False, True, d_input=5, norm="rmsnorm")


def test_flops_count_recurrent_matmuls() -> None:
    """2 * g * (d_in*D + D*D) per layer per direction, + the W_o projection and the head."""
    V, D, L = 10, 16, 2
    for family in FAMILIES:
        for bi in (False, True):
            m = models.build(family, vocab_size=V, d_model=D, n_layers=L, bidirectional=bi)
            dirs = 2 if bi else 1
            per_layer = dirs * 2 * GATES[family] * (D * D + D * D) + (2 * 2 * D * D if bi else 0)
            assert m.flops_per_token(100) == L * per_layer + 2 * D * V


def run_steps(m: models.SequenceModel, x: torch.Tensor) -> torch.Tensor:
    state = m.init_state(x.shape[0], x.shape[1])
    outs = []
    for t in range(x.shape[1]):
        y_t, state = m.step(x[:, t], state)
        outs.append(y_t)
    return torch.stack(outs, dim=1)  # (B, T, C)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("residual", [False, True])
def test_step_equals_forward(family: str, residual: bool) -> None:
    torch.manual_seed(0)
    m = models.build(family, vocab_size=13, d_model=24, n_layers=2, residual=residual, mlp_ratio=2.0).eval()
    x = torch.randint(0, 13, (3, 20))
    with torch.no_grad():
        full = m(x)  # (B, T, C)
        stepped = run_steps(m, x)
    scale = max(1.0, full.abs().max().item())
    assert (stepped - full).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("family", FAMILIES)
def test_step_equals_forward_float_inputs(family: str) -> None:
    torch.manual_seed(1)
    m = models.build(family, d_input=3, d_output=2, d_model=16, n_layers=2).eval()
    x = torch.randn(2, 15, 3)
    with torch.no_grad():
        full, stepped = m(x), run_steps(m, x)
    assert (stepped - full).abs().max().item() <= 1e-4 * max(1.0, full.abs().max().item())


@pytest.mark.parametrize("family", FAMILIES)
def test_state_bytes_match_state_tensors(family: str) -> None:
    m = models.build(family, vocab_size=8, d_model=16, n_layers=3)
    state = m.init_state(5, 100)
    actual = sum(t.numel() * t.element_size() for layer in state for t in layer)
    n_state = 2 if family == "lstm" else 1  # h (+ c)
    assert m.state_bytes(100, batch_size=5) == actual == 3 * n_state * 5 * 16 * 4


@pytest.mark.parametrize("family", FAMILIES)
def test_bidirectional_not_streamable_and_sees_future(family: str) -> None:
    torch.manual_seed(0)
    bi = models.build(family, vocab_size=9, d_model=8, n_layers=1, bidirectional=True).eval()
    uni = models.build(family, vocab_size=9, d_model=8, n_layers=1).eval()
    assert not bi.streamable and uni.streamable
    for call in (lambda: bi.init_state(2, 4), lambda: bi.step(torch.zeros(2, dtype=torch.long), None),
                 lambda: bi.state_bytes(4)):
        with pytest.raises(NotImplementedError, match="not streamable"):
            call()
    x = torch.randint(0, 9, (2, 6))
    x2 = x.clone()
    x2[:, -1] = (x[:, -1] + 1) % 9  # change only the last token
    with torch.no_grad():
        assert not torch.allclose(bi(x)[:, 0], bi(x2)[:, 0])  # the backward direction carries it to t=0
        assert torch.equal(uni(x)[:, :-1], uni(x2)[:, :-1])  # causal: earlier outputs unchanged


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_stack_equals_bare_torch_stack(family: str) -> None:
    """residual=False is exactly Embedding -> multi-layer nn.RNN/LSTM/GRU -> Linear."""
    torch.manual_seed(0)
    V, D, L = 10, 16, 3
    m = models.build(family, vocab_size=V, d_model=D, n_layers=L, residual=False).eval()
    bare = BARE[family](D, D, L, batch_first=True).eval()
    loaded = m.load_state_dict(state_dict_from_stacked(bare), strict=False)
    assert not loaded.unexpected_keys and all(k.startswith(("embed", "head")) for k in loaded.missing_keys)
    x = torch.randint(0, V, (4, 12))
    with torch.no_grad():
        ref = m.head(bare(m.embed(x))[0])
        assert torch.allclose(m(x), ref, atol=1e-6)


def _backward_nodes(m: models.SequenceModel, x: torch.Tensor) -> set[str]:
    """Names of the autograd nodes of one forward: a fused kernel shows up as its own node."""
    nodes, todo = set(), [m(x).grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in nodes:
            nodes.add(fn)
            todo.extend(f for f, _ in fn.next_functions)
    return {type(fn).__name__ for fn in nodes}


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_impl_reports_the_kernel_that_ran() -> None:
    x = torch.randint(0, 8, (2, 5))
    lstm, gru = models.build("lstm", vocab_size=8, d_model=8), models.build("gru", vocab_size=8, d_model=8)
    assert lstm.impl == "onednn" and "MkldnnRnnLayerBackward0" in _backward_nodes(lstm, x)
    assert gru.impl == "torch-cpu" and not any("Mkldnn" in n for n in _backward_nodes(gru, x))
    with torch.backends.mkldnn.flags(enabled=False):
        assert lstm.impl == "torch-cpu" and not any("Mkldnn" in n for n in _backward_nodes(lstm, x))
    assert lstm.double().impl == "torch-cpu"  # oneDNN has no fp64 RNN


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_and_gradients_reach_every_parameter(family: str) -> None:
    torch.manual_seed(0)
    m = models.build(family, vocab_size=6, d_model=16, n_layers=2, bidirectional=family == "gru")
    x = torch.randint(0, 6, (4, 10))
    y = torch.roll(x, 1, dims=1)  # predict the previous token
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(m(x).reshape(-1, 6), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_configs_raise_config_error() -> None:
    with pytest.raises(models.ConfigError, match="bidirectonal.*did you mean 'bidirectional'"):
        models.build("lstm", bidirectonal=True)
    with pytest.raises(models.ConfigError, match="'residual' must be true or false"):
        models.build("gru", residual="yes")
    with pytest.raises(models.ConfigError, match="did you mean 'lstm'"):
        models.build("lstn")
