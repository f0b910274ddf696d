"""``KernelConfig.pre`` (``triton_pre.py``): the backward's products formed ahead of its tile loops, against
``impl="chunk"``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from .memory_cases import make_inputs
from .triton_cases import compare

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("L,chunk,T,cut,D,hidden,prec", [
    (2, 16, 35, 19, 16, 64, "ieee"), (2, 8, 29, 11, 16, 128, "ieee"), (1, 16, 37, 7, 64, 64, "ieee"),
    (1, 8, 21, 5, 16, 16, "ieee"), (2, 16, 35, 19, 32, 64, "tf32x3"), (1, 16, 37, 7, 64, 64, "tf32x3"),
    (2, 16, 35, 19, 32, 64, "tf32x3-bwd")])
def test_the_backward_with_its_pre_pass_matches_chunk(monkeypatch, L, chunk, T, cut, D, hidden, prec):
    """``KernelConfig.pre``: the backward forms the products of its tile loops that need nothing the loops
    accumulate before them, in wide tiles (``triton_pre.py``; several loop tiles per wide tile, and several wide
    tiles, but in the fourth case), and reads them there: the same outputs, state and gradients. With ``tf32x3``
    (``pre-tf32x3``) the products at least 32 wide along their inner dimension take it in 32-wide slices (the
    interpreter's products are float32 whatever the precision: this checks the slicing, not the rounding);
    ``tf32x3-bwd``: ``triton_config.TENSOR_CORE_BACKWARD`` (32-wide tiles, tf32x3 products in the loops too)."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_seq_bwd as tb

    base = tb.config_for
    cfg = lambda *key: dataclasses.replace(base(*key), pre=True, tile=16, pre_precision=prec)  # noqa: E731
    if prec == "tf32x3-bwd":
        cfg = lambda *key: tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD)  # noqa: E731
    monkeypatch.setattr(tb, "config_for", cfg)
    monkeypatch.setattr(tb, "pre_width", lambda BN, DH: min(DH, 32))
    inp, leaves = make_inputs(B=1, T=T, H=2, D=D, L=L, hidden=hidden, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, chunk, "silu", cut)

