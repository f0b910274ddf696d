"""NeuralMemory: streams exactly (any pieces, one token at a time), causal, naive == chunk, ablations, errors."""

from __future__ import annotations

import pytest
import torch

from titans.layers import NeuralMemory

from ..conftest import rel_err


def _layer(**kw):
    kw = {"d_model": 24, "n_heads": 2, "chunk_size": 4, **kw}
    return NeuralMemory(**kw).double()


def _stream(mem, x, cuts):
    bounds = [0, *cuts, x.shape[1]]
    state, ys = None, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        y, state = mem(x[:, a:b], state)
        ys.append(y)
    return torch.cat(ys, 1), state


CONFIGS = {
    "default": {},
    "chunk-gates": {"chunk_gates": True},
    "linear": {"depth": 1, "residual": False, "layer_norm": False},
    "deep3-silu": {"depth": 3, "activation": "silu", "expansion": 2},
    "no-conv": {"conv": False},
    "no-momentum": {"momentum": False},
    "no-forgetting": {"forgetting": False},
    "shared-gates": {"per_layer_gates": False},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_equals_one_call(name):
    mem = _layer(**CONFIGS[name])
    x = torch.randn(2, 19, 24, dtype=torch.float64)
    y, state = mem(x)
    for cuts in ([5], [3, 4, 11, 17], list(range(1, 19))):
        y2, state2 = _stream(mem, x, cuts)
        assert rel_err(y2, y) <= 1e-9, cuts
        assert state2.memory.offset == state.memory.offset
        for a, b in zip(state2.memory.params, state.memory.params):
            assert rel_err(a, b) <= 1e-9


@pytest.mark.parametrize("name", ["default", "chunk-gates"])
def test_causal(name):
    mem = _layer(**CONFIGS[name])
    x = torch.randn(1, 14, 24, dtype=torch.float64)
    y, _ = mem(x)
    for t in (0, 3, 4, 9):
        x2 = x.clone()
        x2[:, t] += 1.0
        y2, _ = mem(x2)
        assert torch.equal(y2[:, :t], y[:, :t]), t
        assert not torch.equal(y2[:, t], y[:, t]), t


@pytest.mark.parametrize("save", [False, True])
def test_naive_and_chunk_layers_agree_with_gradients(save):
    """``chunk`` (recomputing each piece in the backward, or keeping its intermediates) against ``naive``."""
    torch.manual_seed(0)
    mem = _layer()
    mem.save_intermediates = save
    x = torch.randn(2, 11, 24, dtype=torch.float64, requires_grad=True)
    y_c, _ = mem(x)
    g_c = torch.autograd.grad(y_c.square().sum(), [x, *mem.parameters()])
    mem.impl = "naive"
    y_n, _ = mem(x)
    g_n = torch.autograd.grad(y_n.square().sum(), [x, *mem.parameters()])
    assert rel_err(y_c, y_n) <= 1e-9
    for a, b in zip(g_c, g_n):
        assert rel_err(a, b) <= 1e-9


def test_float32_forward_backward_finite_and_learns_w0():
    mem = NeuralMemory(d_model=32, n_heads=4, chunk_size=8)
    x = torch.randn(2, 40, 32)
    y, state = mem(x)
    assert y.shape == (2, 40, 32) and torch.isfinite(y).all()
    y.square().mean().backward()
    for n, p in mem.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert mem.init_params[0].grad.abs().sum() > 0


def test_state_size_is_constant():
    mem = _layer()
    _, s1 = mem(torch.randn(1, 8, 24, dtype=torch.float64))
    _, s2 = mem(torch.randn(1, 80, 24, dtype=torch.float64))
    size = lambda s: sum(t.numel() for t in (*s.memory.params, *s.memory.momentum, *s.memory.chunk_params, s.conv))  # noqa: E731
    assert size(s1) == size(s2)


@pytest.mark.parametrize("kw,match", [({"n_heads": 5}, "divisible"), ({"depth": 0}, "depth"),
                                      ({"activation": "tanh"}, "activation"), ({"chunk_size": 0}, "chunk_size")])
def test_bad_config_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        NeuralMemory(**{"d_model": 24, "n_heads": 2, **kw})


def test_alpha_init_sets_the_initial_forget_gate_and_is_validated():
    from titans.models import MemoryConfig

    layer = NeuralMemory(32, 2, alpha_init=1e-3)
    g = layer.n_heads * layer.n_gates
    assert torch.allclose(torch.sigmoid(layer.gates.bias[2 * g:]), torch.full((g,), 1e-3))
    with pytest.raises(ValueError, match="alpha_init"):
        NeuralMemory(32, 2, alpha_init=1.0)
    with pytest.raises(ValueError, match="memory.alpha_init"):
        MemoryConfig(alpha_init=0.0)


def test_save_intermediates_is_validated():
    from titans.models import MemoryConfig

    with pytest.raises(TypeError, match="save_intermediates"):
        NeuralMemory(32, 2, save_intermediates=1)
    with pytest.raises(ValueError, match="memory.save_intermediates"):
        MemoryConfig(save_intermediates="yes")
