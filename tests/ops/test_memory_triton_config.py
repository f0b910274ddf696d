"""``impl="triton"``'s launch configurations (``triton_config.py``): tuned files, precisions, defaults, what
fits the device and the backward's probe; each changes nothing but speed (results against ``impl="chunk"``)."""

from __future__ import annotations

import logging

import pytest
import torch

from ..conftest import rel_err
from .memory_cases import make_inputs
from .triton_cases import TOL, compare, run

triton = pytest.importorskip("triton")


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
    compare(inp, leaves, 16, "gelu", 5)
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


def _stand_in(ptx: str, warmed: list, ran: list):
    """A stand-in for a ``@triton.jit`` kernel as ``launch`` calls it: ``warmup`` returns a compiled kernel whose PTX
    is ``ptx`` (recording the precisions it was compiled with in ``warmed``), a launch records them in ``ran``."""

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

    return Kernel


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
    Kernel = _stand_in(ptx, warmed, ran)
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


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("config", ["32,8,1,tf32x3,maxreg,phased,pre-tf32x3", "16,8,1,ieee,maxreg,phased,pre-tf32x3",
                                    "32,8,1,tf32x3,maxreg,pre-tf32x3"])
def test_tf32x3_loops_in_passes_run_as_ieee_on_a_device(monkeypatch, caplog, allow, config):
    """On a device a kernel in passes (``PHASED``) runs its loops' products ieee where its configuration asks for
    tf32x3 (every H100 launch of those crashed, runs 13-15), with a warning, unless ``TITANS_TRITON_PHASED_TF32X3=1``;
    pass P's tf32x3 stays, kernels without passes and the interpreter run as configured."""
    from titans.ops.memory import triton_config as tc

    ran = []
    Kernel = _stand_in("wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 {...};\n", [], ran)
    monkeypatch.setattr(tc, "LAUNCHED", {})
    monkeypatch.setenv("TITANS_TRITON_PHASED_TF32X3", "1" if allow else "0")
    key = dict(backward=True, L=2, BN=64, DK=64, DH=256, DV=64)
    cfg = tc.KernelConfig.parse(config)
    asked = (tc.PRECISIONS[cfg.precision], tc.pre_precision(cfg))
    for interpret in ("1", "0"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        tc.LAUNCHED.clear()
        ran.clear()
        with caplog.at_level("WARNING"):
            caplog.clear()
            tc.launch(Kernel(), (1,), (), cfg=cfg, PPREC=tc.pre_precision(cfg), PHASED=cfg.phased, **key)
        guarded = interpret == "0" and cfg.phased and cfg.precision == "tf32x3" and not allow
        assert ran == [(0, asked[1]) if guarded else asked]
        assert ("kernels in passes" in caplog.text) == guarded
        assert tc.LAUNCHED[(tuple(key.values()), cfg)]["phased loops ieee"] == guarded


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

    tuned = (False, 2, 64, 128, 512, 128)
    assert str(tc.default_config(*tuned)) == tc.TUNED[tuned] == "32,8,1,tf32x3,maxreg,reload"
    assert tc.default_config(*tuned, capability=(7, 5)) == tc.KernelConfig(32, 8, 1, "ieee", maxreg=True, reload=True)
    tensor = tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD)
    assert tc.for_device(tensor, (8, 0)) == tensor
    assert str(tc.for_device(tensor, (7, 5))) == "32,8,1,ieee,maxreg,pre"
    assert tc.default_config(False, 1, 16, 256, 256, 256) == tc.KernelConfig(32, 8, 1)
    assert tc.default_config(True, 1, 64, 256, 256, 256) == tc.KernelConfig(16, 8, 3)
    assert tc.default_config(True, 2, 64, 256, 1024, 256) == tc.KernelConfig(16, 8, 1, maxreg=True)
    tuned_pre = tc.default_config(True, 2, 64, 128, 512, 128)
    assert tuned_pre == tc.KernelConfig(16, 8, 1, maxreg=True, phased=True, pre=True, pre_precision="tf32x3")
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
    # two programs per SM under the cap
    two = tc.KernelConfig(32, 8, 1, maxreg=True, programs=2, phased=True)
    assert tc.KernelConfig.parse("32,8,1,ieee,maxreg2,phased") == two and str(two) == "32,8,1,ieee,maxreg2,phased"
    assert [tc.max_registers(w, 2) for w in (4, 8, 16)] == [255, 128, 64]
    with pytest.raises(ValueError, match="expected"):
        tc.KernelConfig.parse("32,8,1,ieee,maxreg,maxreg2")
    for programs, maxreg in ((2, False), (3, True)):
        with pytest.raises(ValueError, match=f"KernelConfig.programs={programs}"):
            tc.KernelConfig(32, 8, 1, maxreg=maxreg, programs=programs)


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
        o_t, s_t = run("triton", inp, 8)
    o_c, s_c = run("chunk", inp, 8)
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
            o, s = run(impl, inp, 8)
        res[impl] = (o, s.params, torch.autograd.grad((o ** 2).sum() + sum(w.sum() for w in s.params), leaves,
                                                      allow_unused=True))
    assert "the backward kernel does not fit this device" in caplog.text and len(probes) == 1
    (o_t, w_t, g_t), (o_c, w_c, g_c) = res["triton"], res["chunk"]
    assert torch.equal(o_t, o_c) and all(torch.equal(a, b) for a, b in zip(w_t, w_c))
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(g_t, g_c))
    caplog.clear()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="titans"):
        o_n, _ = run("triton", inp, 8)
    assert "does not fit" not in caplog.text and rel_err(o_n, o_c) <= TOL


def test_the_backward_probe_runs_the_kernels_and_changes_nothing(monkeypatch):
    """Where the backward fits, the probe (one chunk of one batch row and head, each chunk length of the call) runs
    both kernels once per shape and the call's results are the kernels' as without it."""
    import titans.ops.memory.triton_op as mem

    monkeypatch.setattr(mem, "_BACKWARD", {})
    monkeypatch.setattr(mem, "interpreting", lambda: False)
    inp, leaves = make_inputs(B=2, T=21, H=2, D=16, L=2, hidden=32, norm=True, residual=True, dtype=torch.float32,
                              requires_grad=True)
    compare(inp, leaves, 8, "gelu", 11)  # the second call: 8 + 2 tokens after the first call's 3 of a chunk
    assert len(mem._BACKWARD) == 3 and all(why is None for why in mem._BACKWARD.values())



@pytest.mark.parametrize("config,cap", [("32,8,1,ieee", None), ("32,8,1,ieee,maxreg", 255),
                                        ("32,16,1,ieee,maxreg", 128), ("32,8,1,ieee,maxreg2", 128)])
def test_launch_caps_the_registers_as_configured(monkeypatch, config, cap):
    """``maxreg`` gives ptxas a register cap (``maxnreg``) that leaves the SM's registers to one program of the
    configuration's warps, ``maxreg2`` to two; without either there is none."""
    from titans.ops.memory import triton_config as tc

    seen = []

    class Kernel:
        def __getitem__(self, grid):
            def run(*args, **kw):
                seen.append(kw.get("maxnreg"))
            return run

    monkeypatch.setattr(tc, "LAUNCHED", {})
    tc.launch(Kernel(), (1,), (), cfg=tc.KernelConfig.parse(config), backward=False, L=2, BN=64, DK=64, DH=256,
              DV=64)
    assert seen == [cap]


def test_offline_compiles_take_the_constants_launch_would(monkeypatch):
    """``triton_compile.kernel_constants`` (what ``benchmarks/triton_resources.py`` compiles) runs the loops of a
    kernel in passes ieee where ``launch`` would on a device, and as configured with the override."""
    from titans.ops.memory.triton_compile import kernel_constants
    from titans.ops.memory.triton_config import KernelConfig

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    phased, plain = KernelConfig.parse("32,8,1,tf32x3,maxreg,phased"), KernelConfig.parse("32,8,1,tf32x3,maxreg")
    for backward in (False, True):
        for allow, cfg, prec in (("0", phased, 0), ("1", phased, 1), ("0", plain, 1)):
            monkeypatch.setenv("TITANS_TRITON_PHASED_TF32X3", allow)
            assert kernel_constants(backward, (2, 64, 64, 256, 64), cfg)["PREC"] == prec
