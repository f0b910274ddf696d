"""A launch configuration of the Triton kernels (:class:`KernelConfig`), its text form and its checks.

A configuration is the width of the streamed weight tiles (``TH``: hidden columns at depth 2, input rows at depth
1), the warps per program, Triton's software-pipelining stages, and the precision of the matrix products
(``ieee``: float32 on the CUDA cores; ``tf32x3``: three TF32 tensor-core products per float32 product, which keep
about float32's accuracy), with the options below. None of these changes what is computed, only how fast and within
float32 rounding. Which configuration a kernel shape gets, and the launcher, are ``triton_config.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = {"ieee": 0, "tf32x3": 1}


@dataclass(frozen=True)
class KernelConfig:
    tile: int  # TH, a power of two >= 16 (halved at launch while the device refuses it)
    warps: int
    stages: int
    precision: str = "ieee"
    split: bool = False  # forward only: one launch per chunk, the weights' tiles over programs (triton_split.py)
    # Let ptxas give one program the whole register file (``maxnreg``, see :func:`max_registers`). Left alone, the
    # ptxas of Triton 3.6 / 3.8 settled on 32-128 registers per thread for several of these kernels and spilled the
    # rest (docs/benchmarks.md: "Registers").
    maxreg: bool = False
    # With ``maxreg``: how many programs of ``warps`` warps the cap leaves an SM's registers for (1 or 2; ``maxreg2``
    # in the text). Two 8-warp programs at 128 registers put 16 warps on an SM as two independent programs, whose
    # barriers and waits do not hold each other up (the kernels in passes fit two programs' shared memory at both
    # 64-row-chunk depth-2 shapes, at most 112 KB each; benchmarks/results/triton_stages.json). Not yet timed.
    programs: int = 1
    # Forward only, one program per head: at depth 2 read the chunk's q and k again for each weight tile instead of
    # holding them ([chunk, D] each) in registers through the tile loop (at depth 1 only the residual's q is re-read).
    # Compiled offline (Triton 3.6) its spill bytes fall 32% at head dim 128 / 64-row chunks, 12% at head dim 64 /
    # 64-row chunks and 82% at head dim 64 / 16-row ones, and triple at head dim 128 / 16-row ones
    # (benchmarks/results/triton_reload.json; docs/benchmarks.md, "Reading q and k per tile"). Timed in runs 11 and
    # 12 (H100): 3-11% faster at head dim 128 / 64-row chunks (its default there), no faster elsewhere.
    reload: bool = False
    # Depth 2, one program per head: the tile loops in several passes that pass what crosses between them through a
    # per-program scratch in global memory rather than holding it (the forward's: triton_phased.py, the backward's
    # pass C and D: triton_phased_bwd.py). Compiled offline the spill instructions a chunk runs fall 79-100%
    # (forward) and 48-83% (backward) against the defaults at the four depth-2 shapes, and the all-tensor-core
    # backward fits at head dim 128 / 64-row chunks (128 KB), with 79% fewer than the default backward there
    # (docs/benchmarks.md, "in passes" and "Holding less"). Timed in run 14 (H100): the default at depth 2 / head
    # dim 64 / 64-row chunks (both kernels, 16 warps, ieee) and for the backward at head dim 128 / 64-row chunks;
    # with tf32x3 products in their loops they ended runs 13-15 in illegal memory accesses (:data:`TUNED`).
    phased: bool = False
    # Forward only, depth 2: the chunk loop of ``chunk.py`` with each chunk's passes in four launches over every
    # (batch row, head) and hidden tile (``triton_piece.py``) instead of one program per head walking the chunks;
    # the backward then is ``chunk``'s (``piece.piece_backward``, recomputing each piece with those launches). Timed
    # in runs 16-19 (H200): the forward at depth 2 / 64-row chunks where a call has enough (batch row, head) pairs
    # (:data:`PIECE_FROM`, the ``piece-w4`` candidate).
    piece: bool = False
    # With ``piece``: the forward keeps each piece's intermediates for the backward (``piece.ChunkPiece``'s ``save``)
    # instead of the backward recomputing them with the piece kernels (6 [B H, chunk, hidden] + 4 [B H, chunk, head
    # dim] + 2 [B H, chunk, chunk] floats per chunk: at depth 2 / head dim 128 / 64-row chunks 0.9 MB per (batch row,
    # head) and chunk, about as much as the weights and momentum every call in pieces keeps per chunk, 1 MB). Not yet
    # timed.
    save: bool = False
    # With ``piece``: each layer's weight-sized work of the backward (``piece.weight_grads``: the products with the
    # weights and momentum, their gradients' end terms and sums) in one launch that reads each weight-sized tensor
    # once (``triton_piece_bwd.py``) instead of cuBLAS products and about twenty elementwise passes. Not yet timed.
    wgrad: bool = False
    # Its products' precision (``wgrad-tf32x3`` in the text: tensor cores; ``wgrad``: ieee).
    wgrad_precision: str = "ieee"
    # With ``piece``: the passes of one program per (batch row, head) (the keys through the memory, the output) in
    # this many blocks of the output's columns (``v2``, ``v4``, ``v8`` in the text; at least 16 wide), for calls with
    # few pairs, where one program per head leaves most SMs idle; the output's blocks each form ``C_1 * P_1`` again.
    # Not yet timed.
    vsplit: int = 1
    # With ``piece``: the piece's backward (given its intermediates) compiled by ``torch.compile``
    # (``piece_compiled.py``): Inductor fuses its elementwise passes and sums, about 200 launches a piece in eager
    # PyTorch, whose per-operation cost dominates where a call has few (batch row, head) pairs. Excludes ``wgrad``.
    # Not yet timed.
    compiled: bool = False
    # Backward only: form the products of its tile loops that need nothing the loops accumulate before them, in
    # wide tiles, into a scratch buffer the loops read (triton_pre.py; docs/benchmarks.md, "How the products are laid
    # out"). Timed in run 9: the default at the head-dim-128 shapes' backwards.
    pre: bool = False
    # The precision of pass P's products (``pre-tf32x3``: tensor cores there, where the wide tiles leave the registers
    # for them, while the tile loops stay ``precision``). Timed in run 9 (the defaults with pass P use it).
    pre_precision: str = "ieee"

    def __post_init__(self):
        for field in ("precision", "pre_precision", "wgrad_precision"):
            if getattr(self, field) not in PRECISIONS:
                raise ValueError(f"KernelConfig.{field}={getattr(self, field)!r}: expected one of {sorted(PRECISIONS)}")
        if self.pre_precision != "ieee" and not self.pre:
            raise ValueError(f"KernelConfig.pre_precision={self.pre_precision!r} needs pre=True (it is pass P's)")
        if self.wgrad_precision != "ieee" and not self.wgrad:
            raise ValueError(f"KernelConfig.wgrad_precision={self.wgrad_precision!r} needs wgrad=True")
        if self.tile < 16 or self.tile & (self.tile - 1):
            raise ValueError(f"KernelConfig.tile={self.tile}: expected a power of two >= 16")
        if self.programs not in (1, 2) or (self.programs > 1 and not self.maxreg):
            raise ValueError(f"KernelConfig.programs={self.programs}: expected 1, or 2 with maxreg=True")
        if self.vsplit not in (1, 2, 4, 8):
            raise ValueError(f"KernelConfig.vsplit={self.vsplit}: expected 1, 2, 4 or 8")
        for flag, on in (("save", self.save), ("wgrad", self.wgrad), ("vsplit", self.vsplit > 1),
                         ("compiled", self.compiled)):
            if on and not self.piece:
                raise ValueError(f"KernelConfig.{flag}={getattr(self, flag)} needs piece=True (an option of the calls "
                                 "in pieces)")
        if self.compiled and self.wgrad:
            raise ValueError("KernelConfig.compiled=True excludes wgrad=True (a kernel of its own does not run inside "
                             "the compiled backward)")

    @classmethod
    def parse(cls, text: str) -> KernelConfig:
        """``'TH,warps,stages[,precision[,split][,maxreg|,maxreg2][,reload][,phased][,piece[,save]
        [,wgrad|,wgrad-tf32x3][,v2|,v4|,v8][,compiled]][,pre|,pre-tf32x3]]'``, e.g. ``'32,8,1,ieee'``,
        ``'32,4,1,ieee,split'``, ``'16,8,1,ieee,maxreg,pre-tf32x3'``."""
        parts = text.split(",")
        flags = parts[4:]
        if (len(parts) < 3
                or not set(flags) <= {"split", "maxreg", "maxreg2", "reload", "phased", "piece", "save", "wgrad",
                                      "wgrad-tf32x3", "v2", "v4", "v8", "compiled", "pre", "pre-tf32x3"}
                or len(set(flags) & {"v2", "v4", "v8"}) > 1
                or len(set(flags)) != len(flags) or {"pre", "pre-tf32x3"} <= set(flags)
                or {"wgrad", "wgrad-tf32x3"} <= set(flags)
                or {"maxreg", "maxreg2"} <= set(flags)):
            raise ValueError(f"kernel config {text!r}: expected 'tile,warps,stages[,precision[,split][,maxreg|,maxreg2]"
                             "[,reload][,phased][,piece[,save][,wgrad|,wgrad-tf32x3][,v2|,v4|,v8][,compiled]]"
                             "[,pre|,pre-tf32x3]]'")
        pre3 = "pre-tf32x3" in flags
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), *(parts[3:4] or ["ieee"]), split="split" in flags,
                   maxreg="maxreg" in flags or "maxreg2" in flags, programs=2 if "maxreg2" in flags else 1,
                   reload="reload" in flags, phased="phased" in flags, piece="piece" in flags, save="save" in flags,
                   wgrad="wgrad" in flags or "wgrad-tf32x3" in flags,
                   wgrad_precision="tf32x3" if "wgrad-tf32x3" in flags else "ieee",
                   vsplit=next((int(f[1:]) for f in flags if f in ("v2", "v4", "v8")), 1),
                   compiled="compiled" in flags,
                   pre="pre" in flags or pre3,
                   pre_precision="tf32x3" if pre3 else "ieee")

    def __str__(self) -> str:
        pre = ",pre" + ("" if self.pre_precision == "ieee" else f"-{self.pre_precision}") if self.pre else ""
        return (f"{self.tile},{self.warps},{self.stages},{self.precision}" + (",split" if self.split else "")
                + ((",maxreg" + ("2" if self.programs == 2 else "")) if self.maxreg else "")
                + (",reload" if self.reload else "")
                + (",phased" if self.phased else "") + (",piece" if self.piece else "")
                + (",save" if self.save else "")
                + ((",wgrad" + ("" if self.wgrad_precision == "ieee" else f"-{self.wgrad_precision}"))
                   if self.wgrad else "") + (f",v{self.vsplit}" if self.vsplit > 1 else "")
                + (",compiled" if self.compiled else "") + pre)
