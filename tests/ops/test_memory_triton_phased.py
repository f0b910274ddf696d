"""``KernelConfig.phased`` (``triton_phased.py``): the depth-2 forward's tile loop in three passes through a
per-program scratch, against ``impl="chunk"``: outputs, final state and every gradient (the backward reads what this
forward saved), fp32, relative RMS error <= 1e-5, in Triton's interpreter on CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from .memory_cases import make_inputs
from .triton_cases import compare

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("chunk,T,cut,nr,act,D,hidden,tile", [
    (16, 35, 19, True, "gelu", 16, 64, 16),    # four tiles, mid-chunk resume
    (16, 37, 21, False, "silu", 16, 64, 32),   # two tiles, no norm or residual
    (8, 29, 3, True, "relu", 16, 32, 16),      # 8-row chunks padded to 16 rows
    (16, 21, 7, True, "gelu", 128, 128, 32),   # head dim 128 (and tf32x3, below): the second layer's state
                                               # formed transposed
    (32, 45, 37, True, "silu", 16, 64, 16),    # 32-row chunks: (C_0 P_0) delta_0 over the rows 16 at a time
])
def test_the_forward_in_phases_matches_chunk(monkeypatch, chunk, T, cut, nr, act, D, hidden, tile):
    import titans.ops.memory.triton_seq as ts

    base = ts.config_for
    # tf32x3 at head dim 128 (in the interpreter the products are float32 whatever the precision: this takes the
    # kernels' tf32x3-only branches, here the transposed second-layer state)
    prec = "tf32x3" if D >= 128 else "ieee"
    monkeypatch.setattr(ts, "config_for", lambda *key: dataclasses.replace(base(*key), tile=tile, phased=True,
                                                                          precision=prec) if not key[0] else base(*key))
    inp, leaves = make_inputs(B=1, T=T, H=2, D=D, L=2, hidden=hidden, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, chunk, act, cut)


def test_the_phases_change_nothing_at_depth_1(monkeypatch):
    """The flag is a depth-2 forward's: at depth 1 the one-loop forward runs, and no scratch is allocated."""
    import titans.ops.memory.triton_seq as ts

    base = ts.config_for
    monkeypatch.setattr(ts, "config_for", lambda *key: dataclasses.replace(base(*key), phased=True))
    inp, leaves = make_inputs(B=1, T=21, H=2, D=16, L=1, hidden=16, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, 16, "gelu", 7)


def test_the_configuration_text_names_the_phases():
    from titans.ops.memory.triton_config import KernelConfig

    cfg = KernelConfig.parse("32,8,1,tf32x3,maxreg,reload,phased")
    assert cfg == KernelConfig(32, 8, 1, "tf32x3", maxreg=True, reload=True, phased=True)
    assert str(cfg) == "32,8,1,tf32x3,maxreg,reload,phased"
    with pytest.raises(ValueError, match="phased"):
        KernelConfig.parse("32,8,1,ieee,phased,phased")


@pytest.mark.parametrize("chunk,T,cut,nr,act,D,hidden,pre", [
    (16, 35, 19, True, "gelu", 16, 64, ""),          # four tiles, mid-chunk resume
    (8, 29, 3, False, "silu", 16, 32, ""),           # two tiles, no norm or residual, 8-row chunks
    (16, 35, 19, True, "relu", 16, 64, "pre"),       # with pass P (its products read from its scratch)
    (16, 35, 19, True, "gelu", 32, 64, "tf32x3-bwd"),  # triton_config.TENSOR_CORE_BACKWARD: 32-wide tiles
    (16, 21, 7, True, "silu", 128, 128, ""),          # head dim 128, tf32x3 (below): second-layer tiles
    (16, 21, 7, True, "gelu", 128, 128, "pre"),       # formed transposed; with pass P
    (32, 45, 37, True, "gelu", 16, 64, ""),           # 32-row chunks: the CUDA cores' second-layer products over
    (48, 53, 11, False, "silu", 16, 32, "pre"),       # the rows 16 at a time (_rows_tn), 2 and 4 (48 rows padded)
    (32, 40, 9, True, "silu", 32, 64, "pre"),         # ... and head dim 32: df W1^T over it 16 at a time (_cols)
    (32, 70, 35, True, "gelu", 32, 64, "tf32x3-bwd"),  # the same with tf32x3 products (their transposed forms)
])
def test_the_backward_in_passes_matches_chunk(monkeypatch, chunk, T, cut, nr, act, D, hidden, pre):
    """``KernelConfig.phased`` on the backward (``triton_phased_bwd.py``): pass C as five loops through a scratch,
    then q, k and the errors read or formed again: the same gradients (and, through the forward, outputs)."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_seq_bwd as tb

    base = tb.config_for
    wide = dict(tile=32, precision="tf32x3") if D >= 128 else dict(tile=16)  # tf32x3: as in the forward's test
    cfg = lambda *key: dataclasses.replace(base(*key), phased=True, pre=pre == "pre", stages=1, **wide)  # noqa: E731
    if pre == "tf32x3-bwd":
        cfg = lambda *key: tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD + ",phased")  # noqa: E731
    monkeypatch.setattr(tb, "config_for", cfg)
    inp, leaves = make_inputs(B=1, T=T, H=2, D=D, L=2, hidden=hidden, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, chunk, act, cut)
