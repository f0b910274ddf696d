"""``KernelConfig.wgrad`` (``triton_piece_bwd.py``): the weight-sized work of a piece's backward in one launch per
layer, in Triton's interpreter on CPU, against ``piece.weight_grads`` in float64, and whole calls of
``impl="triton"`` with it against ``impl="chunk"`` (fp32, relative RMS error <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

from ..conftest import rel_err
from .memory_cases import make_inputs
from .triton_cases import TOL, compare

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("n,DI,DO,tile,expanded,prec", [
    (12, 64, 16, 16, False, "ieee"),    # a partial piece (12 of 16 rows), four blocks of rows, one tile of columns
    (16, 16, 64, 32, True, "ieee"),     # the weights shared over the batch (stride 0), tiles wider than the rows
    (32, 32, 32, 16, False, "ieee"),    # two blocks, two tiles
    (32, 64, 32, 32, False, "tf32x3"),  # tf32x3 products (wgrad-tf32x3)
])
def test_weight_grads_match_the_pytorch_ones(n, DI, DO, tile, expanded, prec):
    from titans.ops.memory.piece import weight_grads
    from titans.ops.memory.triton_config import KernelConfig
    from titans.ops.memory.triton_piece_bwd import weight_grads_triton

    g = torch.Generator().manual_seed(n + DI)
    B, H = 2, 3

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    X, dz = mk(B, H, n, DI), mk(B, H, n, DO)
    beta, gamma = torch.rand(B, H, n, generator=g, dtype=torch.float64), mk(B, H, n)
    W, S = ((mk(1, H, DI, DO).expand(B, H, DI, DO) if expanded else mk(B, H, DI, DO)) for _ in range(2))
    dWp, dSp = mk(B, H, DI, DO), mk(B, H, DI, DO)
    ends = [torch.rand(B, H, generator=g, dtype=torch.float64) for _ in range(3)]
    want = weight_grads(X, dz, beta, gamma, W, S, dWp, dSp, *ends)
    got = weight_grads_triton(*(t.float() for t in (X, dz, beta, gamma, W, S, dWp, dSp, *ends)),
                              shape=(2, 16, DI, DI, DO),
                              cfg=KernelConfig(tile, 4, 1, piece=True, wgrad=True, wgrad_precision=prec))
    names = ("YW", "YS", "dW", "dS", "dbeta_n", "dgamma_n", "dh_n")
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape and a.dtype == torch.float32, name
        assert rel_err(a, b) <= TOL, name


@pytest.mark.parametrize("save", [False, True])
def test_calls_in_pieces_with_the_weight_kernel_match_chunk(monkeypatch, save):
    """Whole calls (a mid-chunk resume, a last partial piece, both layers) with ``KernelConfig.wgrad``, also with
    ``save``, against ``chunk``, gradients included; the kernel ran for both layers."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op

    cfg = tc.KernelConfig(16, 4, 1, piece=True, save=save, wgrad=True)
    monkeypatch.setattr(op, "config_for", lambda *key: cfg if not key[0] else tc.config_for(*key))
    monkeypatch.setattr(tc, "LAUNCHED", {})
    inp, leaves = make_inputs(B=2, T=35, H=2, D=16, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, 16, "gelu", 19)
    parts = {slot[2] for slot in tc.LAUNCHED if len(slot) == 3}
    assert {"wgrad16x64", "wgrad64x16"} <= parts
