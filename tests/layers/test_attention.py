"""Sliding-window attention in blocks of queries (``attend_window``) against the dense masked reference, in float64:
outputs and every gradient, over caches, persistent keys, ragged last blocks and windows of 1 to more than T."""

from __future__ import annotations

import pytest
import torch

from titans.layers.attention import Attention, KVCache, attend, attend_window, attention_mask

from ..conftest import rel_err


def _inputs(B, T, cache, P, H=2, D=4, start=5):
    g = torch.Generator().manual_seed(T * 100 + cache * 10 + P)
    S = P + cache + T
    q = torch.randn(B, T, H, D, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, S, H, D, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, S, H, D, generator=g, dtype=torch.float64, requires_grad=True)
    kpos = torch.arange(start, start + cache + T)
    return q, k, v, kpos[cache:], kpos


@pytest.mark.parametrize("T,window,cache,P", [(40, 8, 0, 0), (41, 8, 7, 3), (37, 5, 2, 0), (30, 1, 0, 2),
                                              (25, 3, 10, 0), (12, 40, 0, 1), (64, 16, 15, 4), (9, 2, 0, 0)])
def test_blocks_match_the_dense_mask(T, window, cache, P):
    q, k, v, qpos, kpos = _inputs(2, T, cache, P)
    ref = attend(q, k, v, attention_mask(qpos, kpos, window), n_persistent=P, impl="naive")
    got = attend_window(q, k, v, qpos, kpos, window, n_persistent=P)
    assert got.shape == ref.shape and rel_err(got, ref) <= 1e-12
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    g_got = torch.autograd.grad((got * w).sum(), (q, k, v))
    for a, b, name in zip(g_got, g_ref, "qkv"):
        assert rel_err(a, b) <= 1e-12, name


def test_keys_older_than_every_window_are_dropped_not_misread():
    """A cache longer than the window (the layer keeps window - 1, a caller may pass more): same result."""
    q, k, v, qpos, kpos = _inputs(1, 20, 30, 0)
    ref = attend(q, k, v, attention_mask(qpos, kpos, 6), impl="naive")
    assert rel_err(attend_window(q, k, v, qpos, kpos, 6), ref) <= 1e-12


def test_layer_streams_the_same_through_either_path():
    """The layer takes the blocks past twice the window; one call, and a stream of pieces (the dense path for short
    pieces, the blocks for long ones, carrying the cache), give the dense reference's outputs."""
    torch.manual_seed(0)
    layer = Attention(16, 2, window=6, n_persistent=2).double()
    ref_layer = Attention(16, 2, window=6, n_persistent=2, impl="naive").double()
    ref_layer.load_state_dict(layer.state_dict())
    x = torch.randn(2, 50, 16, dtype=torch.float64)
    pos = torch.arange(50)
    ref, _ = ref_layer(x, pos)
    one, cache = layer(x, pos)
    assert rel_err(one, ref) <= 1e-12 and cache.k.shape[1] == 5
    outs, cache = [], None
    for a, b in ((0, 3), (3, 30), (30, 31), (31, 50)):
        y, cache = layer(x[:, a:b], pos[a:b], cache)
        outs.append(y)
    assert rel_err(torch.cat(outs, 1), ref) <= 1e-12
    assert isinstance(cache, KVCache) and cache.pos.tolist() == list(range(45, 50))
