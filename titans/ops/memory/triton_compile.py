"""Compiling the Triton kernels of ``impl="triton"`` for a CUDA device without one (Triton's own ptxas): what
``benchmarks/triton_resources.py`` measures (shared memory, registers, spills), and what
``tests/ops/test_memory_triton_compile.py`` checks on machines without CUDA, where the interpreter runs the kernels as
Python and so accepts code the compiler rejects (a host function called from a kernel, say).

Not for use under ``TRITON_INTERPRET=1``: ``triton.jit`` then gives interpreted functions, which do not compile (the
test compiles in a process of its own).
"""

from __future__ import annotations

import dataclasses


def kernel_constants(backward: bool, shape: tuple, cfg, th: int | None = None, precision: str | None = None,
                     act: str = "gelu", norm: bool = True, residual: bool = True, save: bool = True) -> dict:
    """The compile-time constants of the forward or backward kernel of ``shape = (L, BN, DK, DH, DV)`` under launch
    configuration ``cfg``, as ``triton_config.launch`` passes them: tile ``th`` (default the configuration's, at most
    the streamed width) and ``precision`` (default: ieee below ``TF32X3_MIN_TILE``); the forward as training runs it
    (``save``), and with the loops of a kernel in passes ieee where ``launch`` would run them so
    (``triton_config.phased_loops_ieee``) unless ``precision`` is given."""
    from . import triton_config, triton_seq, triton_seq_bwd

    L, BN, DK, DH, DV = shape
    th = th or triton_config.streamed_tile(cfg, L, DK, DH)
    prec = triton_config.PRECISIONS[precision] if precision else triton_config.tile_precision(cfg, th)
    consts = dict(L=L, BN=BN, DK=DK, DH=DH, DV=DV, TH=th, PREC=prec)
    if backward:
        consts.update(triton_seq_bwd.backward_constants(L, BN, DK, DH, cfg, act, norm, residual))
    else:
        consts.update(triton_seq.forward_constants(L, cfg, act, norm, residual, save))
    if not precision and triton_config.phased_loops_ieee(cfg, consts):
        consts["PREC"] = 0
    return consts


def kernel_fn(backward: bool):
    """The ``@triton.jit`` kernel of the one-program-per-head forward or backward."""
    from . import triton_seq, triton_seq_bwd

    return triton_seq_bwd._seq_bwd_kernel if backward else triton_seq._seq_fwd_kernel


def compile_offline(fn, consts: dict, warps: int, stages: int, maxnreg: int | None = None, arch: int = 90):
    """Compile ``@triton.jit`` kernel ``fn`` with ``consts`` for CUDA ``sm_<arch>``; returns Triton's compiled kernel
    (``asm["ptx"]``, ``asm["cubin"]``, ``metadata.shared``). Raises what the compiler raises. It specializes as a
    launch at the benchmark sizes would: 16-byte aligned tensors and integer arguments divisible by 16 (every stride
    there), except those marked ``do_not_specialize`` (without it ptxas chose differently from the lent H100's:
    Triton 3.6, 32 registers where the device's run had 255 or 128)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {n: ("constexpr" if n in consts else "*fp32" if n.endswith("_ptr") else "i32") for n in fn.arg_names}
    fixed = set(getattr(fn, "do_not_specialize", None) or ())
    fixed = {fn.arg_names[x] if isinstance(x, int) else x for x in fixed}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if n not in consts and (n.endswith("_ptr") or n not in fixed)}
    options = {"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)


def compile_kernel(backward: bool, shape: tuple, cfg, th: int | None = None, precision: str | None = None,
                   maxnreg: int | None = None, arch: int = 90):
    """:func:`compile_offline` of the forward or backward kernel of ``shape`` under ``cfg`` (constants:
    :func:`kernel_constants`)."""
    return compile_offline(kernel_fn(backward), kernel_constants(backward, shape, cfg, th, precision), cfg.warps,
                           cfg.stages, maxnreg, arch)


# wgrad<l>: layer l's (triton_piece_bwd.py); zk, norm: with KernelConfig.vsplit
PIECE_PARTS = ("keys", "errors", "tiles", "output", "wgrad0", "wgrad1", "zk", "norm")


def piece_kernel(part: str, shape: tuple, cfg, th: int | None = None, act: str = "gelu", norm: bool = True,
                 residual: bool = True, keep: bool = False, state: bool | None = None):
    """``(kernel, constants)`` of one of the launches of ``triton_piece.py`` or ``triton_piece_bwd.py`` (``part``:
    :data:`PIECE_PARTS`) for ``shape = (2, BN, DK, DH, DV)`` under ``cfg``, as ``triton_config.launch`` passes them;
    ``keep``: as the backward's recomputation runs them, and with ``state`` too as a forward that keeps them
    (``KernelConfig.save``) does."""
    from . import triton_config, triton_piece, triton_piece_bwd, triton_seq

    if part not in PIECE_PARTS:
        raise ValueError(f"part={part!r}: expected one of {PIECE_PARTS}")
    L, BN, DK, DH, DV = shape
    th = th or triton_config.streamed_tile(cfg, L, DK, DH)
    consts = dict(L=L, BN=BN, DK=DK, DH=DH, DV=DV, TH=th, PREC=triton_config.tile_precision(cfg, th))
    if part.startswith("wgrad"):  # its products at the configuration's wgrad precision
        prec = triton_config.tile_precision(dataclasses.replace(cfg, precision=cfg.wgrad_precision), th)
        consts.update(PREC=prec, DI=(DK, DH)[int(part[-1])], DO=(DH, DV)[int(part[-1])])
        return triton_piece_bwd._wgrad_kernel, consts
    if part not in ("keys", "norm"):
        consts.update(ACT=triton_seq._ACT[act], KEEP=keep)
    if part == "tiles":
        consts.update(STATE=not keep if state is None else state)
    if part in ("errors", "output", "zk"):  # as piece_forward_triton's launches
        consts.update(NV=max(1, min(cfg.vsplit, DV // 16)))
    if part == "zk":
        del consts["KEEP"]
    if part in ("errors", "output", "norm"):
        consts.update(NORM=norm, RES=residual)
    return getattr(triton_piece, f"_{part}_kernel"), consts
