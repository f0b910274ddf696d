"""Which launch configuration each Triton kernel shape gets (``triton_seq.py``, ``triton_seq_bwd.py``,
``triton_split.py``, ``triton_piece.py``), and their launcher.

What a configuration is, and its text form, are ``kernel_config.py``'s (:class:`KernelConfig`, re-exported here).
Defaults are per kernel shape ``(backward, L, BN, DK, DH, DV)``. :data:`OVERRIDES` replaces them: the GPU
benchmark sets it to time candidates, and a file of tuned configurations (``benchmarks/gpu_memory_op.py --tune``
writes one) is loaded into it from the environment variable ``TITANS_TRITON_CONFIGS``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re

import torch

from .kernel_config import PRECISIONS, KernelConfig

try:
    import triton
except ImportError:  # the optional extra is not installed: nothing here is called then
    triton = None

logger = logging.getLogger(__name__)


def q_transposed(BN: int, DK: int) -> bool:
    """Whether the depth-2 backward forms layer 0's weight gradients as ``q^T (beta0 dz0)`` rather than
    ``(beta0 q)^T dz0`` (the kernel's ``QT``): where q is large. Triton hoists the latter's two scaled copies of q out
    of the tile loop and keeps them in shared memory: 64 KB at head dim 128 / chunk 64, which then needs 268 KB at one
    stage, more than an H100's 227 (204 KB this way). Only there: at the smaller shapes this form made ptxas settle
    on 32 registers (offline, Triton 3.8), and their launch configurations were measured with the other."""
    return BN * DK > 64 * 64


def streamed_tile(cfg: KernelConfig, L: int, DK: int, DH: int) -> int:
    """The tile a configuration first launches with: its width, at most the streamed width (the hidden width at
    depth 2, the input's at depth 1)."""
    return min(cfg.tile, DH if L == 2 else DK)


def tile_precision(cfg: KernelConfig, th: int, narrow: bool = False) -> int:
    """The kernel constant ``PREC`` of ``cfg`` in tiles ``th`` wide: its precision, but ieee below
    :data:`TF32X3_MIN_TILE` or where its tf32 products were laid out 8 wide (``narrow``, :func:`launch`)."""
    return PRECISIONS[cfg.precision if th >= TF32X3_MIN_TILE and not narrow else "ieee"]


def max_registers(warps: int, programs: int = 1) -> int:
    """Registers per thread that let ``programs`` programs of ``warps`` warps share an SM's 64K registers (at most
    255)."""
    return min(255, 65536 // (32 * warps * programs))


def pre_precision(cfg: KernelConfig) -> int:
    """The kernel constant of pass P's products (``PPREC``): :data:`PRECISIONS` of ``cfg.pre_precision`` (ieee
    without pass P). ``triton_blocks._wide`` keeps ieee for products under 32 wide, as :func:`launch` does for tiles."""
    return PRECISIONS[cfg.pre_precision if cfg.pre else "ieee"]


def tile_width(backward: bool, L: int, BN: int, DK: int, DH: int, DV: int) -> int:
    """Hidden columns (depth 2) or input rows (depth 1) per streamed tile: the widest whose shared memory fit an
    H100's 227 KB when compiled for sm_90 with Triton 3.8 and 3 stages (e.g. depth 2, head dim 64, chunk 16: forward
    64 (161 KB), backward 32 (164 KB); ``benchmarks/triton_resources.py``)."""
    width = DH if L == 2 else DK
    small = BN <= 16 and max(DK, DV) <= 64
    th = (32 if small else 16) if backward else (64 if small else 32 if BN <= 16 or max(DK, DV) <= 64 else 16)
    return min(width, th)


# Measured on an H100 (Triton 3.6; ``benchmarks/gpu_memory_op.py --tune``, 8 heads, 131K tokens per call, runs 3
# to 6, 9, 11, 12 and 14 of docs/benchmarks.md; the files are benchmarks/results/gpu_triton_configs_h100.json and
# gpu_memory_op_h100_run{9,11,12,14}*.json): the fastest candidate per kernel shape, (backward, L, BN, DK, DH, DV) ->
# "tile,warps,stages,precision[,maxreg][,pre[-tf32x3]]" (KernelConfig.parse).
TUNED = {
    (False, 2, 16, 64, 256, 64): "64,8,1,ieee", (True, 2, 16, 64, 256, 64): "32,8,1,ieee",
    (False, 2, 64, 64, 256, 64): "32,16,1,ieee,maxreg,phased",  # run 14
    (True, 2, 64, 64, 256, 64): "32,16,1,ieee,maxreg,phased,pre",
    (False, 1, 16, 64, 64, 64): "64,8,1,ieee", (True, 1, 16, 64, 64, 64): "32,4,3,ieee",
    (False, 1, 64, 64, 64, 64): "32,16,1,ieee", (True, 1, 64, 64, 64, 64): "16,8,1,ieee",
    (False, 2, 16, 128, 512, 128): "32,8,2,ieee", (True, 2, 16, 128, 512, 128): "16,8,1,ieee,pre-tf32x3",
    (False, 1, 16, 128, 128, 128): "32,8,1,ieee", (True, 1, 16, 128, 128, 128): "16,4,3,ieee",  # runs 5, 6
    (False, 1, 64, 128, 128, 128): "16,16,2,ieee", (True, 1, 64, 128, 128, 128): "16,8,1,ieee,maxreg,pre-tf32x3",
    (False, 2, 64, 128, 512, 128): "32,8,1,tf32x3,maxreg,reload",  # runs 11, 12
    (True, 2, 64, 128, 512, 128): "16,8,1,ieee,maxreg,phased,pre-tf32x3",  # run 14
}
# Run 9 (H100, 2K tokens, batch 64, 2026-11-27) tuned the four 2K sizes where ``triton`` had been slower than ``chunk``
# over the default, the forward with two stages, pass P (``pre``) and the tensor-core backwards. At depth 1 / head
# dim 128 / chunk 64 and depth 2 / head dim 128 / chunk 64 the fastest backward was the all-tensor-core candidate,
# which ran there as 16-wide tiles (the shared memory: ieee loops, pass P in tf32x3); the table gives what ran.
# tf32x3 products in 16-wide tiles ended in an illegal memory access both times they ran at depth 2 on the H100
# (the backward at head dim 64 and the forward at head dim 128, 64-row chunks; Triton 3.6), which ends the process's
# CUDA context; they ran and agreed with ``chunk`` at depth 1 in a 16-wide tile and in 32- and 64-wide tiles, and were
# the fastest only in a 32-wide one. So 16-wide tiles use ieee. What the two crashed kernels share, compiled offline
# as those runs compiled them, is TF32 tensor-core products 8 columns wide (wgmma m64n8k8), which none of the eight
# that ran has (benchmarks/results/triton_wgmma.json); :func:`launch` checks every tf32x3 kernel for them
# (:func:`narrow_tf32`) before its first run, and no tuning candidate has them at 32-wide tiles.
# Runs 11 and 12 (H100, 2K, batch 64): the depth-2 / head-dim-128 / 64-row-chunk forward in 32-wide tf32x3 tiles
# (the ``tf32x3-wide`` candidate, 224 KB of shared memory) 392K tokens/s against 269K for the 16-wide ieee one, and
# reading q and k per tile (``reload``) 402K against 391K in one process; both passed the gpu tests there.
# Run 14 (H100, 2K, batch 64): the kernels in passes (KernelConfig.phased). At depth 2 / head dim 64 / 64-row chunks
# both at 16 warps with the register cap, every product ieee (the ``phased-w16`` candidate, whose tf32x3 products the
# compiler laid out 8 wide: launch ran them ieee, which is what these strings say): forward 1,974K tokens/s against
# the 8-warp tf32x3 default's 1,570K, forward+backward 488K against 395K. At head dim 128 the backward in passes at
# 8 warps (``phased-bwd``): forward+backward 114K against 94K. Both passed the gpu tests (fp32 and bf16). With tf32x3
# products in their loops the kernels in passes ended in an illegal memory access or failed the gpu tests at both
# shapes, without 8-wide products (runs 13-15: docs/benchmarks.md).
TF32X3_MIN_TILE = 32
# Where the forward runs as chunk's loop over triton_piece.py's kernels (KernelConfig.piece) rather than as one
# program per head (the shape's TUNED forward): (L, BN, DK, DH, DV) -> (configuration, the fewest (batch row, head)
# pairs of a call it is used for). Measured on an H200 (runs 17-19, 2026-11-27; docs/benchmarks.md; 8 heads, 8K
# tokens at batch 16 and 2K at batch 64, i.e. 128 and 512 pairs), the ``piece-w4`` candidate against the TUNED
# forward: at head dim 128 / 64-row chunks 2.6-3.3x faster forward and 1.4-2.6x forward+backward at both; at head dim
# 64 / 64-row chunks 2.0x forward at 512 pairs (forward+backward 0.9-0.93x, both above chunk's), slower at 128 (the
# forward 0.57-0.79x, forward+backward 0.30-0.36x). Fewer pairs than measured keep the TUNED forward. (Those
# forward+backward figures kept every chunk's state; calls in pieces now run in checkpointed segments past
# triton_op.save_budget, as the one-program-per-head kernels do: not yet timed.)
PIECE_FROM = {
    (2, 64, 128, 512, 128): ("32,4,1,tf32x3,maxreg,piece", 128),
    (2, 64, 64, 256, 64): ("32,4,1,tf32x3,maxreg,piece", 512),
}
# Pipeline stages at most with pass P (KernelConfig.pre): at depth 2 / head dim 64 / 64-row chunks, whose default
# backward has 3 stages, pass P's scratch reads need 232 KB of shared memory at 3 (more than an H100's 227) and 188
# KB at 2 (offline compile, Triton 3.6; benchmarks/triton_resources.py --candidates 64,2,64 --names pre).
PRE_MAX_STAGES = 2
# The backward with every product on the tensor cores: 32-wide tiles (16-wide ones run tf32x3 as ieee, above), the
# register cap, pass P in tf32x3 too. Compiled offline (benchmarks/triton_resources.py --candidates ... --names
# tf32x3-bwd) it spills about twice the bytes of the default at depth 2 / head dim 64 / 64-row chunks, and at head
# dim 128 with 64-row chunks needs more shared memory than an H100 has (launch then halves the tile, and the loops
# run ieee). The GPU benchmark's tf32x3-bwd candidate: the fastest backward at depth 2 / head dim 64 / chunk 64 in
# run 9 (and, as 16-wide tiles, at depth 1 / head dim 128 / chunk 64).
TENSOR_CORE_BACKWARD = "32,8,1,tf32x3,maxreg,pre-tf32x3"


def default_config(backward: bool, L: int, BN: int, DK: int, DH: int, DV: int, capability=(9, 0)) -> KernelConfig:
    """The configuration a kernel shape launches with: :data:`TUNED`'s where it was measured, at depth 2 with head dim
    128 or more and 64-row chunks what fits and spills least offline
    (below), else the widest tile of :func:`tile_width` with 8 warps and no software pipelining (the fastest, or
    within 2% of it, for 7 of the 10 kernels measured; with 4 warps or 3 stages ptxas often settled on 32 registers
    and spilled nearly everything, 2.5-13x slower), keeping 3 stages for the backward of 64-row chunks (faster at the
    one such shape measured at depth 2). ``capability``: the CUDA device's; ``tf32x3`` needs TF32 tensor cores (8.0
    or newer): ``ieee`` below."""
    key = (backward, L, BN, DK, DH, DV)
    if key in TUNED:
        cfg = KernelConfig.parse(TUNED[key])
    elif L == 2 and BN >= 64 and DK >= 128:
        # Head dim 128 is in TUNED now (run 9: this, with pass P); head dim 256 is not measured. Compiled offline
        # (Triton 3.8, benchmarks/triton_resources.py, head dim 128 / chunk 64): the backward needs 304 KB of shared
        # memory at 3 stages (204 KB at 1), and ptxas settles on 32 registers for both kernels with 35 KB (forward)
        # and 108 KB (backward) of spills per thread unless capped (255 registers: 6 and 23 KB).
        cfg = KernelConfig(16, 8, 1, maxreg=True)
    else:
        cfg = KernelConfig(tile_width(*key), 8, 3 if backward and BN >= 64 else 1)
    return for_device(cfg, capability)


def piece_default(L: int, BN: int, DK: int, DH: int, DV: int, programs: int) -> KernelConfig | None:
    """:data:`PIECE_FROM`'s configuration of a forward shape where a call has at least its fewest (batch row, head)
    pairs (``programs``), as this device can run it; else None (one program per head)."""
    text, least = PIECE_FROM.get((L, BN, DK, DH, DV), (None, 0))
    if text is None or programs < least:
        return None
    cap = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0)
    return for_device(KernelConfig.parse(text), cap)


def for_device(cfg: KernelConfig, capability) -> KernelConfig:
    """``cfg`` as a device of CUDA ``capability`` can run it: tf32x3 products (for the loops or pass P) need TF32
    tensor cores (8.0 or newer) and run ieee below that."""
    if tuple(capability) < (8, 0):
        cfg = dataclasses.replace(cfg, precision="ieee", pre_precision="ieee")
    return cfg


OVERRIDES: dict[tuple, KernelConfig] = {}  # (backward, L, BN, DK, DH, DV) -> the configuration to use instead
LAUNCHED: dict[tuple, dict] = {}  # (key, config) -> tile, registers, spills, shared memory of its first launch
_LOADED: list[str] = []  # the TITANS_TRITON_CONFIGS file already read


def save_configs(path: str, configs: dict[tuple, KernelConfig]) -> None:
    """Write ``{key: config}`` as JSON rows ``{"backward", "L", "BN", "DK", "DH", "DV", "config"}``."""
    rows = [dict(zip(("backward", "L", "BN", "DK", "DH", "DV"), key), config=str(cfg)) for key, cfg in configs.items()]
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


def load_configs(path: str) -> dict[tuple, KernelConfig]:
    """Read :func:`save_configs`' file (a bad file raises, naming it and the row)."""
    with open(path) as f:
        rows = json.load(f)
    out = {}
    for i, row in enumerate(rows):
        try:
            key = (bool(row["backward"]), *(int(row[k]) for k in ("L", "BN", "DK", "DH", "DV")))
            out[key] = KernelConfig.parse(row["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i} ({row!r}): {exc}") from exc
    return out


def config_for(backward: bool, L: int, BN: int, DK: int, DH: int, DV: int) -> KernelConfig:
    """The configuration of a kernel shape: :data:`OVERRIDES` (with ``TITANS_TRITON_CONFIGS`` read into it once),
    else :func:`default_config`; either as this device can run it (:func:`for_device`: a file tuned on an H100 may be
    loaded on an older card)."""
    path = os.environ.get("TITANS_TRITON_CONFIGS")
    if path and path not in _LOADED:
        _LOADED.append(path)
        for key, cfg in load_configs(path).items():
            OVERRIDES.setdefault(key, cfg)
    key = (backward, L, BN, DK, DH, DV)
    cap = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0)
    if key in OVERRIDES:
        return for_device(OVERRIDES[key], cap)
    return default_config(*key, capability=cap)


def narrow_tf32(ptx: str) -> bool:
    """Whether a kernel's PTX has TF32 warp-group products 8 columns wide (``wgmma ... m64n8k8 ... tf32``). Both
    kernels that ended an H100 run in an illegal memory access had them, none of the eight tf32x3 kernels that ran
    did (compiled offline as the runs compiled them: ``benchmarks/triton_resources.py --wgmma``), and the same fault
    at that width has been reported upstream (triton-lang/triton#10629)."""
    return "8" in TF32_WGMMA.findall(ptx)


# A TF32 warp-group product (Hopper's wgmma) in PTX; its group is the instruction's width N.
TF32_WGMMA = re.compile(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k8\.f32\.tf32\.tf32")


def phased_loops_ieee(cfg: KernelConfig, consts: dict) -> bool:
    """Whether a kernel in passes (the constant ``PHASED``) runs its tile loops' products ieee although ``cfg`` asks
    for tf32x3: on a device, unless ``TITANS_TRITON_PHASED_TF32X3=1``. Every H100 launch of tf32x3 products in
    those loops ended in an illegal memory access (runs 13-15, Triton 3.6; docs/benchmarks.md), without the 8-wide
    products of :func:`narrow_tf32`; pass P's tf32x3 products in the same kernels ran and agreed with ``chunk``, so
    they stay. Triton's interpreter runs them as asked (the CPU tests cover that code)."""
    return (bool(consts.get("PHASED")) and cfg.precision != "ieee"
            and os.environ.get("TRITON_INTERPRET", "0") != "1"
            and os.environ.get("TITANS_TRITON_PHASED_TF32X3", "0") != "1")


def launch(kernel, grid, args, *, backward: bool, L: int, BN: int, DK: int, DH: int, DV: int,
           cfg: KernelConfig | None = None, part: str | None = None, **consts):
    """Launch ``kernel`` with ``cfg`` (default: its shape's configuration), halving the tile while the device refuses
    it (``OutOfResources``); ``grid``: a tuple, or a function of the tile width that returns one. Before the first
    launch of a configuration with tf32x3 products (``PREC`` or pass P's ``PPREC``) it compiles the kernel without
    running it and, where the compiler laid a product out 8 columns wide on the tensor cores (:func:`narrow_tf32`),
    runs every product ieee instead, with a warning (``LAUNCHED`` records both, and whether there was PTX to read);
    the tile loops of the kernels in passes run ieee too (:func:`phased_loops_ieee`, with a warning). Returns
    Triton's compiled kernel (``n_regs``, ``n_spills``, ``metadata.shared``). ``part``: which of several kernels of
    one shape and configuration this is (``triton_piece.py``'s four), each then with its own ``LAUNCHED`` record
    (keyed ``(key, cfg, part)``)."""
    key = (backward, L, BN, DK, DH, DV)
    cfg = cfg or config_for(*key)
    slot = (key, cfg) if part is None else (key, cfg, part)
    first = slot not in LAUNCHED
    th = streamed_tile(cfg, L, DK, DH) if first else LAUNCHED[slot]["tile"]
    narrow = False if first else LAUNCHED[slot]["narrow tf32"]
    read = None  # whether the tf32 check saw PTX (None: no check; the interpreter has none)
    loops_ieee = phased_loops_ieee(cfg, consts)
    if first and loops_ieee:
        logger.warning("triton: %s kernel %s, config %s: tf32x3 products in the loops of the kernels in passes ended "
                       "every H100 run in an illegal memory access (Triton 3.6); running them ieee "
                       "(TITANS_TRITON_PHASED_TF32X3=1 runs them as configured)",
                       "backward" if backward else "forward", key[1:], cfg)
    while True:
        try:
            prec = 0 if loops_ieee else tile_precision(cfg, th, narrow)
            extra = {"maxnreg": max_registers(cfg.warps, cfg.programs)} if cfg.maxreg else {}
            call = dict(L=L, BN=BN, DK=DK, DH=DH, DV=DV, TH=th, PREC=prec, num_warps=cfg.warps,
                        num_stages=cfg.stages, **extra, **consts)
            if narrow and "PPREC" in call:
                call["PPREC"] = PRECISIONS["ieee"]
            g = grid(th) if callable(grid) else grid
            if first and not narrow and (prec or call.get("PPREC")):
                # Compiled, not run (the interpreter returns None): an illegal memory access would end the CUDA
                # context, and with it the caller's process.
                ptx = getattr(kernel.warmup(*args, grid=g, **call), "asm", {}).get("ptx", "")
                read = bool(ptx)
                if narrow_tf32(ptx):
                    logger.warning("triton: %s kernel %s, config %s: the compiler laid tf32 products out 8 wide on "
                                   "the tensor cores (illegal memory accesses on an H100, Triton 3.6); running its "
                                   "products ieee", "backward" if backward else "forward", key[1:], cfg)
                    narrow = True
                    continue
            compiled = kernel[g](*args, **call)
        except triton.runtime.errors.OutOfResources:
            if th <= 16:
                raise
            th //= 2
            continue
        if first:  # the tile that launched is the one to start from next time
            LAUNCHED[slot] = {"tile": th, "regs": getattr(compiled, "n_regs", None),
                              "spills": getattr(compiled, "n_spills", None),
                              "shared": getattr(getattr(compiled, "metadata", None), "shared", None),
                              "narrow tf32": narrow, "ptx read": read, "phased loops ieee": loops_ieee}
        return compiled
