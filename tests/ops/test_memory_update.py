"""The memory op: chunk == naive (outputs, final state, every gradient), the paper's recurrence, causality,
split-anywhere continuation, gradcheck, and the errors on bad input."""

from __future__ import annotations

import pytest
import torch

from titans.ops import MemoryState, memory_update
from titans.ops.memory.common import memory_forward

from ..conftest import rel_err
from .memory_cases import make_inputs

TOL = 1e-9  # SPEC §1.3, float64


def _run(impl, inp, chunk_size, activation="gelu"):
    return memory_update(inp["q"], inp["k"], inp["v"], inp["alpha"], inp["eta"], inp["theta"], inp["params"],
                         inp["momentum"], chunk_size=chunk_size, activation=activation, norm=inp["norm"],
                         residual=inp["residual"], impl=impl)


def _backward(o, state, leaves, seed=1):
    """Random cotangents on the output and every tensor of the final state; returns the leaves' gradients."""
    g = torch.Generator().manual_seed(seed)
    outs = [o, *state.params, *state.momentum, *state.chunk_params]
    total = sum((x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum() for x in outs)
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    return [torch.zeros_like(x) if gr is None else gr for gr, x in zip(grads, leaves)]


CASES = [
    # (L, chunk, T, norm+residual, per-layer gates, activation)
    (1, 1, 9, False, False, "gelu"),
    (1, 4, 16, False, True, "gelu"),
    (1, 5, 23, True, False, "gelu"),
    (1, 16, 37, False, False, "silu"),
    (2, 1, 11, False, True, "gelu"),
    (2, 1, 11, True, True, "gelu"),
    (2, 2, 15, True, False, "gelu"),
    (2, 5, 23, False, True, "gelu"),
    (2, 5, 25, True, True, "gelu"),
    (2, 16, 37, True, True, "gelu"),
    (2, 16, 32, False, False, "relu"),
    (2, 16, 7, True, True, "silu"),
    (3, 1, 9, True, True, "gelu"),
    (3, 2, 14, False, False, "gelu"),
    (3, 5, 23, True, True, "silu"),
    (3, 16, 37, True, False, "gelu"),
    (3, 16, 48, False, True, "gelu"),
]


@pytest.mark.parametrize("L,chunk,T,nr,per_layer,act", CASES,
                         ids=[f"L{c[0]}-b{c[1]}-T{c[2]}-{'ln' if c[3] else 'plain'}-{'pl' if c[4] else 'ph'}-{c[5]}"
                              for c in CASES])
def test_chunk_matches_naive(L, chunk, T, nr, per_layer, act):
    inp, leaves = make_inputs(T=T, L=L, norm=nr, residual=nr, per_layer=per_layer, requires_grad=True)
    o_n, s_n = _run("naive", inp, chunk, act)
    o_c, s_c = _run("chunk", inp, chunk, act)
    assert s_c.offset == s_n.offset == T % chunk
    assert rel_err(o_c, o_n) <= TOL
    for name in ("params", "momentum", "chunk_params"):
        for x, y in zip(getattr(s_c, name), getattr(s_n, name)):
            assert rel_err(x, y) <= TOL, name
    g_n = _backward(o_n, s_n, leaves)
    g_c = _backward(o_c, s_c, leaves)
    names = ["q", "k", "v", "alpha", "eta", "theta"] + [f"W{i}" for i in range(L)] + [f"S{i}" for i in range(L)]
    names += ["ln_w", "ln_b"] if nr else []
    for name, x, y in zip(names, g_c, g_n):
        assert rel_err(x, y) <= TOL, name


def test_chunk_size_one_is_the_paper_recurrence():
    """chunk_size=1 equals Eqs. 13-15 written out here for a 2-layer GELU MLP, one (batch, head) at a time."""
    inp, _ = make_inputs(B=1, T=10, H=2, L=2, per_layer=False)
    o, state = _run("chunk", inp, 1)
    for h in range(2):
        W1, W2 = (p[0, h].clone() for p in inp["params"])
        S1, S2 = (m[0, h].clone() for m in inp["momentum"])
        for t in range(10):
            k, v, q = (inp[x][0, t, h] for x in ("k", "v", "q"))
            a, e, th = (inp[x][0, t, h] for x in ("alpha", "eta", "theta"))
            W1_, W2_ = W1.clone().requires_grad_(), W2.clone().requires_grad_()
            loss = ((torch.nn.functional.gelu(k @ W1_) @ W2_ - v) ** 2).sum()
            u1, u2 = torch.autograd.grad(loss, (W1_, W2_))
            S1, S2 = e * S1 - th * u1, e * S2 - th * u2
            W1, W2 = (1 - a) * W1 + S1, (1 - a) * W2 + S2
            assert rel_err(o[0, t, h], torch.nn.functional.gelu(q @ W1) @ W2) <= TOL
        assert rel_err(state.params[0][0, h], W1) <= TOL and rel_err(state.params[1][0, h], W2) <= TOL


def test_linear_memory_without_momentum_or_forgetting_is_the_delta_rule():
    """L=1, eta=0, alpha=0: W_t = W_{t-1} - 2 theta_t k_t^T (k_t W_{t-1} - v_t) (the delta rule, beta = 2 theta)."""
    inp, _ = make_inputs(B=2, T=12, H=3, L=1, momentum=False, per_layer=False)
    inp["alpha"] = torch.zeros_like(inp["alpha"])
    inp["eta"] = torch.zeros_like(inp["eta"])
    for impl in ("naive", "chunk"):
        o, state = _run(impl, inp, 1)
        W = inp["params"][0].clone()  # [B, H, D, D]
        for t in range(12):
            k, v, q = (inp[x][:, t, :, None, :] for x in ("k", "v", "q"))  # [B, H, 1, D]
            beta = 2 * inp["theta"][:, t, :, None, None]
            W = W - beta * k.mT @ (k @ W - v)
            assert rel_err(o[:, t], (q @ W)[:, :, 0]) <= TOL
        assert rel_err(state.params[0], W) <= TOL


@pytest.mark.parametrize("impl", ["naive", "chunk"])
def test_causal(impl):
    inp, _ = make_inputs(T=20, L=2, norm=True, residual=True)
    o, _ = _run(impl, inp, 5)
    for t in (0, 4, 5, 13, 19):
        for name in ("q", "k", "v", "alpha", "eta", "theta"):
            pert = dict(inp)
            x = inp[name].clone()
            x[:, t] = x[:, t] * 0.5 + 0.01
            pert[name] = x
            o2, _ = _run(impl, pert, 5)
            assert torch.equal(o2[:, :t], o[:, :t]), (name, t)
            if name in ("k", "v", "alpha", "eta", "theta", "q") and t < 19:
                assert not torch.equal(o2[:, t:], o[:, t:]), (name, t)


def _split_run(impl, inp, cuts, chunk):
    """Run the sequence in pieces at ``cuts``, carrying the state."""
    bounds = [0, *cuts, inp["q"].shape[1]]
    state, outs = inp["params"], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        sl = {k: (v[:, a:b] if k in ("q", "k", "v", "alpha", "eta", "theta") else v) for k, v in inp.items()}
        o, state = memory_update(sl["q"], sl["k"], sl["v"], sl["alpha"], sl["eta"], sl["theta"], state,
                                 inp["momentum"] if i == 0 else None, chunk_size=chunk, norm=inp["norm"],
                                 residual=inp["residual"], impl=impl)
        outs.append(o)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("impl", ["naive", "chunk"])
@pytest.mark.parametrize("cuts", [[3], [5], [7, 8], [1, 2, 12, 13, 14], list(range(1, 22))],
                         ids=["mid", "boundary", "two", "mixed", "token-by-token"])
def test_split_anywhere_same_result(impl, cuts):
    inp, _ = make_inputs(T=22, L=2, norm=True, residual=True)
    o_full, s_full = _run(impl, inp, 5)
    o_split, s_split = _split_run(impl, inp, cuts, 5)
    assert rel_err(o_split, o_full) <= TOL
    assert s_split.offset == s_full.offset
    for name in ("params", "momentum", "chunk_params"):
        for x, y in zip(getattr(s_split, name), getattr(s_full, name)):
            assert rel_err(x, y) <= TOL, name


def test_state_moves_between_impls():
    """A state written by one implementation continues exactly in the other."""
    inp, _ = make_inputs(T=17, L=3)
    o_full, _ = _run("chunk", inp, 4)
    first = {k: (v[:, :6] if torch.is_tensor(v) and v.dim() >= 3 and v.shape[1] == 17 else v) for k, v in inp.items()}
    o1, st = _run("naive", first, 4)
    rest = [inp[x][:, 6:] for x in ("q", "k", "v", "alpha", "eta", "theta")]
    o2, _ = memory_update(*rest, st, chunk_size=4, impl="chunk")
    assert rel_err(torch.cat([o1, o2], 1), o_full) <= TOL


def test_empty_sequence_returns_the_state_unchanged():
    inp, _ = make_inputs(T=0, L=2)
    o, st = _run("chunk", inp, 4)
    assert o.shape == (2, 0, 2, 6) and st.offset == 0
    assert all(torch.equal(a, b) for a, b in zip(st.params, inp["params"]))


@pytest.mark.parametrize("impl", ["naive", "chunk"])
def test_gradcheck(impl):
    inp, leaves = make_inputs(B=1, T=5, H=1, D=3, L=2, hidden=4, norm=True, residual=True, requires_grad=True)

    def f(*xs):
        q, k, v, a, e, th, w1, w2, s1, s2, nw, nb = xs
        o, st = memory_update(q, k, v, a, e, th, (w1, w2), (s1, s2), chunk_size=2, norm=(nw, nb), residual=True,
                              impl=impl)
        return o, *st.params, *st.momentum

    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-6)


def test_retrieve_reads_without_writing():
    inp, _ = make_inputs(T=4, L=2)
    from titans.ops import memory_retrieve

    out = memory_retrieve(inp["q"], inp["params"])
    ref = memory_forward(inp["q"].transpose(1, 2), inp["params"]).transpose(1, 2)
    assert torch.equal(out, ref)


def test_float32_agrees_with_float64():
    inp64, _ = make_inputs(T=40, L=2, norm=True, residual=True)
    inp32 = {k: (v.float() if torch.is_tensor(v) else tuple(x.float() for x in v) if isinstance(v, tuple) else v)
             for k, v in inp64.items()}
    o64, _ = _run("chunk", inp64, 16)
    o32, _ = _run("chunk", inp32, 16)
    assert rel_err(o32, o64) <= 1e-5


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.update(q=d["q"][..., :5]), "q: shape"),
        (lambda d: d.update(v=d["v"].float()), "v: dtype"),
        (lambda d: d.update(alpha=d["alpha"][:, :3]), "alpha"),
        (lambda d: d.update(theta=d["theta"][..., :1].repeat(1, 1, 1, 5)), "theta: last dim"),
        (lambda d: d.update(params=(d["params"][0],)), r"params\[0\]: last layer"),
        (lambda d: d.update(params=(d["params"][0][:, :, :3], d["params"][1])), r"params\[0\]"),
        (lambda d: d.update(chunk=0), "chunk_size"),
        (lambda d: d.update(act="tanh"), "activation"),
        (lambda d: d.update(impl="fast"), "impl"),
        (lambda d: d.update(norm=(torch.ones(3, 6, dtype=torch.float64),) * 2), "norm weight"),
        (lambda d: d.update(save="yes"), "save: expected a bool"),
    ],
    ids=["q-shape", "v-dtype", "alpha-T", "theta-L", "params-depth", "params-din", "chunk", "act", "impl", "norm",
         "save"],
)
def test_bad_input_is_named(change, match):
    inp, _ = make_inputs(T=6, L=2)
    d = dict(inp, chunk=4, act="gelu", impl="chunk", save=False)
    change(d)
    with pytest.raises((ValueError, TypeError), match=match):
        memory_update(d["q"], d["k"], d["v"], d["alpha"], d["eta"], d["theta"], d["params"], d["momentum"],
                      chunk_size=d["chunk"], activation=d["act"], norm=d["norm"], residual=d["residual"],
                      impl=d["impl"], save=d["save"])


def test_continuation_rejects_other_chunk_size_and_momentum():
    inp, _ = make_inputs(T=6, L=2)
    _, st = _run("chunk", inp, 4)
    args = [inp[x] for x in ("q", "k", "v", "alpha", "eta", "theta")]
    with pytest.raises(ValueError, match="chunk_size"):
        memory_update(*args, st, chunk_size=8)
    with pytest.raises(ValueError, match="momentum"):
        memory_update(*args, st, inp["momentum"], chunk_size=4)
    assert isinstance(st, MemoryState)


@pytest.mark.parametrize("L,nr", [(1, False), (2, True), (3, True)])
def test_fused_backward_matches_autograd_of_the_same_forward(L, nr):
    """The hand-written backward of a chunk equals autograd through the same dual-form forward."""
    from titans.ops.memory.chunk import memory_update_chunk

    inp, leaves = make_inputs(T=21, L=L, norm=nr, residual=nr, requires_grad=True)
    args = [inp[x] for x in ("q", "k", "v", "alpha", "eta", "theta", "params", "momentum")]
    grads = []
    for fused in (True, False):
        o, st = memory_update_chunk(*args, chunk_size=8, norm=inp["norm"], residual=nr, fused_backward=fused)
        grads.append(_backward(o, st, leaves))
    for a, b in zip(*grads):
        assert rel_err(a, b) <= TOL


@pytest.mark.parametrize("L,nr", [(1, False), (2, True)])
def test_a_forward_that_keeps_its_intermediates_gives_the_same_gradients(L, nr):
    """``save=True`` (``ChunkPiece`` keeps the forward's intermediates instead of recomputing them): the same outputs,
    state and gradients as the recomputing backward, resuming mid-chunk included."""
    inp, leaves = make_inputs(T=21, L=L, norm=nr, residual=nr, requires_grad=True)
    args = [inp[x] for x in ("q", "k", "v", "alpha", "eta", "theta", "params", "momentum")]
    results = []
    for save in (False, True):
        o1, st = memory_update(*[a[:, :5] if i < 6 else a for i, a in enumerate(args)], chunk_size=8,
                               norm=inp["norm"], residual=nr, save=save)
        o2, st = memory_update(*[a[:, 5:] for a in args[:6]], st, chunk_size=8, norm=inp["norm"], residual=nr,
                               save=save)
        results.append((torch.cat([o1, o2], 1), st.params, _backward(torch.cat([o1, o2], 1), st, leaves)))
    (o_a, w_a, g_a), (o_b, w_b, g_b) = results
    assert torch.equal(o_a, o_b) and all(torch.equal(x, y) for x, y in zip(w_a, w_b))
    for a, b in zip(g_a, g_b):
        assert rel_err(a, b) <= 1e-12


def test_coefficient_groups_do_not_change_results(monkeypatch):
    """Building the decay coefficients a few chunks at a time (bounded memory) changes nothing, gradients included."""
    import titans.ops.memory.chunk as chunk_mod

    inp, leaves = make_inputs(T=30, L=2, norm=True, residual=True, requires_grad=True)
    o_n, s_n = _run("naive", inp, 4)
    monkeypatch.setattr(chunk_mod, "COEF_GROUP_TOKENS", 8)
    o_c, s_c = _run("chunk", inp, 4)
    assert rel_err(o_c, o_n) <= TOL
    for a, b in zip(_backward(o_c, s_c, leaves), _backward(o_n, s_n, leaves)):
        assert rel_err(a, b) <= TOL


def _graph_nodes(fn):
    seen, todo = set(), [fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo += [nxt for nxt, _ in node.next_functions]
    return seen


def test_what_a_saving_forward_keeps_checkpointing_can_drop():
    """With ``save=True`` the intermediates each piece keeps are saved tensors of its autograd node: they pass through
    ``torch.autograd.graph.saved_tensors_hooks``, through which ``torch.utils.checkpoint`` drops them and has the
    backward recompute them (``impl="triton"``'s checkpointed segments), rather than being held by the node whatever
    the hooks. Under checkpointing the gradients are still the recomputing backward's."""
    from titans.ops.memory.chunk import memory_update_chunk

    inp, leaves = make_inputs(T=21, L=2, norm=True, residual=True, requires_grad=True)
    args = [inp[x] for x in ("q", "k", "v", "alpha", "eta", "theta", "params", "momentum")]
    kw = dict(chunk_size=8, norm=inp["norm"], residual=True)
    packed = {False: 0, True: 0}
    for save in (False, True):

        def pack(t, save=save):
            packed[save] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            o, st = memory_update_chunk(*args, save=save, **kw)
        assert not any(getattr(node, "kept", None) for node in _graph_nodes(o.grad_fn))
    assert packed[True] > packed[False]
    ref = _backward(*memory_update_chunk(*args, **kw), leaves)

    def run(*a):
        o, st = memory_update_chunk(*a[:6], a[6:8], a[8:], save=True, **kw)
        return o, *st.params, *st.momentum, *st.chunk_params

    outs = torch.utils.checkpoint.checkpoint(run, *args[:6], *args[6], *args[7], use_reentrant=False)
    st = MemoryState(tuple(outs[1:3]), tuple(outs[3:5]), tuple(outs[5:7]), 21 % 8, 8)
    for a, b in zip(_backward(outs[0], st, leaves), ref):
        assert rel_err(a, b) <= 1e-12


STEP_CASES = [
    # (L, chunk, norm+residual, per-layer gates, activation, momentum given)
    (1, 1, False, False, "gelu", True),
    (1, 4, True, False, "silu", False),
    (2, 1, True, True, "gelu", True),
    (2, 5, True, True, "gelu", True),
    (2, 3, False, False, "relu", False),
    (3, 4, True, True, "silu", True),
    (3, 2, False, True, "gelu", True),
]


@pytest.mark.parametrize("L,chunk,nr,per_layer,act,mom", STEP_CASES,
                         ids=[f"L{c[0]}-b{c[1]}-{'ln' if c[2] else 'plain'}-{'pl' if c[3] else 'ph'}-{c[4]}"
                              f"{'' if c[5] else '-nomom'}" for c in STEP_CASES])
def test_one_token_calls_match_naive(L, chunk, nr, per_layer, act, mom):
    """Calls of one token (decoding: ``chunk`` runs ``step.memory_step``) give naive's outputs, state and gradients
    over a whole sequence, from a fresh memory (momentum given or not), mid-chunk and across chunk boundaries."""
    inp, leaves = make_inputs(T=13, L=L, per_layer=per_layer, norm=nr, residual=nr, momentum=mom, requires_grad=True)
    o_ref, s_ref = _run("naive", inp, chunk, act)
    state, outs = inp["params"], []
    for t in range(13):
        sl = [inp[x][:, t:t + 1] for x in ("q", "k", "v", "alpha", "eta", "theta")]
        o, state = memory_update(*sl, state, inp["momentum"] if t == 0 else None, chunk_size=chunk, activation=act,
                                 norm=inp["norm"], residual=nr, impl="chunk")
        outs.append(o)
        assert state.offset == (t + 1) % chunk
    o_step = torch.cat(outs, 1)
    assert rel_err(o_step, o_ref) <= TOL
    for name in ("params", "momentum", "chunk_params"):
        for x, y in zip(getattr(state, name), getattr(s_ref, name)):
            assert rel_err(x, y) <= TOL, name
    for a, b in zip(_backward(o_step, state, leaves), _backward(o_ref, s_ref, leaves)):
        assert rel_err(a, b) <= TOL


def test_one_token_step_is_the_dual_form_of_a_one_token_piece():
    """``memory_step`` against ``piece_forward`` on a piece of one token, mid-chunk (gradients at G != W)."""
    from titans.ops.memory.chunk import decay_coefficients
    from titans.ops.memory.piece import piece_forward
    from titans.ops.memory.step import memory_step

    from .memory_cases import piece_inputs

    q, k, v, _, G, W, S, norm = piece_inputs(2, 3, 1, 6, 24, resume=True)
    g = torch.Generator().manual_seed(3)
    alpha, eta, theta = (torch.rand(2, 3, 2, generator=g, dtype=torch.float64) * s for s in (0.1, 0.9, 0.5))
    beta, gamma, C, hv, M = decay_coefficients(*(x.permute(2, 0, 1)[..., None] for x in (alpha, eta, theta)))
    coef = (beta, gamma, C, beta[..., 0], gamma[..., 0], C[..., 0, :1], hv[..., 0], M[..., 0, :1])
    o_ref, W_ref, S_ref = piece_forward(q, k, v, coef, G, W, S, norm, "gelu", True)
    o, W1, S1 = memory_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], alpha, eta, theta, G, W, S, norm, "gelu", True)
    assert rel_err(o, o_ref[:, :, 0]) <= TOL
    for x, y in zip((*W1, *S1), (*W_ref, *S_ref)):
        assert rel_err(x, y) <= TOL


@pytest.mark.parametrize("act", ["gelu", "silu", "relu"])
def test_autograd_through_the_dual_form_with_every_activation(act):
    """``fused_backward=False`` (autograd differentiates the dual form, whose inner gradient already holds
    ``sigma'``) works for every activation and gives the hand-written backward's gradients."""
    from titans.ops.memory.chunk import memory_update_chunk

    inp, leaves = make_inputs(T=11, L=2, norm=True, residual=True, requires_grad=True)
    args = [inp[x] for x in ("q", "k", "v", "alpha", "eta", "theta", "params", "momentum")]
    grads = []
    for fused in (True, False):
        o, st = memory_update_chunk(*args, chunk_size=4, activation=act, norm=inp["norm"], residual=True,
                                    fused_backward=fused)
        grads.append(_backward(o, st, leaves))
    for a, b in zip(*grads):
        assert rel_err(a, b) <= TOL
