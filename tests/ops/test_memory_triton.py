"""``impl="triton"`` (Triton per-piece forward, hand-written backward) against ``impl="chunk"``: outputs, final state
and every gradient, fp32, relative RMS error <= 1e-5. On CPU the kernel runs in Triton's interpreter (set in
``tests/conftest.py``); the ``gpu`` tests repeat it on CUDA at realistic shapes, fp32 and bf16."""

from __future__ import annotations

import logging

import pytest
import torch

from titans.ops import memory_update

from ..conftest import rel_err
from .memory_cases import make_inputs

triton = pytest.importorskip("triton")
TOL = 1e-5  # fp32 (issue 7)


def _run(impl, inp, chunk, act="gelu", state=None, sl=slice(None)):
    x = {k: (v[:, sl] if k in ("q", "k", "v", "alpha", "eta", "theta") else v) for k, v in inp.items()}
    return memory_update(x["q"], x["k"], x["v"], x["alpha"], x["eta"], x["theta"],
                         state if state is not None else x["params"], None if state is not None else x["momentum"],
                         chunk_size=chunk, activation=act, norm=x["norm"], residual=x["residual"], impl=impl)


def _compare(inp, leaves, chunk, act, cut):
    """Two calls (split at ``cut``, mid-chunk when it is not a multiple of ``chunk``); cotangents on both outputs and
    every tensor of the final state."""
    res = {}
    for impl in ("chunk", "triton"):
        o1, s1 = _run(impl, inp, chunk, act, sl=slice(0, cut))
        o2, s2 = _run(impl, inp, chunk, act, state=s1, sl=slice(cut, None))
        g = torch.Generator().manual_seed(1)
        outs = [o1, o2, *s2.params, *s2.momentum, *s2.chunk_params]
        total = sum((x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum() for x in outs)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        res[impl] = ([o1, o2, *s2.params, *s2.momentum, *s2.chunk_params], grads, s2.offset)
    (out_c, g_c, off_c), (out_t, g_t, off_t) = res["chunk"], res["triton"]
    assert off_c == off_t
    for i, (a, b) in enumerate(zip(out_t, out_c)):
        assert rel_err(a, b) <= TOL, f"output/state {i}"
    for i, (a, b) in enumerate(zip(g_t, g_c)):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_err(a, b) <= TOL, f"gradient of leaf {i}"


CASES = [  # (L, chunk, T, cut, norm+residual, per-layer gates, activation, hidden)
    (1, 16, 37, 5, False, False, "silu", 16),
    (1, 16, 40, 16, True, False, "gelu", 16),
    (2, 16, 37, 21, True, True, "gelu", 32),
    (2, 8, 29, 3, True, True, "relu", 16),
    (2, 16, 33, 10, False, True, "silu", 32),
    (2, 4, 13, 6, True, False, "gelu", 16),
]


@pytest.mark.parametrize("L,chunk,T,cut,nr,per_layer,act,hidden", CASES)
def test_triton_matches_chunk(L, chunk, T, cut, nr, per_layer, act, hidden):
    inp, leaves = make_inputs(B=2, T=T, H=2, D=16, L=L, hidden=hidden, per_layer=per_layer, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, chunk, act, cut)


def test_no_grad_forward_matches_chunk():
    inp, _ = make_inputs(B=1, T=20, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32)
    with torch.no_grad():
        o_c, s_c = _run("chunk", inp, 16)
        o_t, s_t = _run("triton", inp, 16)
    assert rel_err(o_t, o_c) <= TOL
    for a, b in zip(s_t.params + s_t.momentum, s_c.params + s_c.momentum):
        assert rel_err(a, b) <= TOL


def test_half_precision_tokens_with_a_float32_memory():
    """bf16 q, k, v with float32 gates, weights and state: the state matches the float32 chunk form run on the same
    (rounded) tokens to fp32 accuracy, the bf16 output to bf16 accuracy, and gradients come back in bf16."""
    inp, _ = make_inputs(B=1, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32)
    low = {k: (v.to(torch.bfloat16).requires_grad_() if k in ("q", "k", "v") else v) for k, v in inp.items()}
    ref = {k: (v.detach().float().requires_grad_() if k in ("q", "k", "v") else v) for k, v in low.items()}
    o_t, s_t = _run("triton", low, 16)
    o_c, s_c = _run("chunk", ref, 16)
    assert o_t.dtype == torch.bfloat16 and s_t.params[0].dtype == torch.float32
    assert rel_err(o_t.float(), o_c) <= 1e-2
    for a, b in zip(s_t.params + s_t.momentum, s_c.params + s_c.momentum):
        assert rel_err(a, b) <= TOL
    g_t = torch.autograd.grad(o_t.float().square().sum() + s_t.params[0].sum(), [low["q"], low["k"], low["v"]])
    g_c = torch.autograd.grad(o_c.square().sum() + s_c.params[0].sum(), [ref["q"], ref["k"], ref["v"]])
    for a, b in zip(g_t, g_c):
        assert a.dtype == torch.bfloat16 and rel_err(a.float(), b) <= 2e-2


@pytest.mark.parametrize("L,D,why", [(3, 16, "depth 3"), (2, 12, "powers of two")])
def test_uncovered_configurations_fall_back_to_chunk_with_a_warning(L, D, why, caplog, monkeypatch):
    import titans.ops.memory as mem

    monkeypatch.setattr(mem, "_WARNED", set())
    inp, _ = make_inputs(B=1, T=10, H=1, D=D, L=L, hidden=16, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="titans"):
        o_t, _ = _run("triton", inp, 4)
    o_c, _ = _run("chunk", inp, 4)
    assert torch.equal(o_t, o_c)
    assert "falls back to 'chunk'" in caplog.text and why in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("L", [1, 2])
def test_triton_on_cuda_realistic(dtype, tol, L):
    inp, _ = make_inputs(B=2, T=1000, H=4, D=64, L=L, hidden=256, norm=True, residual=True, dtype=torch.float32)
    cuda = {k: (tuple(t.cuda() for t in v) if isinstance(v, tuple) else v.cuda() if torch.is_tensor(v) else v)
            for k, v in inp.items()}
    low = {k: (v.to(dtype) if k in ("q", "k", "v") else v) for k, v in cuda.items()}
    ref = {k: (v.to(dtype).float() if k in ("q", "k", "v") else v) for k, v in cuda.items()}
    with torch.no_grad():
        o_t, s_t = _run("triton", low, 16)
        o_c, s_c = _run("chunk", ref, 16)
    assert rel_err(o_t.float(), o_c) <= tol
    for a, b in zip(s_t.params, s_c.params):
        assert rel_err(a, b) <= tol


def test_model_with_the_triton_memory_matches_chunk(caplog, monkeypatch):
    import dataclasses

    import titans.ops.memory as mem
    from titans.models import TitansLM
    from titans.models.presets import tiny

    cfg = tiny("mac")
    tri = dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, impl="triton"))
    torch.manual_seed(0)
    a = TitansLM(cfg)
    b = TitansLM(tri)
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (1, 40))
    monkeypatch.setattr(mem, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="titans"):
        la, lb = a(idx, targets=idx).loss, b(idx, targets=idx).loss
    assert "falls back" not in caplog.text  # the kernel ran
    assert abs(la.item() - lb.item()) <= 1e-5 * abs(la.item())
    ga = torch.autograd.grad(la, list(a.parameters()))
    gb = torch.autograd.grad(lb, list(b.parameters()))
    for x, y in zip(gb, ga):
        assert rel_err(x, y) <= TOL


@pytest.mark.parametrize("L,n,nr,act", [(1, 16, True, "gelu"), (2, 11, True, "silu"), (2, 16, False, "gelu")])
def test_piece_kernels_match_the_pytorch_piece(L, n, nr, act):
    """One piece, both directions, every output of ``piece_forward`` / ``piece_backward`` (coefficient gradients
    included) against the Triton kernels."""
    from titans.ops.memory.chunk import decay_coefficients
    from titans.ops.memory.piece import piece_backward, piece_forward
    from titans.ops.memory.triton_piece import piece_forward_triton
    from titans.ops.memory.triton_piece_bwd import piece_backward_triton

    g = torch.Generator().manual_seed(3)
    B, H, D, Dh = 2, 2, 16, 32
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale  # noqa: E731
    q, k = (torch.nn.functional.normalize(rnd(B, H, n, D), dim=-1) for _ in range(2))
    v = rnd(B, H, n, D)
    dims = [D] + [Dh] * (L - 1) + [D]
    G = [rnd(B, H, dims[i], dims[i + 1], scale=1.5 / dims[i] ** 0.5) for i in range(L)]
    W = [x + rnd(*x.shape, scale=0.01) for x in G]
    S = [rnd(*x.shape, scale=0.01) for x in G]
    gates = [torch.rand(L, B, H, n, generator=g) * s for s in (0.05, 1.0, 0.1)]
    beta, gamma, C, hv, M = decay_coefficients(*gates)
    coef = (beta, gamma, C, beta[..., -1], gamma[..., -1], C[..., -1, :], hv[..., -1], M[..., -1, :])
    norm = (1 + rnd(H, D, scale=0.1), rnd(H, D, scale=0.1)) if nr else None
    ref = piece_forward(q, k, v, coef, G, W, S, norm, act, nr)
    out = piece_forward_triton(q, k, v, coef, G, W, S, norm, act, nr)
    for a, b in zip([out[0], *out[1], *out[2]], [ref[0], *ref[1], *ref[2]]):
        assert rel_err(a, b) <= TOL
    do, dWp, dSp = rnd(B, H, n, D), [rnd(*x.shape) for x in W], [rnd(*x.shape) for x in S]
    ref = piece_backward(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, nr)
    out = piece_backward_triton(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, nr)
    flat = lambda r: [*r[:3], *r[3], *r[4], *r[5], *r[6], *(x for x in r[7] if x is not None)]  # noqa: E731
    for i, (a, b) in enumerate(zip(flat(out), flat(ref))):
        assert rel_err(a, b) <= TOL, i
