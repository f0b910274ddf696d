"""Triton forward of the chunk form over a whole sequence: one launch, one program per (batch row, head).

Each program walks the chunks of its sequence in order (SPEC §1.3: every chunk takes its gradients at the weights
before it, so chunk ``c + 1`` needs chunk ``c``'s end state), and for each chunk computes what
``piece.piece_forward`` does: the keys through the memory and their errors ``delta_l``, the queries through the
per-token weights without forming them, the weights and momentum after the chunk. The memory does not fit on chip
at the paper's sizes (depth 2, head dim 64, expansion 4: 256 KB of float32 weights and momentum per head), so it
lives in global memory (L2-resident for a chunk's duration) and is streamed in tiles of ``TH`` columns of the hidden
width (depth 2) or ``TH`` rows of the input (depth 1); only ``[chunk, D]`` activations stay in registers.

State buffers are ``[B*H, NSLOT, d_in, d_out]`` float32: the chunk reads slot ``c % NSLOT`` and writes slot
``(c + 1) % NSLOT``. With ``NSLOT = N + 1`` every chunk's starting state is kept for the backward
(``triton_seq_bwd.py``), and with it (``SAVE``) the activations it would otherwise recompute over every tile
(:func:`saved_width`); with ``NSLOT = 2`` (no gradient wanted) two slots ping-pong. Within a program the chunks
are separated by a barrier, so the next chunk's loads see this chunk's stores.

All arithmetic is float32 (``tl.dot`` in ``ieee``, or ``tf32x3`` where ``triton_config`` says so: about float32's
accuracy on the tensor cores); ``q, k, v`` may be bf16/fp16. Launch configurations: ``triton_config.py``; the
kernels' building blocks (activations, tiles, LayerNorm, the keys' path): ``triton_blocks.py``.
Chunks shorter than 16 tokens are padded to 16 (zero coefficients: padded rows neither write nor are written).
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F

from .triton_config import config_for, launch
from .triton_phased import scratch_width

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the optional extra is not installed
    HAS_TRITON = False

_ACT = {"gelu": 0, "silu": 1, "relu": 2}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supported(q: torch.Tensor, params, activation: str) -> str | None:
    """``None`` when the kernels cover this call, else the reason they do not."""
    if not HAS_TRITON:
        return "triton is not installed (pip install 'titans[triton]')"
    if not (q.is_cuda or interpreting()):
        return f"tensors on {q.device.type} and TRITON_INTERPRET is not set"
    if len(params) > 2:
        return f"memory depth {len(params)} (the kernels cover depth 1 and 2)"
    if activation not in _ACT:
        return f"activation {activation!r}"
    dims = [params[0].shape[-2]] + [w.shape[-1] for w in params]
    if any(d < 16 or d & (d - 1) or d > 1024 for d in dims):
        return f"memory dims {dims} (the kernels need powers of two in [16, 1024])"
    if dims[0] > 256 or dims[-1] > 256:
        return f"head dims {dims[0]}, {dims[-1]} (the kernels hold a chunk's [chunk, D] rows on chip: D <= 256)"
    return None


def block_rows(chunk: int) -> int:
    """Rows per chunk tile: the chunk size rounded up to a power of two >= 16 (``tl.dot`` needs 16)."""
    return max(16, 1 << (chunk - 1).bit_length())


def dims(q, v, W, chunk: int):
    """``(B, H, T, DK, DV, L, N, BN, BH, DH)`` of a call: q ``[B, H, T, DK]``, v ``[..., DV]``, the ``L`` weights (or
    their state buffers) ``W``, ``N`` chunks of ``BN`` padded rows, ``DH`` the hidden width (``DV`` at depth 1)."""
    B, H, T, DK = q.shape
    DV, L = v.shape[-1], len(W)
    return B, H, T, DK, DV, L, -(-T // chunk), block_rows(chunk), B * H, W[0].shape[-1] if L == 2 else DV


if HAS_TRITON:
    from .triton_blocks import (
        _act,
        _act_bwd,
        _coefs,
        _errors,
        _head_rows,
        _keys,
        _ln,
        _mm,
        _norm_params,
        _put,
        _put_square,
        _rows,
        _saved,
        _square,
        _tile,
    )
    from .triton_phased import (
        _first_layer,
        _first_state,
        _keep_errors,
        _kept_errors,
        _keys_kept,
        _second_layer,
        _second_state,
    )

    # Sizes are not specialized (one compiled kernel serves every length and batch).
    @triton.jit(do_not_specialize=["T", "N", "NSLOT", "BH", "H", "CHUNK"])
    def _seq_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                        so_b, so_h, so_t, bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                        W0_ptr, S0_ptr, W1_ptr, S1_ptr, lnw_ptr, lnb_ptr, acts_ptr, scr_ptr, T, N, NSLOT, BH, H,
                        CHUNK, L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr,
                        DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
                        PREC: tl.constexpr, SAVE: tl.constexpr, RELOAD: tl.constexpr, PHASED: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # 64-bit offsets: the saved states pass 2**31 elements at 8K x 128
        b, h, qb, kb, vb = _head_rows(pid, H, q_ptr, sq_b, sq_h, k_ptr, sk_b, sk_h, v_ptr, sv_b, sv_h)
        rn = tl.arange(0, BN)
        rv = tl.arange(0, DV)
        ob = o_ptr + b * so_b + h * so_h
        lw, lb = _norm_params(lnw_ptr, lnb_ptr, h, DV, NORM)
        D0: tl.constexpr = DH if L == 2 else DV
        scr = scr_ptr + pid * (3 * BN * DH + BN * DV + BN * BN)  # PHASED: this program's (triton_phased.scratch_width)
        for c in range(N):
            t = c * CHUNK + rn
            mask = (rn < CHUNK) & (t < T)
            q = _rows(qb, sq_t, t, mask, 0, DK)
            k = _rows(kb, sk_t, t, mask, 0, DK)
            v = _rows(vb, sv_t, t, mask, 0, DV)
            si = pid * NSLOT + c % NSLOT
            so = pid * NSLOT + (c + 1) % NSLOT
            W0i = W0_ptr + si * DK * D0
            S0i = S0_ptr + si * DK * D0
            W0o = W0_ptr + so * DK * D0
            S0o = S0_ptr + so * DK * D0
            W1i = W1_ptr + si * DH * DV
            S1i = S1_ptr + si * DH * DV
            W1o = W1_ptr + so * DH * DV
            S1o = S1_ptr + so * DH * DV
            beta0, gamma0, C0, cn0, mn0, bn0, gn0, hn0 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                                                               pid * N + c, BN)
            if PHASED:
                zk = _keys_kept(kb, sk_t, t, mask, W0i, W1i, scr, BN, DK, DH, DV, TH, ACT, PREC)
            else:
                zk = _keys(k, kb, sk_t, t, mask, W0i, W1i, L, BN, DK, DH, DV, TH, ACT, PREC)
            if SAVE:
                _put(_saved(acts_ptr, pid * N + c, 0, L, NORM, BN, DV), 0, 0, DV, zk, BN, DV)
            dlast, e, xk, rk = _errors(zk, k, v, lw, lb, mask, DV, NORM, RES)
            CP0 = C0 * _mm(q, tl.trans(k), PREC)
            if L == 2:
                beta1, gamma1, _, cn1, mn1, bn1, gn1, hn1 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                                                                  (BH + pid) * N + c, BN)
            if L == 2 and PHASED:  # KernelConfig.phased: the loop below in five passes (triton_phased.py)
                _keep_errors(scr, dlast, CP0, BN, DH, DV)
                tl.debug_barrier()  # pass 2 reads z0, delta_L, C_0 P_0 as other threads of this program wrote them
                _first_layer(qb, sq_t, beta0, gamma0, W0i, S0i, W1i, scr, t, mask, BN, DK, DH, DV, TH, ACT, PREC)
                tl.debug_barrier()  # passes 3-5 read delta_0 and x1 as other threads of this program wrote them
                _first_state(kb, sk_t, t, mask, cn0, mn0, bn0, gn0, hn0, W0i, S0i, W0o, S0o, scr, BN, DK, DH, TH,
                             PREC)
                z, P1 = _second_layer(beta1, gamma1, W1i, S1i, scr, BN, DH, DV, TH, ACT, PREC)
                _second_state(cn1, mn1, bn1, gn1, hn1, W1i, S1i, W1o, S1o, scr, BN, DH, DV, TH, ACT, PREC)
                dlast = _kept_errors(scr, BN, DH, DV)  # read again: not held through the passes
            elif L == 2:
                # beta X W + gamma X S in one accumulator, (beta X) W + (gamma X) S (registers held through the
                # loop), each product its own `acc += dot`, which Triton fuses into the product (a sum of products or
                # a difference first takes a [BN, DV] temporary). At depth 1 two sums with one operand spilled less
                # (benchmarks/triton_resources.py --registers).
                z = tl.zeros([BN, DV], dtype=tl.float32)
                P1 = tl.zeros([BN, BN], dtype=tl.float32)
                for j in range(DH // TH):
                    G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
                    S0j = _tile(S0i, 0, j * TH, DH, DK, TH)
                    W1j = _tile(W1i, j * TH, 0, DV, TH, DV)
                    S1j = _tile(S1i, j * TH, 0, DV, TH, DV)
                    if RELOAD:  # KernelConfig.reload: read again (L1/L2) rather than held through the loop
                        kt = _rows(kb, sk_t, t, mask, 0, DK)
                        qt = _rows(qb, sq_t, t, mask, 0, DK)
                    else:
                        kt = k
                        qt = q
                    z0 = _mm(kt, G0j, PREC)
                    a1 = _act(z0, ACT)
                    d0 = _act_bwd(_mm(dlast, tl.trans(W1j), PREC), z0, ACT)
                    zeta0 = (beta0[:, None] * _mm(qt, G0j, PREC) + gamma0[:, None] * _mm(qt, S0j, PREC)
                             - _mm(CP0, d0, PREC))
                    x1 = _act(zeta0, ACT)
                    _put(W0o, 0, j * TH, DH, bn0 * G0j + gn0 * S0j - _mm(tl.trans(kt), cn0[:, None] * d0, PREC),
                         DK, TH)
                    _put(S0o, 0, j * TH, DH, hn0 * S0j - _mm(tl.trans(kt), mn0[:, None] * d0, PREC), DK, TH)
                    z += _mm(beta1[:, None] * x1, W1j, PREC)
                    z += _mm(gamma1[:, None] * x1, S1j, PREC)
                    P1 += _mm(x1, tl.trans(a1), PREC)
                    _put(W1o, j * TH, 0, DV, bn1 * W1j + gn1 * S1j - _mm(tl.trans(a1), cn1[:, None] * dlast, PREC),
                         TH, DV)
                    _put(S1o, j * TH, 0, DV, hn1 * S1j - _mm(tl.trans(a1), mn1[:, None] * dlast, PREC), TH, DV)
            else:
                xw = tl.zeros([BN, DV], dtype=tl.float32)
                xs = tl.zeros([BN, DV], dtype=tl.float32)
                for j in range(DK // TH):
                    qj = _rows(qb, sq_t, t, mask, j * TH, TH)
                    kj = _rows(kb, sk_t, t, mask, j * TH, TH)
                    Wj = _tile(W0i, j * TH, 0, DV, TH, DV)
                    Sj = _tile(S0i, j * TH, 0, DV, TH, DV)
                    xw += _mm(qj, Wj, PREC)
                    xs += _mm(qj, Sj, PREC)
                    _put(W0o, j * TH, 0, DV, bn0 * Wj + gn0 * Sj - _mm(tl.trans(kj), cn0[:, None] * dlast, PREC),
                         TH, DV)
                    _put(S0o, j * TH, 0, DV, hn0 * Sj - _mm(tl.trans(kj), mn0[:, None] * dlast, PREC), TH, DV)
                z = beta0[:, None] * xw + gamma0[:, None] * xs - _mm(CP0, dlast, PREC)
            if L == 2:
                # C_1 read here, not with the layer's other coefficients: it would be held through the loop.
                z -= _mm(_square(C_ptr, (BH + pid) * N + c, BN) * P1, dlast, PREC)
                if SAVE:
                    _put_square(_saved(acts_ptr, pid * N + c, 2, L, NORM, BN, DV), 0, P1, BN)
            if NORM:
                if SAVE:  # for the norm's backward
                    _put(_saved(acts_ptr, pid * N + c, 1, L, NORM, BN, DV), 0, 0, DV, z, BN, DV)
                xq, rq = _ln(z, DV)
                z = xq * lw[None, :] + lb[None, :]
            if RES:
                if RELOAD or PHASED:  # noqa: SIM108 (a static if on constexprs: Triton compiles one branch)
                    z = z + _rows(qb, sq_t, t, mask, 0, DK)
                else:
                    z = z + q
            tl.store(ob + t[:, None] * so_t + rv[None, :], z.to(o_ptr.dtype.element_ty), mask=mask[:, None])
            tl.debug_barrier()  # the next chunk reads the state this one wrote (other threads of this program)


# With fewer (batch row, head) programs than half the device's SMs, the one-program-per-head forward leaves most of
# the device idle (one program fills an SM). Then, for the kernel shapes (backward, L, BN, DK, DH, DV) where it was
# measured faster (an H200 at 32K tokens, batch 4, 8 heads: docs/benchmarks.md, run 7), the forward runs split over
# programs (triton_split.py): depth 2 / head dim 128 / chunk 16 2.8x, depth 2 / head dim 64 / chunk 64 1.15x. At the
# other shapes measured it was slower (depth 1: 0.44-0.65x; depth 2 / head dim 64 / chunk 16: 0.73x), its one launch
# per chunk costing more than the idle SMs.
SPLIT_FEW = {(False, 2, 16, 128, 512, 128), (False, 2, 64, 64, 256, 64)}
# Overrides the rule for every shape: split when there are fewer programs than this (0: never unless configured).
SPLIT_BELOW: int | None = None


def split_below(device: torch.device, key: tuple) -> int:
    """Split the forward of kernel shape ``key`` when it has fewer (batch row, head) programs than this."""
    if SPLIT_BELOW is not None:
        return SPLIT_BELOW
    if device.type != "cuda" or key not in SPLIT_FEW:  # the interpreter: only where configured
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count // 2


def pack_coefficients(coef, BN: int):
    """The kernels' coefficient layout from per-chunk coefficients (differentiable torch ops).

    ``coef``: ``(beta, gamma [L, BH, N, b], C [L, BH, N, b, b], beta_n, gamma_n, h_n [L, BH, N], c_n, m_n
    [L, BH, N, b])`` -> ``(beta|gamma [L, BH, N, 2, BN], C [L, BH, N, BN, BN], c_n, m_n [L, BH, N, BN],
    beta_n|gamma_n|h_n [L, BH, N, 3])``, float32, zero-padded from ``b`` to ``BN`` rows.
    """
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = (x.float() for x in coef)
    p = BN - beta.shape[-1]
    bg = F.pad(torch.stack([beta, gamma], -2), (0, p)).contiguous()
    Cp = F.pad(C, (0, p, 0, p)).contiguous()
    scal = torch.stack([beta_n, gamma_n, h_n], -1).contiguous()
    return bg, Cp, F.pad(c_n, (0, p)).contiguous(), F.pad(m_n, (0, p)).contiguous(), scal


def saved_width(L: int, BN: int, DV: int, norm: bool) -> int:
    """Floats of saved activations per chunk and (batch row, head) (``triton_blocks._saved``): the keys through
    the memory and, with the norm, the output before it (``[BN, DV]`` each), and at depth 2 ``P_1`` (``[BN, BN]``)."""
    return (1 + norm) * BN * DV + (L - 1) * BN * BN


def forward_args(q, k, v, o, packed, Ws, Ss, norm, acts) -> tuple:
    """The leading arguments both forward kernels take: tokens and output with their strides, the packed
    coefficients, the state buffers of both layers (layer 0's twice at depth 1), the norm's parameters and the
    saved activations' buffer (any float32 tensor when nothing is saved)."""
    lnw, lnb = (norm[0].contiguous(), norm[1].contiguous()) if norm is not None else (Ws[0], Ws[0])
    i1 = 1 if len(Ws) == 2 else 0
    return (q, k, v, o, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2), *packed,
            Ws[0], Ss[0], Ws[i1], Ss[i1], lnw, lnb, acts)


def seq_forward_triton(q, k, v, packed, W, S, norm, act, residual, chunk, save):
    """Run the forward kernel over ``N`` chunks of a sequence from a chunk boundary.

    Args:
        q, k ``[B, H, T, Dk]``, v ``[B, H, T, Dv]`` (unit last stride); ``packed``: :func:`pack_coefficients`'s
        output for the ``N = ceil(T / chunk)`` chunks; W, S: L tensors ``[B, H, d_in, d_out]``, the weights and
        momentum before the first token; ``save``: keep what the backward needs, every chunk's starting state and
        its activations.
    Returns:
        ``(o [B, H, T, Dv], Ws, Ss, acts)`` with ``Ws``, ``Ss``: L float32 buffers ``[B*H, NSLOT, d_in, d_out]``
        (the final state is slot ``N % NSLOT``); ``acts``: float32 ``[B*H, N, saved_width]`` when ``save``, else
        None.
    """
    B, H, T, DK, DV, L, N, BN, BH, DH = dims(q, v, W, chunk)
    nslot = N + 1 if save else 2
    Ws, Ss = [], []
    for w, s in zip(W, S):
        bw = torch.empty(BH, nslot, *w.shape[-2:], dtype=torch.float32, device=w.device)
        bs = torch.empty_like(bw)
        bw[:, 0] = w.reshape(BH, *w.shape[-2:])
        bs[:, 0] = s.reshape(BH, *s.shape[-2:])
        Ws.append(bw), Ss.append(bs)
    o = torch.empty(B, T, H, DV, dtype=v.dtype, device=v.device).transpose(1, 2)  # stored as [B, T, H, Dv]
    acts = None
    if save:
        acts = torch.empty(BH, N, saved_width(L, BN, DV, norm is not None), dtype=torch.float32, device=q.device)
    fargs = forward_args(q, k, v, o, packed, Ws, Ss, norm, Ws[0] if acts is None else acts)
    cfg = config_for(False, L, BN, DK, DH, DV)
    if cfg.split or split_below(q.device, (False, L, BN, DK, DH, DV)) > BH:
        from .triton_split import split_forward_triton  # imports this module

        if not cfg.split:  # as measured (run 7): ieee products, one stage, 8 warps without the register cap (the
            # tuned forward may have two stages, or 16 warps in passes: run 14's at depth 2 / head dim 64 / chunk 64)
            cfg = dataclasses.replace(cfg, precision="ieee", stages=1, split=True, warps=8, maxreg=False, programs=1,
                                      reload=False, phased=False)
        split_forward_triton(fargs, q, v, Ws, act, residual, chunk, cfg, norm is not None, save)
        return o, Ws, Ss, acts
    consts = forward_constants(L, cfg, act, norm is not None, residual, save)
    scr = Ws[0]  # any float32 tensor where there are no passes
    if consts["PHASED"]:
        scr = torch.empty(BH, scratch_width(BN, DH, DV), dtype=torch.float32, device=q.device)
    launch(_seq_fwd_kernel, (BH,), (*fargs, scr, T, N, nslot, BH, H, chunk), cfg=cfg, backward=False, L=L, BN=BN,
           DK=DK, DH=DH, DV=DV, **consts)
    return o, Ws, Ss, acts


def forward_constants(L: int, cfg, act: str, norm: bool, residual: bool, save: bool) -> dict:
    """The constants ``_seq_fwd_kernel`` takes besides the shape, tile and precision (``triton_config.launch``
    adds those) under configuration ``cfg``; also what ``triton_compile`` compiles with."""
    return dict(ACT=_ACT[act], NORM=norm, RES=residual, SAVE=save, RELOAD=cfg.reload, PHASED=cfg.phased and L == 2)
