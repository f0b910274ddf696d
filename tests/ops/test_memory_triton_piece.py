"""``KernelConfig.piece`` (``triton_piece.py``): ``chunk``'s loop over chunks with each piece's forward in four
launches over every (batch row, head) and hidden tile, in Triton's interpreter on CPU: the piece against
``piece.piece_forward`` in float64, and whole calls of ``impl="triton"`` against ``impl="chunk"`` (outputs, final
state and every gradient; fp32, relative RMS error <= 1e-5)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ..conftest import rel_err
from .memory_cases import make_inputs, piece_inputs
from .triton_cases import TOL, compare, run

triton = pytest.importorskip("triton")


@pytest.mark.parametrize("n,D,DH,tile,act,nr,resume,vsplit", [
    (12, 16, 64, 16, "gelu", True, False, 1),   # a partial piece (12 of 16 rows), four tiles
    (16, 16, 64, 32, "silu", False, True, 1),   # no norm or residual, gradients at other weights (a resumed chunk)
    (32, 32, 64, 64, "relu", True, True, 1),    # one tile; 32 rows
    (12, 32, 64, 16, "gelu", True, True, 1),    # q, k and delta_L in two slices of the tile's width
    (12, 32, 64, 16, "gelu", True, True, 2),    # the per-head passes in two blocks of columns (KernelConfig.vsplit)
    (16, 32, 64, 32, "silu", False, False, 2),  # ... without norm or residual
])
def test_a_piece_matches_the_pytorch_piece(n, D, DH, tile, act, nr, resume, vsplit):
    from titans.ops.memory.piece import piece_forward
    from titans.ops.memory.triton_config import KernelConfig
    from titans.ops.memory.triton_piece import piece_forward_triton

    q, k, v, coef, G, W, S, norm = piece_inputs(2, 3, n, D, DH, resume)
    norm = norm if nr else None
    ref = piece_forward(q, k, v, coef, G, W, S, norm, act, nr)
    f = [t.float() for t in (q, k, v)]
    o, Wn, Sn = piece_forward_triton(*f, tuple(c.float() for c in coef), [x.float() for x in G],
                                     [x.float() for x in W], [x.float() for x in S],
                                     None if norm is None else tuple(x.float() for x in norm), act, nr,
                                     cfg=KernelConfig(tile, 4, 1, piece=True, vsplit=vsplit))
    assert o.dtype == torch.float32 and o.shape == ref[0].shape
    assert rel_err(o, ref[0]) <= TOL
    for got, want in zip([*Wn, *Sn], [*ref[1], *ref[2]]):
        assert rel_err(got, want) <= TOL


@pytest.mark.parametrize("nr,D,vsplit", [(True, 16, 1), (False, 16, 1), (True, 32, 2)])
def test_the_recomputation_keeps_what_the_pytorch_piece_keeps(nr, D, vsplit):
    """``keep=True`` (``piece_backward``'s recomputation): every intermediate ``piece_forward(keep=True)`` returns,
    and the output, on a partial piece with gradients at other weights."""
    from titans.ops.memory.piece import piece_forward
    from titans.ops.memory.triton_config import KernelConfig
    from titans.ops.memory.triton_piece import piece_forward_triton

    q, k, v, coef, G, W, S, norm = piece_inputs(2, 3, 12, D, 64, True, seed=2)
    norm = norm if nr else None
    o_ref, ref = piece_forward(q, k, v, coef, G, W, S, norm, "gelu", nr, keep=True)
    o, got = piece_forward_triton(q.float(), k.float(), v.float(), tuple(c.float() for c in coef),
                                  [x.float() for x in G], [x.float() for x in W], [x.float() for x in S],
                                  None if norm is None else tuple(x.float() for x in norm), "gelu", nr, True,
                                  cfg=KernelConfig(16, 4, 1, piece=True, vsplit=vsplit))
    assert rel_err(o, o_ref) <= TOL
    assert set(got) == set(ref)
    for name, want in ref.items():
        have = got[name]
        for x, y in zip(have, want) if isinstance(want, list) else [(have, want)]:
            assert (x is None) == (y is None), name
            if y is not None:
                assert x.shape == y.shape and rel_err(x, y) <= TOL, name


def test_keeping_the_intermediates_with_the_state():
    """``keep=True, state=True`` (``KernelConfig.save``): the output and new state of a plain call and the
    intermediates of a recomputing one, from one call, against the PyTorch piece in float64."""
    from titans.ops.memory.piece import piece_forward
    from titans.ops.memory.triton_config import KernelConfig
    from titans.ops.memory.triton_piece import piece_forward_triton

    q, k, v, coef, G, W, S, norm = piece_inputs(2, 3, 12, 32, 64, True, seed=3)
    o_ref, W_ref, S_ref, ref = piece_forward(q, k, v, coef, G, W, S, norm, "gelu", True, keep=True, state=True)
    o_plain, W_plain, S_plain = piece_forward(q, k, v, coef, G, W, S, norm, "gelu", True)
    assert torch.equal(o_ref, o_plain) and all(torch.equal(a, b) for a, b in zip([*W_ref, *S_ref],
                                                                                  [*W_plain, *S_plain]))
    f = lambda xs: [x.float() for x in xs]  # noqa: E731
    o, Wn, Sn, got = piece_forward_triton(*f((q, k, v)), tuple(f(coef)), f(G), f(W), f(S), tuple(f(norm)), "gelu",
                                          True, True, cfg=KernelConfig(16, 4, 1, piece=True, save=True), state=True)
    assert rel_err(o, o_ref) <= TOL
    for x, y in zip([*Wn, *Sn], [*W_ref, *S_ref]):
        assert rel_err(x, y) <= TOL
    assert set(got) == set(ref)
    for name, want in ref.items():
        for x, y in zip(got[name], want) if isinstance(want, list) else [(got[name], want)]:
            assert (x is None) == (y is None), name
            if y is not None:
                assert rel_err(x, y) <= TOL, name


def test_expanded_weights_are_read_in_place():
    """Weights shared over the batch (an expanded, stride-0 batch) give what their copies give."""
    from titans.ops.memory.triton_config import KernelConfig
    from titans.ops.memory.triton_piece import piece_forward_triton

    q, k, v, coef, G, W, S, norm = piece_inputs(2, 2, 16, 16, 32, False, seed=1)
    f32 = [[x[:1].float().expand(2, *x.shape[1:]) for x in ws] for ws in (W, S)]
    args = (q.float(), k.float(), v.float(), tuple(c.float() for c in coef))
    cfg = KernelConfig(16, 4, 1, piece=True)
    a = piece_forward_triton(*args, f32[0], f32[0], f32[1], None, "gelu", True, cfg=cfg)
    b = piece_forward_triton(*args, [x.contiguous() for x in f32[0]], [x.contiguous() for x in f32[0]],
                             [x.contiguous() for x in f32[1]], None, "gelu", True, cfg=cfg)
    for x, y in zip([a[0], *a[1], *a[2]], [b[0], *b[1], *b[2]]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("chunk,T,cut,nr,act,D,hidden,tile", [
    (16, 35, 19, True, "gelu", 16, 64, 16),    # four tiles, mid-chunk resume
    (16, 37, 21, False, "silu", 16, 64, 32),   # two tiles, no norm or residual
    (8, 29, 3, True, "relu", 16, 32, 16),      # 8-row chunks padded to 16 rows
    (64, 100, 70, True, "gelu", 32, 64, 32),   # 64-row chunks: a resume 6 rows in, a last piece of 30
])
def test_calls_in_pieces_match_chunk(monkeypatch, chunk, T, cut, nr, act, D, hidden, tile):
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op
    import titans.ops.memory.triton_piece as tp

    base = tc.config_for
    pieces = lambda *key: dataclasses.replace(base(*key), tile=tile, piece=True) if not key[0] else base(*key)  # noqa
    for module in (op, tp):
        monkeypatch.setattr(module, "config_for", pieces)
    monkeypatch.setattr(tc, "LAUNCHED", {})
    inp, leaves = make_inputs(B=2, T=T, H=2, D=D, L=2, hidden=hidden, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, chunk, act, cut)
    # the four kernels ran, at the configured tile (or at the hidden width where that is narrower)
    ran = {slot[2]: v["tile"] for slot, v in tc.LAUNCHED.items() if len(slot) == 3}
    assert ran == dict.fromkeys(("keys", "errors", "tiles", "output"), min(tile, hidden))


@pytest.mark.parametrize("D,vsplit", [(16, 1), (32, 2)])
def test_calls_in_pieces_that_keep_their_intermediates_match_chunk(monkeypatch, D, vsplit):
    """``KernelConfig.save``: whole calls (a mid-chunk resume, a last partial piece) against ``chunk``, gradients
    included, with the forward keeping what the backward would recompute (no recomputing launch runs); also with
    the per-head passes in blocks of columns (``vsplit``)."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op
    import titans.ops.memory.triton_piece as tp

    cfg = tc.KernelConfig(16, 4, 1, piece=True, save=True, vsplit=vsplit)
    monkeypatch.setattr(op, "config_for", lambda *key: cfg if not key[0] else tc.config_for(*key))
    calls = []
    real = tp.piece_forward_triton
    monkeypatch.setattr(tp, "piece_forward_triton", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    monkeypatch.setattr(tc, "LAUNCHED", {})
    inp, leaves = make_inputs(B=2, T=35, H=2, D=D, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, 16, "gelu", 19)
    assert calls and all(kw.get("keep") and kw.get("state") for kw in calls)
    parts = {slot[2] for slot in tc.LAUNCHED if len(slot) == 3}
    assert ({"zk", "norm"} <= parts) == (vsplit > 1)


def test_the_configuration_text_names_the_pieces():
    from titans.ops.memory.triton_config import KernelConfig

    cfg = KernelConfig.parse("32,8,1,tf32x3,maxreg,piece")
    assert cfg == KernelConfig(32, 8, 1, "tf32x3", maxreg=True, piece=True) and str(cfg) == "32,8,1,tf32x3,maxreg,piece"
    cfg = KernelConfig.parse("32,4,1,tf32x3,maxreg,piece,save")
    assert cfg.save and str(cfg) == "32,4,1,tf32x3,maxreg,piece,save"
    with pytest.raises(ValueError, match="save=True needs piece=True"):
        KernelConfig.parse("32,4,1,tf32x3,save")
    cfg = KernelConfig.parse("32,4,1,tf32x3,maxreg,piece,save,wgrad-tf32x3")
    assert cfg.wgrad and cfg.wgrad_precision == "tf32x3" and str(cfg) == "32,4,1,tf32x3,maxreg,piece,save,wgrad-tf32x3"
    with pytest.raises(ValueError, match="kernel config"):
        KernelConfig.parse("32,4,1,tf32x3,piece,wgrad,wgrad-tf32x3")
    cfg = KernelConfig.parse("32,4,1,tf32x3,maxreg,piece,v4")
    assert cfg.vsplit == 4 and str(cfg) == "32,4,1,tf32x3,maxreg,piece,v4"
    with pytest.raises(ValueError, match="vsplit=4 needs piece=True"):
        KernelConfig.parse("32,4,1,tf32x3,v4")
    with pytest.raises(ValueError, match="kernel config"):
        KernelConfig.parse("32,4,1,tf32x3,piece,v2,v4")


def test_pieces_that_do_not_fit_fall_back_to_chunk(monkeypatch, caplog):
    """Triton's OutOfResources from a piece kernel at the smallest tile: the chunk form runs instead, with a
    warning, and the results are chunk's."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op
    import titans.ops.memory.triton_piece as tp

    from .triton_cases import run

    base = tc.config_for
    monkeypatch.setattr(op, "config_for", lambda *key: dataclasses.replace(base(*key), piece=True))

    def refuse(*args, **kwargs):
        raise op.OutOfResources(274432, 232448, "shared memory")

    monkeypatch.setattr(tp, "launch", refuse)
    monkeypatch.setattr(op, "_WARNED", set())
    inp, _ = make_inputs(B=1, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32)
    with caplog.at_level("WARNING"):
        o_t, s_t = run("triton", inp, 16)
    o_c, s_c = run("chunk", inp, 16)
    assert "piece kernels do not fit" in caplog.text
    assert torch.equal(o_t, o_c) and all(torch.equal(a, b) for a, b in zip(s_t.params, s_c.params))


def test_the_default_runs_in_pieces_from_enough_pairs(monkeypatch):
    """``triton_config.PIECE_FROM``: a forward shape runs in pieces under its configuration where a call has at least
    the table's (batch row, head) pairs, else one program per head; an override (a tuning candidate, a file of tuned
    configurations) decides alone. Whole calls either way match ``chunk``."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op

    key = (2, 16, 16, 64, 16)
    monkeypatch.setattr(tc, "PIECE_FROM", {key: ("16,4,1,ieee,piece", 4)})
    monkeypatch.setattr(tc, "OVERRIDES", {})
    monkeypatch.setattr(op, "OVERRIDES", tc.OVERRIDES)
    W, v = torch.zeros(1, 1, 16, 64), torch.zeros(1, 1, 1, 16)
    assert op._piece_config([W, W.mT], v, 16, 3) is None
    assert op._piece_config([W, W.mT], v, 16, 4) == tc.KernelConfig(16, 4, 1, piece=True)
    assert op._piece_config([W, W.mT], v, 32, 4) is None  # another shape
    tc.OVERRIDES[(False, *key)] = tc.KernelConfig(16, 4, 1)
    assert op._piece_config([W, W.mT], v, 16, 4) is None
    tc.OVERRIDES[(False, *key)] = tc.KernelConfig(16, 8, 1, piece=True)
    assert op._piece_config([W, W.mT], v, 16, 1) == tc.KernelConfig(16, 8, 1, piece=True)
    tc.OVERRIDES.clear()
    for H, pieces in ((2, True), (1, False)):  # batch 2: 4 pairs, then 2
        monkeypatch.setattr(tc, "LAUNCHED", {})
        inp, leaves = make_inputs(B=2, T=35, H=H, D=16, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                                  dtype=torch.float32, requires_grad=True)
        compare(inp, leaves, 16, "gelu", 19)
        parts = {slot[2] for slot in tc.LAUNCHED if len(slot) == 3}
        assert parts == ({"keys", "errors", "tiles", "output"} if pieces else set())


def _split_call_lengths(monkeypatch, op):
    """Two calls of 19 and 51 tokens (16-token chunks) compared with ``chunk``, gradients included; returns the
    token counts ``memory_update_chunk`` ran on in ``impl="triton"``'s calls in pieces, and the inputs."""
    calls = []
    real = op.memory_update_chunk
    monkeypatch.setattr(op, "memory_update_chunk", lambda *a, **kw: calls.append(a[0].shape[1]) or real(*a, **kw))
    inp, leaves = make_inputs(B=2, T=70, H=2, D=16, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compare(inp, leaves, 16, "gelu", 19)
    return calls, inp


@pytest.mark.parametrize("save", [False, True])
def test_calls_in_pieces_past_the_save_budget_run_in_segments(monkeypatch, save):
    """Where what the backward keeps of every chunk would pass ``triton_op.save_budget``, a call in pieces runs in
    checkpointed segments of whole chunks (the first finishing the chunk in progress), as the kernels of one program
    per head do; the results and every gradient are still ``chunk``'s, and a call without gradients is one piece of
    work."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op

    cfg = tc.KernelConfig(16, 4, 1, piece=True, save=save)
    monkeypatch.setattr(op, "config_for", lambda *key: cfg if not key[0] else tc.config_for(*key))
    monkeypatch.setattr(op, "SAVE_BUDGET_BYTES", 1)
    calls, inp = _split_call_lengths(monkeypatch, op)
    # 19 tokens (two chunks: one segment), then 51 resuming 3 into a chunk (four chunks: segments of two, 29 tokens
    # finishing the chunk in progress and 22), each segment run again by the backward (the chunk reference is not
    # counted: compare calls it through impl="chunk")
    assert sorted(set(calls)) == [19, 22, 29] and calls.count(29) == 2 and calls.count(22) == 2
    calls.clear()
    with torch.no_grad():
        run("triton", inp, 16)
    assert calls == [70]


def test_calls_in_pieces_past_the_save_budget_keep_the_chunks_that_fit(monkeypatch):
    """Past ``triton_op.save_budget`` the leading chunks run in checkpointed segments and the trailing chunks whose
    states fit the budget beside the segments' starting states run as they are (``triton_op.piece_plan``): no
    extra forward for them, what is kept stays within the budget, and the results and every gradient are still
    ``chunk``'s."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op

    cfg = tc.KernelConfig(16, 4, 1, piece=True)
    monkeypatch.setattr(op, "config_for", lambda *key: cfg if not key[0] else tc.config_for(*key))
    per_chunk = 4 * 2 * (16 * 64 + 64 * 16) * 2 * 2  # float32 weights and momentum of both layers, B * H = 4
    monkeypatch.setattr(op, "SAVE_BUDGET_BYTES", 3 * per_chunk)
    q = torch.empty(2, 1, 2, 16, requires_grad=True)
    W = [torch.empty(2, 2, 16, 64), torch.empty(2, 2, 64, 16)]
    # 51 tokens 3 into a chunk: four chunks, segments of two; the budget holds three chunks' states, two of them the
    # segments' starting states: one chunk (6 tokens) kept as it is
    assert op.piece_plan(cfg, W, q, 16, 51, 3, (q,)) == [(0, 29, True), (29, 45, True), (45, 51, False)]
    assert op.piece_plan(cfg, W, q, 16, 19, 0, (q,)) == [(0, 19, False)]  # two chunks: within the budget
    for n in range(4, 40):  # past the budget: a tail only where its states fit beside the segments' starting states
        plan = op.piece_plan(cfg, W, q, 16, 16 * n, 0, (q,))
        tail = sum(hi - lo for lo, hi, ckpt in plan if not ckpt) // 16
        assert plan[0][2] and (tail == 0 or (tail + sum(ckpt for *_, ckpt in plan)) * per_chunk <= 3 * per_chunk)
        assert [hi - lo for lo, hi, ckpt in plan if ckpt][:-1] == [16 * (math.isqrt(n - 1) + 1)] * (len(plan) - 2 + (
            tail == 0))  # segments of about sqrt(N) chunks, as the kernels of one program per head
    calls, inp = _split_call_lengths(monkeypatch, op)
    # 19 tokens as they are; then segments of 29 and 16 tokens, each run again by the backward, and 6 as they are
    assert sorted(calls) == [6, 16, 16, 19, 29, 29]
