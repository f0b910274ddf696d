"""What the ``impl="triton"`` tests share: running one call and comparing a two-call run (split mid-chunk) with
``impl="chunk"`` on outputs, final state and every gradient (fp32, relative RMS error <= 1e-5, issue 7)."""

from __future__ import annotations

import torch

from titans.ops import memory_update

from ..conftest import rel_err

TOL = 1e-5  # fp32 (issue 7)


def run(impl, inp, chunk, act="gelu", state=None, sl=slice(None)):
    x = {k: (v[:, sl] if k in ("q", "k", "v", "alpha", "eta", "theta") else v) for k, v in inp.items()}
    return memory_update(x["q"], x["k"], x["v"], x["alpha"], x["eta"], x["theta"],
                         state if state is not None else x["params"], None if state is not None else x["momentum"],
                         chunk_size=chunk, activation=act, norm=x["norm"], residual=x["residual"], impl=impl)


def compare(inp, leaves, chunk, act, cut):
    """Two calls (split at ``cut``, mid-chunk when it is not a multiple of ``chunk``); cotangents on both outputs and
    every tensor of the final state."""
    res = {}
    for impl in ("chunk", "triton"):
        o1, s1 = run(impl, inp, chunk, act, sl=slice(0, cut))
        o2, s2 = run(impl, inp, chunk, act, state=s1, sl=slice(cut, None))
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


# Several streamed tiles (``triton_config.default_config``): of the hidden width (depth 2) and of the
# input rows (depth 1 at head dim 128). (L, chunk, T, cut, norm+residual, activation, D, hidden)
TILED = [
    (2, 16, 35, 19, True, "gelu", 16, 128),
    (2, 8, 21, 5, False, "silu", 16, 256),
    (1, 16, 21, 7, True, "silu", 128, 128),
    (1, 16, 18, 16, False, "gelu", 128, 128),
]
