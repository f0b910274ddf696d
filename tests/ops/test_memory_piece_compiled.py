"""``KernelConfig.compiled`` (``piece_compiled.py``): a piece's backward compiled by ``torch.compile`` against the
eager ``piece.piece_backward`` in float64 (every gradient), and whole calls in pieces of ``impl="triton"`` with it
(the piece kernels in Triton's interpreter, the compiled backward on the CPU) against ``impl="chunk"`` (fp32,
relative RMS error <= 1e-5). Each compile takes tens of seconds on two cores, so the cases are few."""

from __future__ import annotations

import pytest
import torch

from .memory_cases import make_inputs, piece_inputs
from .triton_cases import compare


def _flat(x):
    return [t for t in torch.utils._pytree.tree_leaves(x) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("saved", [True, False])
def test_the_compiled_backward_matches_the_eager_one(saved):
    from titans.ops.memory.piece import piece_backward, piece_forward
    from titans.ops.memory.piece_compiled import piece_backward_compiled

    q, k, v, coef, G, W, S, norm = piece_inputs(2, 2, 12, 16, 32, resume=True)
    g = torch.Generator().manual_seed(3)
    do = torch.randn(q.shape, generator=g, dtype=q.dtype)
    dWp = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in W]
    dSp = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in W]
    args = (do, dWp, dSp, q, k, v, coef, G, W, S, norm, "gelu", True)
    extra = {}
    if saved:
        extra["saved"] = piece_forward(q, k, v, coef, G, W, S, norm, "gelu", True, keep=True)[1]
    ref = _flat(piece_backward(*args, **extra))
    out = _flat(piece_backward_compiled(*args, **extra))
    assert len(out) == len(ref) == 19  # dq, dk, dv, 8 coefficients, dG, dW, dS (2 each), LayerNorm
    for i, (a, b) in enumerate(zip(out, ref)):
        assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape, i
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), f"gradient {i}: {(a - b).abs().max():.3g}"
    with pytest.raises(ValueError, match="wgrad must be None"):
        piece_backward_compiled(*args, wgrad=lambda *a: None)


@pytest.mark.parametrize("save,segments", [(False, False), (True, False), (True, True)])
def test_calls_in_pieces_with_a_compiled_backward_match_chunk(monkeypatch, save, segments):
    """Two calls split mid-chunk (a resume, a last partial piece), gradients included: the piece forward in the
    interpreter, each piece's backward compiled (recomputing with the piece kernels, or from what ``save`` kept), also
    inside checkpointed segments (past ``triton_op.save_budget``: the compiled backward then runs in the backward of
    a recomputed segment)."""
    pytest.importorskip("triton")
    import titans.ops.memory.piece_compiled as pc
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_op as op

    cfg = tc.KernelConfig(16, 4, 1, piece=True, save=save, compiled=True)
    monkeypatch.setattr(op, "config_for", lambda *key: cfg if not key[0] else tc.config_for(*key))
    if segments:
        monkeypatch.setattr(op, "SAVE_BUDGET_BYTES", 1)
    calls = []
    real = pc.piece_backward_compiled
    monkeypatch.setattr(pc, "piece_backward_compiled", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    inp, leaves = make_inputs(B=2, T=35, H=2, D=16, L=2, hidden=32, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    compiles = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compare(inp, leaves, 16, "gelu", 19)
    assert calls and all(("saved" in kw) == save for kw in calls)
    # pieces of 16 and 3, then a resume of 13 and a last 3: at most one compile with
    # the gradients at the starting weights and one at others (the resume), whatever the shapes and views
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - compiles <= 2


def test_the_configuration_text_names_the_compiled_backward():
    from titans.ops.memory.triton_config import KernelConfig

    cfg = KernelConfig.parse("32,4,1,tf32x3,maxreg,piece,save,compiled")
    assert cfg.compiled and cfg.save and str(cfg) == "32,4,1,tf32x3,maxreg,piece,save,compiled"
    with pytest.raises(ValueError, match="compiled=True needs piece=True"):
        KernelConfig.parse("32,4,1,tf32x3,compiled")
    with pytest.raises(ValueError, match="compiled=True excludes wgrad=True"):
        KernelConfig.parse("32,4,1,tf32x3,piece,wgrad,compiled")


def test_a_backward_that_does_not_compile_runs_eagerly(monkeypatch, caplog):
    """Where ``torch.compile`` fails (here: tracing refused), the eager backward runs, with one warning naming why,
    and no further compile is tried in the process."""
    import titans.ops.memory.piece_compiled as pc
    from titans.ops.memory.piece import piece_backward

    tries = []

    def refuse(*args):
        tries.append(1)
        raise torch._dynamo.exc.Unsupported("refused for the test")

    monkeypatch.setattr(pc, "_compiled", lambda: refuse)
    monkeypatch.setattr(pc, "FAILED", [])
    q, k, v, coef, G, W, S, norm = piece_inputs(1, 2, 8, 16, 32, resume=False)
    args = (torch.ones_like(q), [torch.ones_like(w) for w in W], [torch.zeros_like(w) for w in W], q, k, v, coef, G,
            W, S, norm, "silu", False)
    ref = _flat(piece_backward(*args))
    with caplog.at_level("WARNING", logger="titans"):
        for _ in range(2):
            out = _flat(pc.piece_backward_compiled(*args))
            assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert len(tries) == 1 and pc.FAILED and "refused for the test" in pc.FAILED[0]
    assert sum("torch.compile failed" in r.message for r in caplog.records) == 1
