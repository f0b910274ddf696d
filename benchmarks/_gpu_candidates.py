"""The launch configurations ``gpu_memory_op.py --tune`` times (and ``triton_resources.py --candidates`` compiles):
``candidates(D, depth, chunk)`` -> ``{name: (forward config, backward config)}``, filtered by :data:`ONLY`."""

from __future__ import annotations

import dataclasses
import os

from _gpu_report import kernel_keys, memory_dims

from titans.ops.memory import triton_config as tc


def with_pre(cfg, precision: str = "ieee"):
    """A backward configuration with its pre-pass (``KernelConfig.pre``) whose products have ``precision``: the
    ``pre`` and ``tf32x3-pre`` candidates. Its pipeline stages are ``cfg``'s, at most
    ``triton_config.PRE_MAX_STAGES``."""
    return dataclasses.replace(cfg, pre=True, pre_precision=precision, stages=min(cfg.stages, tc.PRE_MAX_STAGES))


def candidates(D, depth, chunk) -> dict:
    """Launch configurations to time: ``{name: (forward config, backward config)}`` over the tile widths of
    ``triton_config.tile_width``: the first kernels' 4 warps (8 at 64-row chunks) with 3 stages, the same without
    software pipelining (also with the register cap), twice the warps without it, tf32x3 products in the forward, the
    current default, the default with the register cap (``maxreg``, ``maxreg-bwd``), the default forward with two
    pipeline stages (``fwd-s2``; the backward ``bwd-s2``, both ``s2``) and, at depth 2, reading q and k per tile
    (``reload``), its tile loops in passes (``phased``, at 4 warps ``phased-w4``, at 16 ``phased-w16``, two 8-warp
    programs per SM ``phased-x2``), a tf32x3 forward in tiles twice the default's (``tf32x3-wide``, :data:`RISKY`), the
    default backward with its pre-pass (``pre``), with that pass's products on the tensor cores (``tf32x3-pre``) and
    with every product there (``tf32x3-bwd``; both :data:`RISKY`), and the forward split over programs."""
    kf, kb = kernel_keys(D, depth, chunk)
    tf, tb = tc.tile_width(*kf), tc.tile_width(*kb)
    w = 8 if kf[2] >= 64 else 4
    old = (tc.KernelConfig(tf, w, 3), tc.KernelConfig(tb, w, 3))
    out = {f"w{w}-s3": old,
           f"w{w}-s1": (tc.KernelConfig(tf, w, 1), tc.KernelConfig(tb, w, 1)),
           f"w{2 * w}-s1": (tc.KernelConfig(tf, 2 * w, 1), tc.KernelConfig(tb, 2 * w, 1)),
           # capped (all 255 registers): at 4 warps two programs fit an SM's registers
           f"w{w}-s1-maxreg": (tc.KernelConfig(tf, w, 1, maxreg=True), tc.KernelConfig(tb, w, 1, maxreg=True)),
           # tf32x3 for the forward only: the backward with it hit an illegal memory access at 64-row chunks
           # (Triton 3.6, H100, 2026-11-26), which poisons the CUDA context of the whole run.
           "tf32x3-fwd": (tc.KernelConfig(tf, w, 1, "tf32x3"), old[1])}
    if tf < tc.TF32X3_MIN_TILE:  # it would run as ieee (triton_config.TF32X3_MIN_TILE)
        del out["tf32x3-fwd"]
    default = (tc.default_config(*kf), tc.default_config(*kb))
    if default not in out.values():
        out["default"] = default
    # The defaults with the register cap (KernelConfig.maxreg), for both kernels and for the backward alone.
    for name, capped in (("maxreg", tuple(dataclasses.replace(c, maxreg=True) for c in default)),
                         ("maxreg-bwd", (default[0], dataclasses.replace(default[1], maxreg=True)))):
        if capped != default:  # the default has it already (triton_config.TUNED)
            out[name] = capped
    # The default forward with two pipeline stages (the weight tiles' loads started a tile ahead; the defaults have
    # one where they were measured, before the tile loops were trimmed).
    out["fwd-s2"] = (dataclasses.replace(default[0], stages=2), default[1])
    # ... the backward with two, and both: compiled offline (Triton 3.6) the kernels in passes then load most of the
    # weight tiles ahead with cp.async (LDGSTS: 1,108 of a chunk's 1,550 global loads in the depth-2 / head dim 64 /
    # chunk 64 backward), where the one-stage ones wait on each; they fit an H100 (98 and 136 KB at the two 64-row
    # depth-2 shapes' backwards; benchmarks/results/triton_stages.json), and the stall-bound loops may hide those
    # waits.
    out["bwd-s2"] = (default[0], dataclasses.replace(default[1], stages=2))
    out["s2"] = (out["fwd-s2"][0], out["bwd-s2"][1])
    if depth == 2:  # the forward reading q and k again per weight tile (KernelConfig.reload), and in three passes
        out["reload"] = (dataclasses.replace(default[0], reload=True), default[1])
        # ... both kernels' tile loops in passes through a scratch (KernelConfig.phased; triton_phased*.py)
        out["phased"] = tuple(dataclasses.replace(c, phased=True) for c in default)
        # ... each kernel alone in passes (the other the default): which of the two ended run 13's CUDA context
        out["phased-fwd"] = (dataclasses.replace(default[0], phased=True), default[1])
        out["phased-bwd"] = (default[0], dataclasses.replace(default[1], phased=True))
        # ... at 4 warps with the register cap: compiled offline these run more instructions and spills per thread
        # than at 8, but fit two programs on an SM (255 registers x 128 threads each, and the shared memory) where
        # the kernels in passes need little of it, so that one program's waits can hide behind the other's
        # (docs/benchmarks.md, "Instructions per chunk").
        out["phased-w4"] = tuple(dataclasses.replace(c, phased=True, warps=4, maxreg=True) for c in default)
        # ... and at 16 warps with the cap (128 registers each): twice the warps in flight on the one SM a program
        # takes, which the stall-bound loops may use better than fewer spills (docs/benchmarks.md, "Instructions per
        # chunk": 10-27 cycles between a warp's instructions).
        out["phased-w16"] = tuple(dataclasses.replace(c, phased=True, warps=16, maxreg=True) for c in default)
        # ... and as two 8-warp programs per SM at 128 registers (KernelConfig.programs): the same 16 warps, whose
        # barriers hold up only their own program's
        out["phased-x2"] = tuple(dataclasses.replace(c, phased=True, warps=8, maxreg=True, programs=2)
                                 for c in default)
    if depth == 2:  # chunk's loop with each piece in four launches over every head and hidden tile (triton_piece.py;
        # its backward is chunk's): compiled offline (Triton 3.6) none of these has 8-wide TF32 products at the two
        # 64-row-chunk shapes; all but piece-t64 ran on an H200 (runs 16-19), piece-w4 the fastest (PIECE_FROM)
        # (with the register cap: without it ptxas gave the ieee tiles kernel 32 registers and 9,976 spills a run)
        for name, text in PIECE.items():
            out[name] = (tc.KernelConfig.parse(text), default[1])
    # A tf32x3 forward in tiles twice the default's (at least 32: tf32x3 needs them) with the register cap: compiled
    # offline it fits an H100 at depth 2 / chunk 64, head dim 128 (32 wide, where the default's 16-wide tiles put
    # every product on the CUDA cores: 224 KB) and head dim 64 (64 wide: 176 KB); at 16-row chunks it spills 20-25 KB
    # per thread, and is not tried. Nor where the default forward is tf32x3 already: measured (run 11, H100) at both
    # such shapes, 64 wide was slower at head dim 64 and 32 wide is the default at head dim 128. RISKY: kernels no GPU
    # has run.
    wide = max(tc.TF32X3_MIN_TILE, 2 * default[0].tile)
    if chunk >= 64 and default[0].precision != "tf32x3" and wide <= (memory_dims(D, depth)[1] if depth == 2 else D):
        out["tf32x3-wide"] = (tc.KernelConfig(wide, 8, 1, "tf32x3", maxreg=True), default[1])
    # The backward with its pre-pass, and with that pass's products on the tensor cores (RISKY: timed only where named).
    out["pre"] = (default[0], with_pre(default[1]))
    out["tf32x3-pre"] = (default[0], with_pre(default[1], "tf32x3"))
    # ... and every product of the backward there (triton_config.TENSOR_CORE_BACKWARD, RISKY), also with its pass C
    # in passes (at depth 2 / head dim 128 / chunk 64 only that one fits an H100 in 32-wide tiles, compiled offline).
    out["tf32x3-bwd"] = (default[0], tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD))
    if depth == 2:
        out["tf32x3-bwd-phased"] = (default[0], tc.KernelConfig.parse(tc.TENSOR_CORE_BACKWARD + ",phased"))
    # The forward split over programs (one launch per chunk, triton_split.py) with the default backward: tiles of
    # the streamed width and half of it, 4 and 8 warps.
    for th in sorted({tf, max(16, tf // 2)}):
        for warps in (4, 8):
            out[f"split-t{th}-w{warps}"] = (tc.KernelConfig(th, warps, 1, split=True), default[1])
    if ONLY:
        out = {name: c for name, c in out.items() if any(name.startswith(p) for p in ONLY)}
        if "default" in ONLY:  # under its own name even where it equals another candidate
            out["default"] = default
    return out


# The piece candidates' forward configurations (the backward is the default's). ``piece-t16x2``: 16-wide tiles as
# two 8-warp programs per SM at 128 registers, where compiled offline (Triton 3.6) its tiles kernel spills almost
# nothing (4 spill instructions at head dim 128, against 0 at 255 registers in 32-wide tiles, one program per SM).
PIECE = {"piece": "32,8,1,tf32x3,maxreg,piece", "piece-ieee": "32,8,1,ieee,maxreg,piece",
         "piece-w4": "32,4,1,tf32x3,maxreg,piece", "piece-t64": "64,8,1,tf32x3,maxreg,piece",
         "piece-t16x2": "16,8,1,ieee,maxreg2,piece",
         # piece-w4 with the forward keeping each piece's intermediates for the backward (KernelConfig.save): no
         # recomputation, about as much memory again as the weights and momentum kept per chunk
         "piece-w4-save": "32,4,1,tf32x3,maxreg,piece,save",
         # ... and each layer's weight-sized backward work in one launch (KernelConfig.wgrad, its products ieee:
         # compiled offline they spill nothing at 4 warps, tf32x3 ones 1,138 spill instructions a launch)
         "piece-w4-wgrad": "32,4,1,tf32x3,maxreg,piece,wgrad",
         "piece-w4-save-wgrad": "32,4,1,tf32x3,maxreg,piece,save,wgrad",
         # ... and the per-head passes in 4 blocks of the output's columns (KernelConfig.vsplit), for the few (batch
         # row, head) pairs of long sequences at small batches (32K: 32 pairs)
         "piece-w4-v4": "32,4,1,tf32x3,maxreg,piece,v4",
         # ... and each piece's backward compiled by torch.compile (KernelConfig.compiled, piece_compiled.py): its ~200
         # eager operations a piece fused into ~47 kernels (benchmarks/piece_backward_ops.py), for the per-operation
         # cost at few (batch row, head) pairs; the first call of a process compiles (tens of seconds)
         "piece-w4-compiled": "32,4,1,tf32x3,maxreg,piece,compiled",
         "piece-w4-save-compiled": "32,4,1,tf32x3,maxreg,piece,save,compiled"}

ONLY: list[str] = []  # set by --candidates: time only the candidates whose names start with one of these
# Candidates --tune times only where --candidates names them in full: never run on a GPU, and with tf32x3 products,
# which have ended runs in an illegal memory access (ending the CUDA context, hence every later candidate and size):
# gpu_lease.sh times them in a process of their own (LAST_CANDIDATES).
# tf32x3 in the loops of the kernels in passes (``phased`` at 8 warps, ``phased-fwd``, ``phased-bwd`` at head dim 64,
# ``tf32x3-bwd-phased``) did end runs 13-15 (H100, 2026-11-27); ``launch`` now runs those loops ieee on a device
# (``triton_config.phased_loops_ieee``) unless TITANS_TRITON_PHASED_TF32X3=1, so only with that set are they risky.
RISKY = {"tf32x3-pre", "tf32x3-bwd", "tf32x3-bwd-phased", "tf32x3-wide", "piece-t64"}
if os.environ.get("TITANS_TRITON_PHASED_TF32X3", "0") == "1":
    RISKY |= {"phased", "phased-fwd", "phased-bwd", "phased-w4"}
