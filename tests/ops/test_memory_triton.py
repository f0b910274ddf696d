"""``impl="triton"`` (Triton per-piece forward, hand-written backward) against ``impl="chunk"``: outputs, final state
and every gradient, fp32, relative RMS error <= 1e-5. On CPU the kernel runs in Triton's interpreter (set in
``tests/conftest.py``); the ``gpu`` tests repeat it on CUDA at realistic shapes, fp32 and bf16."""

from __future__ import annotations

import dataclasses
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
# Several streamed tiles (``triton_config.default_config``): of the hidden width (depth 2) and of the
# input rows (depth 1 at head dim 128). (L, chunk, T, cut, norm+residual, activation, D, hidden)
TILED = [
    (2, 16, 35, 19, True, "gelu", 16, 128),
    (2, 8, 21, 5, False, "silu", 16, 256),
    (1, 16, 21, 7, True, "silu", 128, 128),
    (1, 16, 18, 16, False, "gelu", 128, 128),
]


@pytest.mark.parametrize("L,chunk,T,cut,nr,per_layer,act,hidden", CASES)
def test_triton_matches_chunk(L, chunk, T, cut, nr, per_layer, act, hidden):
    inp, leaves = make_inputs(B=2, T=T, H=2, D=16, L=L, hidden=hidden, per_layer=per_layer, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, chunk, act, cut)


@pytest.mark.parametrize("L,chunk,T,cut,nr,act,D,hidden", TILED)
def test_triton_matches_chunk_over_several_tiles(L, chunk, T, cut, nr, act, D, hidden):
    inp, leaves = make_inputs(B=1, T=T, H=2, D=D, L=L, hidden=hidden, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, chunk, act, cut)


def test_segments_under_activation_checkpointing_match_chunk(monkeypatch):
    """Past the saved-state budget the chunks run in segments of about sqrt(N) under activation checkpointing (the
    backward re-runs each segment's forward): same outputs, state and gradients."""
    import titans.ops.memory.triton_op as op

    assert op.SAVE_BUDGET_BYTES is None and op.save_budget(torch.device("cpu")) == 4 << 30
    for total, budget in ((80 << 30, 5 << 30), (24 << 30, 4 << 30)):  # a sixteenth of the card, at least 4 GiB
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d, t=total: type("P", (), {"total_memory": t}))
        assert op.save_budget(torch.device("cuda")) == budget
    monkeypatch.setattr(op, "SAVE_BUDGET_BYTES", 1)
    assert op._segment(11, [torch.zeros(1, 1, 4, 4)], torch.zeros(1, 1, 1, 4), 4, True) == 4
    inp, leaves = make_inputs(B=1, T=47, H=2, D=16, L=2, hidden=32, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, 4, "gelu", 5)


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
    import titans.ops.memory.triton_op as mem

    monkeypatch.setattr(mem, "_WARNED", set())
    inp, _ = make_inputs(B=1, T=10, H=1, D=D, L=L, hidden=16, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="titans"):
        o_t, _ = _run("triton", inp, 4)
    o_c, _ = _run("chunk", inp, 4)
    assert torch.equal(o_t, o_c)
    assert "falls back to 'chunk'" in caplog.text and why in caplog.text


def _cuda(inp, dtype):
    """Inputs on CUDA; q, k, v in ``dtype`` for the kernel and the same rounded values in float32 for the chunk."""
    cuda = {k: (tuple(t.detach().cuda() for t in v) if isinstance(v, tuple) else v.detach().cuda()
                if torch.is_tensor(v) else v) for k, v in inp.items()}
    low = {k: (v.to(dtype) if k in ("q", "k", "v") else v) for k, v in cuda.items()}
    ref = {k: (v.to(dtype).float() if k in ("q", "k", "v") else v) for k, v in cuda.items()}
    return low, ref


def _leaves(x):
    out = []
    for key in ("q", "k", "v", "alpha", "eta", "theta", "params", "momentum", "norm"):
        val = x[key]
        for t in (val if isinstance(val, tuple) else (val,)):
            t.requires_grad_()
            out.append(t)
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("forward", ["seq", "split", "reload", "phased", "tf32x3-wide", "pre", "pre-tf32x3",
                                     "tf32x3-bwd", "tf32x3-bwd-phased"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("L,D,hidden,chunk", [(1, 64, 64, 16), (2, 64, 256, 16), (2, 64, 256, 64), (1, 128, 128, 64),
                                              (2, 128, 512, 16), (2, 128, 512, 64)])
def test_triton_on_cuda_realistic(monkeypatch, forward, dtype, tol, L, D, hidden, chunk):
    """The paper's sizes on a GPU: outputs, final state and every gradient of ``triton`` against ``chunk`` run in
    float64 on the same (rounded) tokens. The bound is the dtype's (fp32: 1e-5; bf16 tokens with a float32 memory:
    2e-2 on outputs and gradients, 1e-4 on the state), or, where the float32 ``chunk`` itself is further from float64
    than that (measured: gradients of k at depth 2, head dim 128, about 2e-5), twice the float32 reference's error:
    the kernel must be as accurate as the float32 reference, not more. ``forward``: one program per (batch row,
    head), or the forward split over programs (``triton_split.py``; by default only at few programs and some
    shapes, ``triton_seq.SPLIT_FEW``), or reading q and k again per weight tile (``reload``, depth 2), or its tile
    loops in passes (``phased``, depth 2, both kernels), or in
    tiles twice the default's with tf32x3 products (``tf32x3-wide``, the GPU benchmark's candidate), or
    (``pre``) the backward with its pre-pass (``KernelConfig.pre``), with its products on the tensor cores
    (``pre-tf32x3``), or with every product of the backward there (``tf32x3-bwd``, and with its pass C in passes,
    ``tf32x3-bwd-phased``: the GPU benchmark's candidates;
    ``benchmarks/gpu_lease.sh`` runs the tf32x3 ones in a later process: tf32x3 has ended runs in an illegal memory
    access)."""
    import titans.ops.memory.triton_config as tc
    import titans.ops.memory.triton_seq as ts
    import titans.ops.memory.triton_seq_bwd as tb

    if forward.startswith("tf32x3-bwd"):
        if forward.endswith("phased") and L == 1:
            pytest.skip("KernelConfig.phased is a depth-2 kernel's")
        cfg = tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD + (",phased" if forward.endswith("phased") else ""))
        monkeypatch.setattr(tb, "config_for", lambda *key: cfg)
    elif forward == "tf32x3-wide":
        base_w = ts.config_for
        if chunk < 64 or base_w(False, L, chunk, D, hidden, D).precision == "tf32x3":
            pytest.skip("the benchmark offers tf32x3-wide at 64-row chunks where the default forward is ieee only")
        wide = lambda *key: tc.KernelConfig(max(32, 2 * base_w(*key).tile), 8, 1, "tf32x3", maxreg=True)  # noqa: E731
        monkeypatch.setattr(ts, "config_for", wide)
    elif forward in ("reload", "phased"):
        if L == 1:
            pytest.skip(f"KernelConfig.{forward} is a depth-2 forward's")
        base_f, base_b = ts.config_for, tb.config_for
        monkeypatch.setattr(ts, "config_for", lambda *key: dataclasses.replace(base_f(*key), **{forward: True}))
        if forward == "phased":  # both kernels
            monkeypatch.setattr(tb, "config_for", lambda *key: dataclasses.replace(base_b(*key), phased=True))
    elif forward.startswith("pre"):
        base = tb.config_for
        prec = forward.removeprefix("pre-") if "-" in forward else "ieee"
        monkeypatch.setattr(tb, "config_for", lambda *key: dataclasses.replace(base(*key), pre=True, stages=1,
                                                                              pre_precision=prec))
    monkeypatch.setattr(ts, "SPLIT_BELOW", 1 << 30 if forward == "split" else 0)
    inp, _ = make_inputs(B=2, T=1000, H=4, D=D, L=L, hidden=hidden, norm=True, residual=True, dtype=torch.float32)
    # A problem float32 can solve: with make_inputs' forgetting (alpha up to 0.05) a thousand tokens shrink a depth-2
    # memory towards zero, where the LayerNorm amplifies rounding and even ``chunk`` in float32 and float64 disagree
    # by O(1). Gentler gates keep the weights O(1) (``chunk`` float32 vs float64: about 1e-6 on outputs).
    inp["alpha"], inp["theta"] = inp["alpha"] * 0.01, inp["theta"] * 0.3
    low, ref = _cuda(inp, dtype)
    f64 = {k: (tuple(t.double() for t in v) if isinstance(v, tuple) else v.double() if torch.is_tensor(v) else v)
           for k, v in ref.items()}
    res = []
    for x, impl in ((low, "triton"), (ref, "chunk"), (f64, "chunk")):
        leaves = _leaves(x)
        o, s = _run(impl, x, chunk)
        g = torch.Generator(device="cuda").manual_seed(1)
        outs = [o, *s.params, *s.momentum]
        total = sum((t * torch.randn(t.shape, generator=g, device="cuda", dtype=torch.float64).to(t.dtype)).sum()
                    for t in outs)
        res.append((outs, torch.autograd.grad(total, leaves)))
    (out_t, g_t), (out_c, g_c), (out_64, g_64) = res

    def check(a, c, exact, bound, what):
        assert rel_err(a.float(), exact) <= max(bound, 2 * rel_err(c, exact)), what

    check(out_t[0], out_c[0], out_64[0], tol, "output")
    for i, (a, c, x) in enumerate(zip(out_t[1:], out_c[1:], out_64[1:])):
        check(a, c, x, tol if dtype == torch.float32 else 1e-4, f"state {i}")
    for i, (a, c, x) in enumerate(zip(g_t, g_c, g_64)):
        check(a, c, x, tol, f"gradient of leaf {i}")


def test_model_with_the_triton_memory_matches_chunk(caplog, monkeypatch):
    import dataclasses

    import titans.ops.memory.triton_op as mem
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


def test_launch_configurations_change_nothing_but_speed(monkeypatch, tmp_path):
    """Every candidate the GPU benchmark tunes over (tile, warps, stages, tf32x3 products, the register cap) computes
    the same chunk form; a tuned-configurations file is read from ``TITANS_TRITON_CONFIGS`` and a bad one names its
    row."""
    from titans.ops.memory import triton_config as tc

    inp, leaves = make_inputs(B=1, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32,
                              requires_grad=True)
    key = (2, 16, 16, 32, 16)
    cfgs = {(False, *key): tc.KernelConfig(32, 8, 1, "tf32x3"),
            (True, *key): tc.KernelConfig(32, 2, 2, "tf32x3", maxreg=True)}
    path = tmp_path / "tuned.json"
    tc.save_configs(str(path), cfgs)
    assert tc.load_configs(str(path)) == cfgs
    monkeypatch.setattr(tc, "OVERRIDES", {})
    monkeypatch.setattr(tc, "_LOADED", [])
    monkeypatch.setenv("TITANS_TRITON_CONFIGS", str(path))
    assert tc.config_for(True, *key) == cfgs[(True, *key)]
    # a file tuned on an H100 loaded beside an older card: its tf32x3 products run ieee there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert tc.config_for(True, *key) == tc.KernelConfig(32, 2, 2, maxreg=True)
    monkeypatch.undo()
    monkeypatch.setattr(tc, "OVERRIDES", {})
    monkeypatch.setattr(tc, "_LOADED", [])
    monkeypatch.setenv("TITANS_TRITON_CONFIGS", str(path))
    assert tc.config_for(True, 1, 16, 16, 16, 16) == tc.default_config(True, 1, 16, 16, 16, 16)
    _compare(inp, leaves, 16, "gelu", 5)
    path.write_text('[{"backward": false, "L": 2, "BN": 16, "DK": 16, "DH": 32, "DV": 16, "config": "16,4"}]')
    with pytest.raises(ValueError, match="row 0"):
        tc.load_configs(str(path))
    with pytest.raises(ValueError, match="KernelConfig.precision='tf32'"):
        tc.KernelConfig(16, 4, 1, "tf32")
    with pytest.raises(ValueError, match="KernelConfig.tile=24"):
        tc.KernelConfig(24, 4, 1)


def test_tf32x3_runs_as_ieee_in_16_wide_tiles(monkeypatch):
    """``launch`` passes tf32x3 (PREC 1) only to tiles of ``TF32X3_MIN_TILE`` or more (16-wide ones crashed the
    H100 run), also when the device refused the wider tile and it was halved."""
    from titans.ops.memory import triton_config as tc

    seen = []

    class Kernel:
        def __init__(self, refuse):
            self.refuse = refuse  # the device refuses tiles wider than 16

        def warmup(self, *args, grid, **kw):  # compiles without running; as the interpreter, returns no PTX
            return None

        def __getitem__(self, grid):
            def run(*args, TH, PREC, **kw):
                if TH > 16 and self.refuse:
                    raise triton.runtime.errors.OutOfResources(1, 0, "shared memory")
                seen.append((TH, PREC))
            return run

    monkeypatch.setattr(tc, "LAUNCHED", {})
    key = dict(backward=False, L=2, BN=16, DK=16, DH=64, DV=16)
    monkeypatch.setattr(tc, "OVERRIDES", {tuple(key.values()): tc.KernelConfig(32, 8, 1, "tf32x3")})
    for refuse in (False, True):
        tc.LAUNCHED.clear()
        tc.launch(Kernel(refuse), (1,), (), **key)
        assert tc.LAUNCHED[(tuple(key.values()), tc.OVERRIDES[tuple(key.values())])]["ptx read"] is False
    assert seen == [(32, 1), (16, 0)]


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("config", ["tensor-core backward", "32,8,1,ieee,maxreg,pre-tf32x3"])
def test_tf32_products_laid_out_8_wide_run_as_ieee(monkeypatch, caplog, narrow, config):
    """Before the first launch of a tf32x3 configuration ``launch`` compiles the kernel without running it; where the
    PTX has TF32 warp-group products 8 wide (both kernels that crashed an H100 run had them) every product, pass P's
    too, runs ieee, with a warning, and later launches keep that without compiling again."""
    from titans.ops.memory import triton_config as tc

    ptx = ("wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 {...};\n"
           + ("wgmma.mma_async.sync.aligned.m64n8k8.f32.tf32.tf32 {...};\n" if narrow else ""))
    warmed, ran = [], []

    class Compiled:
        asm = {"ptx": ptx}

    class Kernel:
        def warmup(self, *args, grid, **kw):
            warmed.append((kw["PREC"], kw["PPREC"]))
            return Compiled()

        def __getitem__(self, grid):
            def run(*args, PREC, PPREC, **kw):
                ran.append((PREC, PPREC))
            return run

    monkeypatch.setattr(tc, "LAUNCHED", {})
    key = dict(backward=True, L=2, BN=64, DK=64, DH=256, DV=64)
    cfg = tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD if config == "tensor-core backward" else config)
    asked = (tc.PRECISIONS[cfg.precision], tc.pre_precision(cfg))
    with caplog.at_level("WARNING"):
        for _ in range(2):
            tc.launch(Kernel(), (1,), (), cfg=cfg, PPREC=tc.pre_precision(cfg), **key)
    assert warmed == [asked]
    assert ran == [(0, 0)] * 2 if narrow else [asked] * 2
    assert ("8 wide" in caplog.text) == narrow
    assert tc.LAUNCHED[(tuple(key.values()), cfg)]["narrow tf32"] == narrow
    assert tc.LAUNCHED[(tuple(key.values()), cfg)]["ptx read"] is True


def test_narrow_tf32_reads_the_product_width():
    from titans.ops.memory import triton_config as tc

    assert tc.narrow_tf32("x; wgmma.mma_async.sync.aligned.m64n8k8.f32.tf32.tf32 {%f1};")
    for other in ("wgmma.mma_async.sync.aligned.m64n16k8.f32.tf32.tf32", "mma.sync.aligned.m16n8k8.row.col.f32.tf32",
                  "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16", ""):
        assert not tc.narrow_tf32(other)


def test_default_configurations():
    """Measured shapes launch with what was measured fastest; others with 8 warps and one stage at the widest tile;
    tf32x3 only where the device has TF32 tensor cores."""
    from titans.ops.memory import triton_config as tc

    tuned = (False, 2, 64, 64, 256, 64)
    assert str(tc.default_config(*tuned)) == tc.TUNED[tuned] == "32,8,1,tf32x3"
    assert tc.default_config(*tuned, capability=(7, 5)) == tc.KernelConfig(32, 8, 1, "ieee")
    tensor = tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD)
    assert tc.for_device(tensor, (8, 0)) == tensor
    assert str(tc.for_device(tensor, (7, 5))) == "32,8,1,ieee,maxreg,pre"
    assert tc.default_config(False, 1, 16, 256, 256, 256) == tc.KernelConfig(32, 8, 1)
    assert tc.default_config(True, 1, 64, 256, 256, 256) == tc.KernelConfig(16, 8, 3)
    assert tc.default_config(True, 2, 64, 256, 1024, 256) == tc.KernelConfig(16, 8, 1, maxreg=True)
    tuned_pre = tc.default_config(True, 2, 64, 128, 512, 128)
    assert tuned_pre == tc.KernelConfig(16, 8, 1, maxreg=True, pre=True, pre_precision="tf32x3")
    assert all(str(tc.KernelConfig.parse(c)) == c for c in tc.TUNED.values())
    assert tc.KernelConfig.parse("32,4,1,ieee,split") == tc.KernelConfig(32, 4, 1, split=True)
    assert str(tc.KernelConfig(32, 4, 1, split=True)) == "32,4,1,ieee,split"
    assert tc.KernelConfig.parse("16,8,1,ieee,reload,maxreg") == tc.KernelConfig(16, 8, 1, maxreg=True, reload=True)
    assert str(tc.KernelConfig(16, 8, 1, maxreg=True, reload=True)) == "16,8,1,ieee,maxreg,reload"
    with pytest.raises(ValueError, match="expected"):
        tc.KernelConfig.parse("32,4,1,ieee,fast")
    with pytest.raises(ValueError, match="expected"):
        tc.KernelConfig.parse("32,4,1,ieee,split,split")
    assert str(tc.KernelConfig.parse("16,16,1,ieee,maxreg")) == "16,16,1,ieee,maxreg"
    assert tc.KernelConfig.parse("16,8,1,ieee,maxreg,pre") == tc.KernelConfig(16, 8, 1, maxreg=True, pre=True)
    assert str(tc.KernelConfig(16, 8, 1, pre=True)) == "16,8,1,ieee,pre"
    pre3 = tc.KernelConfig(16, 8, 1, maxreg=True, pre=True, pre_precision="tf32x3")
    assert tc.KernelConfig.parse("16,8,1,ieee,maxreg,pre-tf32x3") == pre3
    assert str(pre3) == "16,8,1,ieee,maxreg,pre-tf32x3" and tc.pre_precision(pre3) == tc.PRECISIONS["tf32x3"]
    assert tc.pre_precision(tc.KernelConfig(16, 8, 1)) == tc.PRECISIONS["ieee"]
    for bad in ("16,8,1,ieee,pre,pre-tf32x3", "16,8,1,ieee,pre-tf32"):
        with pytest.raises(ValueError, match="expected"):
            tc.KernelConfig.parse(bad)
    with pytest.raises(ValueError, match="pre_precision='tf32x3' needs pre=True"):
        tc.KernelConfig(16, 8, 1, pre_precision="tf32x3")
    with pytest.raises(ValueError, match="KernelConfig.pre_precision='tf32'"):
        tc.KernelConfig(16, 8, 1, pre=True, pre_precision="tf32")
    assert [tc.max_registers(w) for w in (4, 8, 16)] == [255, 255, 128]


def test_a_forward_that_does_not_fit_the_device_falls_back_to_chunk(caplog, monkeypatch):
    """Triton's OutOfResources at the smallest tile (e.g. depth 2, head dim 128, 64-row chunks on an H100): the
    chunk form runs instead, with a warning, and the results are chunk's."""
    import titans.ops.memory.triton_op as mem
    import titans.ops.memory.triton_seq as seq

    def refuse(*args, **kwargs):
        raise mem.OutOfResources(274432, 232448, "shared memory")

    monkeypatch.setattr(mem, "_WARNED", set())
    monkeypatch.setattr(seq, "launch", refuse)
    inp, _ = make_inputs(B=1, T=20, H=1, D=16, L=2, hidden=16, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="titans"):
        o_t, s_t = _run("triton", inp, 8)
    o_c, s_c = _run("chunk", inp, 8)
    assert torch.equal(o_t, o_c) and all(torch.equal(a, b) for a, b in zip(s_t.params, s_c.params))
    assert "does not fit this device" in caplog.text


def test_a_backward_that_does_not_fit_the_device_falls_back_to_chunk(caplog, monkeypatch):
    """A backward kernel that Triton refuses (depth 2, head dim 128, 64-row chunks on an H100: 274 KB of shared
    memory at the smallest tile, its forward fits) is found before the call's forward, on one chunk, and the whole
    call runs the chunk form: chunk's outputs and gradients, a warning; without a gradient the kernels still run."""
    import titans.ops.memory.triton_op as mem

    probes = []

    def refuse(*args, **kwargs):
        probes.append(1)
        raise mem.OutOfResources(274432, 232448, "shared memory")

    monkeypatch.setattr(mem, "_WARNED", set())
    monkeypatch.setattr(mem, "_BACKWARD", {})
    monkeypatch.setattr(mem, "interpreting", lambda: False)  # the probe is skipped in the interpreter otherwise
    monkeypatch.setattr(mem, "seq_backward_triton", refuse)
    inp, leaves = make_inputs(B=2, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32,
                              requires_grad=True)
    res = {}
    for impl in ("triton", "chunk"):
        with caplog.at_level(logging.WARNING, logger="titans"):
            o, s = _run(impl, inp, 8)
        res[impl] = (o, s.params, torch.autograd.grad((o ** 2).sum() + sum(w.sum() for w in s.params), leaves,
                                                      allow_unused=True))
    assert "the backward kernel does not fit this device" in caplog.text and len(probes) == 1
    (o_t, w_t, g_t), (o_c, w_c, g_c) = res["triton"], res["chunk"]
    assert torch.equal(o_t, o_c) and all(torch.equal(a, b) for a, b in zip(w_t, w_c))
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(g_t, g_c))
    caplog.clear()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="titans"):
        o_n, _ = _run("triton", inp, 8)
    assert "does not fit" not in caplog.text and rel_err(o_n, o_c) <= TOL


def test_the_backward_probe_runs_the_kernels_and_changes_nothing(monkeypatch):
    """Where the backward fits, the probe (one chunk of one batch row and head, each chunk length of the call) runs
    both kernels once per shape and the call's results are the kernels' as without it."""
    import titans.ops.memory.triton_op as mem

    monkeypatch.setattr(mem, "_BACKWARD", {})
    monkeypatch.setattr(mem, "interpreting", lambda: False)
    inp, leaves = make_inputs(B=2, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32,
                              requires_grad=True)
    _compare(inp, leaves, 8, "gelu", 11)  # the second call: 8 + 2 tokens after the first call's 3 of a chunk
    assert len(mem._BACKWARD) == 3 and all(why is None for why in mem._BACKWARD.values())


@pytest.mark.parametrize("how,L,chunk,T,cut,nr,act,D,hidden",
                         [("config", *TILED[0]), ("config", *TILED[2]), ("few programs", *TILED[1]),
                          ("few programs", 1, 8, 21, 5, True, "silu", 16, 16)])
def test_the_forward_split_over_programs_matches_chunk(monkeypatch, how, L, chunk, T, cut, nr, act, D, hidden):
    """The forward as one launch per chunk with the weights' tiles spread over programs (``triton_split.py``;
    several tiles in the first three cases, one in the last), the backward as before: chosen by
    ``KernelConfig.split``, or because there are fewer (batch row, head) programs than ``SPLIT_BELOW``."""
    import dataclasses

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
    _compare(inp, leaves, chunk, act, cut)
    with torch.no_grad():
        o_c, s_c = _run("chunk", inp, chunk, act)
        o_t, s_t = _run("triton", inp, chunk, act)
    assert rel_err(o_t, o_c) <= TOL
    for a, b in zip(s_t.params + s_t.momentum, s_c.params + s_c.momentum):
        assert rel_err(a, b) <= TOL


def test_the_backward_with_q_transposed_matches_chunk(monkeypatch):
    """Depth 2's layer-0 weight gradients as ``q^T (beta0 dz0)`` (``triton_config.q_transposed``: the form used at
    head dim 128 / chunk 64, too large to run here) give the same gradients."""
    import titans.ops.memory.triton_seq_bwd as tb

    monkeypatch.setattr(tb, "q_transposed", lambda BN, DK: True)
    inp, leaves = make_inputs(B=1, T=35, H=2, D=16, L=2, hidden=64, per_layer=True, norm=True, residual=True,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, 16, "gelu", 19)


@pytest.mark.parametrize("nr", [True, False])
def test_the_forward_reading_q_and_k_per_tile_matches_chunk(monkeypatch, nr):
    """``KernelConfig.reload``: the depth-2 forward reads the chunk's q and k again for each weight tile (four tiles
    here) instead of holding them through the loop, and the residual's q after it: the same outputs, state and
    gradients."""
    import titans.ops.memory.triton_seq as ts

    base = ts.config_for
    monkeypatch.setattr(ts, "config_for", lambda *key: dataclasses.replace(base(*key), tile=16, reload=True))
    inp, leaves = make_inputs(B=1, T=35, H=2, D=16, L=2, hidden=64, per_layer=True, norm=nr, residual=nr,
                              dtype=torch.float32, requires_grad=True)
    _compare(inp, leaves, 16, "gelu", 19)


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
    _compare(inp, leaves, chunk, "silu", cut)


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
