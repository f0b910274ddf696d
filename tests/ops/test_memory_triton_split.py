"""The forward split over programs (``triton_split.py``) and what the forward saves for the backward, against
``impl="chunk"`` and the PyTorch piece."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ..conftest import rel_err
from .memory_cases import make_inputs
from .triton_cases import TILED, TOL, compare, run

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("how,L,chunk,T,cut,nr,act,D,hidden",
                         [("config", *TILED[0]), ("config", *TILED[2]), ("few programs", *TILED[1]),
                          ("few programs", 1, 8, 21, 5, True, "silu", 16, 16)])
def test_the_forward_split_over_programs_matches_chunk(monkeypatch, how, L, chunk, T, cut, nr, act, D, hidden):
    """The forward as one launch per chunk with the weights' tiles spread over programs (``triton_split.py``;
    several tiles in the first three cases, one in the last), the backward as before: chosen by
    ``KernelConfig.split``, or because there are fewer (batch row, head) programs than ``SPLIT_BELOW``."""

    import titans.ops.memory.triton_seq as ts

    if how == "config":
        base = ts.config_for

        def split(backward, *key):
            cfg = base(backward, *key)
            return cfg if backward else dataclasses.replace(cfg, split=True)

        monkeypatch.setattr(ts, "config_for", split)
    else:
        key = (False, 2, 16, 128, 512, 128)
        assert ts.split_below(torch.device("cpu"), key) == 0  # by default only on CUDA, at the measured shapes
        monkeypatch.setattr(ts, "SPLIT_BELOW", 3)  # B * H = 2 programs, every shape
        assert ts.split_below(torch.device("cpu"), key) == 3
    inp, leaves = make_inputs(B=1, T=T, H=2, D=D, L=L, hidden=hidden, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, chunk, act, cut)
    with torch.no_grad():
        o_c, s_c = run("chunk", inp, chunk, act)
        o_t, s_t = run("triton", inp, chunk, act)
    assert rel_err(o_t, o_c) <= TOL
    for a, b in zip(s_t.params + s_t.momentum, s_c.params + s_c.momentum):
        assert rel_err(a, b) <= TOL



@pytest.mark.parametrize("split", [False, True])
def test_the_forward_saves_what_the_backward_reads(monkeypatch, split):
    """What the forward keeps for the backward besides the states (``triton_seq.saved_width``), chunk by chunk,
    against the PyTorch piece at the chunk's saved starting weights: the keys through the memory, the output before
    its norm and ``P_1 = x_1 a_1^T``; by the one-program-per-head forward and by the forward split over programs."""
    from titans.ops.memory import triton_op as op
    from titans.ops.memory import triton_seq as ts
    from titans.ops.memory.common import gates_per_layer
    from titans.ops.memory.piece import piece_forward

    if split:
        monkeypatch.setattr(ts, "SPLIT_BELOW", 8)  # B * H = 2 programs
    B, H, T, chunk, L, D = 1, 2, 36, 12, 2, 16  # 12-row chunks, padded to 16 rows in the kernels
    inp, _ = make_inputs(B=B, T=T, H=H, D=D, L=L, hidden=32, norm=True, residual=True, dtype=torch.float32)
    q, k, v = (inp[x].transpose(1, 2) for x in ("q", "k", "v"))
    gates = [gates_per_layer(inp[n], L, n).permute(0, 2, 3, 1) for n in ("alpha", "eta", "theta")]
    N, BN = T // chunk, ts.block_rows(chunk)
    coef = op.chunk_coefficients(gates, N, chunk)
    _, Ws, Ss, acts = ts.seq_forward_triton(q, k, v, ts.pack_coefficients(coef, BN), list(inp["params"]),
                                            list(inp["momentum"]), inp["norm"], "gelu", True, chunk, save=True)
    assert acts.shape == (B * H, N, 2 * BN * D + BN * BN) == (B * H, N, ts.saved_width(L, BN, D, True))
    for c in range(N):
        rows = slice(c * chunk, (c + 1) * chunk)
        W, S = ([x[:, c].reshape(B, H, *x.shape[-2:]) for x in xs] for xs in (Ws, Ss))
        cf = tuple(x[:, :, c].reshape(L, B, H, *x.shape[3:]) for x in coef)
        _, ref = piece_forward(q[:, :, rows], k[:, :, rows], v[:, :, rows], cf, W, W, S, inp["norm"], "gelu", True,
                               keep=True)
        got = acts[:, c].reshape(B, H, -1)
        zk, zq = (got[..., i * BN * D:(i + 1) * BN * D].reshape(B, H, BN, D)[:, :, :chunk] for i in (0, 1))
        P1 = got[..., 2 * BN * D:].reshape(B, H, BN, BN)[:, :, :chunk, :chunk]
        assert rel_err(zk, ref["zs"][-1]) <= TOL, f"keys through the memory, chunk {c}"
        assert rel_err(zq, ref["zetas"][-1]) <= TOL, f"output before the norm, chunk {c}"
        assert rel_err(P1, ref["xs"][1] @ ref["a"][1].mT) <= TOL, f"P_1, chunk {c}"


def test_a_forward_split_for_few_programs_runs_as_measured(monkeypatch):
    """Split because of few programs, the forward takes the configuration run 7 measured (the default's tile, ieee,
    one stage, 8 warps, no register cap), not the unsplit default's other options: 16 warps in passes, say."""
    import titans.ops.memory.triton_seq as ts
    import titans.ops.memory.triton_split as tsp
    from titans.ops.memory.triton_config import KernelConfig

    seen = []
    monkeypatch.setattr(ts, "SPLIT_BELOW", 1 << 30)
    monkeypatch.setattr(ts, "config_for", lambda backward, *key: KernelConfig.parse("32,16,2,tf32x3,maxreg,phased"))
    monkeypatch.setattr(tsp, "split_forward_triton", lambda *args: seen.append(args[7]) or (_ for _ in ()).throw(
        RuntimeError("stop")))
    inp, _ = make_inputs(B=1, T=21, H=2, D=16, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                         dtype=torch.float32)
    with pytest.raises(RuntimeError, match="stop"):
        run("triton", inp, 16)
    assert seen == [KernelConfig(32, 8, 1, "ieee", split=True)]
