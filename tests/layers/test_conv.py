"""The causal depthwise convolution: its short-call path (taps summed directly) equals the convolution."""

from __future__ import annotations

import pytest
import torch

from titans.layers import conv as conv_module
from titans.layers.conv import CausalDepthwiseConv1d

from ..conftest import rel_err


@pytest.mark.parametrize("T", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("cached", [False, True])
def test_short_calls_match_the_convolution(monkeypatch, T, cached):
    torch.manual_seed(0)
    c = CausalDepthwiseConv1d(6, 4).double()
    with torch.no_grad():
        c.bias.normal_()
    x = torch.randn(2, T, 6, dtype=torch.float64, requires_grad=True)
    cache = torch.randn(2, 3, 6, dtype=torch.float64) if cached else None
    results = []
    for short in (T, 0):  # the taps, then the convolution
        monkeypatch.setattr(conv_module, "SHORT", short)
        y, new_cache = c(x, cache)
        gy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        grads = torch.autograd.grad((y * gy).sum(), (x, c.weight, c.bias))
        results.append((y, new_cache, grads))
    (y1, c1, g1), (y2, c2, g2) = results
    assert rel_err(y1, y2) <= 1e-12
    assert torch.equal(c1, c2)
    for a, b in zip(g1, g2):
        assert rel_err(a, b) <= 1e-12


def test_streaming_token_by_token_matches_one_call():
    torch.manual_seed(0)
    c = CausalDepthwiseConv1d(5, 3).double()
    x = torch.randn(1, 20, 5, dtype=torch.float64)
    full, _ = c(x)
    cache, outs = None, []
    for t in range(20):
        y, cache = c(x[:, t:t + 1], cache)
        outs.append(y)
    assert rel_err(torch.cat(outs, 1), full) <= 1e-12
