"""``impl="triton"``: the chunk form of SPEC §1.3 with one Triton launch per sequence, forward and backward (the
forward in one launch per chunk instead where few (batch row, head) pairs would leave the device idle: see
``triton_seq.SPLIT_FEW`` and ``triton_split.py``).

The driver splits a call into at most three parts: the rest of a chunk in progress when a call resumes mid-chunk
(the PyTorch piece of ``chunk.py``; a few tokens), the whole chunks (``triton_seq.py`` forward,
``triton_seq_bwd.py`` backward, in one ``torch.autograd.Function``), and a final partial chunk (the same kernels
with one chunk, so that the state's ``chunk_params`` is that part's starting weights and autograd sees it). The
decay coefficients of every chunk are built at once by ``chunk.decay_coefficients`` (differentiable PyTorch), so
the gates' gradients come from autograd through them and the kernels only see and return coefficient tensors.
A kernel that does not fit the device (shared memory) sends the whole call to ``chunk`` with a warning; for the
backward, which would only fail after the forward, each new shape is first tried on one chunk (``_backward_fits``).

At depth 2, where the forward's configuration is a piece one (``KernelConfig.piece``: by default at the shapes and
from the number of (batch row, head) pairs of ``triton_config.PIECE_FROM``), the call is instead ``chunk``'s loop
over chunks with each chunk's forward in ``triton_piece.py``'s launches over every head at once and ``chunk``'s
hand-written backward (``_pieces``), with the configuration's ``save``, ``wgrad`` and ``compiled`` options.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import torch
import torch.utils.checkpoint

from .chunk import decay_coefficients, memory_update_chunk
from .common import MemoryState, gates_per_layer
from .triton_config import OVERRIDES, config_for, piece_default
from .triton_seq import block_rows, interpreting, pack_coefficients, saved_width, seq_forward_triton, supported
from .triton_seq_bwd import seq_backward_triton

try:
    from triton.runtime.errors import OutOfResources
except ImportError:  # without triton the kernels never run

    class OutOfResources(Exception):
        pass

_WARNED: set[str] = set()


class DoesNotFit(Exception):
    """A kernel this call needs cannot launch on this device (the message says which and why)."""


# Whether the backward kernel of a shape launched on this device: key -> None, or why it did not. A backward that
# does not fit (Triton's OutOfResources at the smallest tile) only shows when it is launched, after the forward;
# found then, there would be no way back to the chunk form, so it is tried first on one chunk (see _backward_fits).
_BACKWARD: dict[tuple, str | None] = {}


def chunk_coefficients(gates, n_chunks: int, chunk: int):
    """Per-chunk coefficients in the kernels' order: gates ``[B, H, L, N*b]`` -> ``(beta, gamma [L, BH, N, b],
    C [L, BH, N, b, b], beta_n, gamma_n, h_n [L, BH, N], c_n, m_n [L, BH, N, b])`` (``piece.py``'s meaning)."""
    B, H, L, _ = gates[0].shape
    beta, gamma, C, hv, M = decay_coefficients(*(g.reshape(B, H, L, n_chunks, chunk) for g in gates))

    def order(x):  # [B, H, L, N, ...] -> [L, B*H, N, ...]
        return x.movedim(2, 0).reshape(L, B * H, n_chunks, *x.shape[4:])

    c8 = (beta, gamma, C, beta[..., -1], gamma[..., -1], C[..., -1, :], hv[..., -1], M[..., -1, :])
    return tuple(order(x) for x in c8)


class SeqFunction(torch.autograd.Function):
    """The whole-chunk part: Triton forward that keeps every chunk's starting state and activations, Triton
    backward."""

    @staticmethod
    def forward(ctx, meta, q, k, v, lnw, lnb, *rest):
        L, act, residual, chunk = meta
        packed, W, S = rest[:5], rest[5:5 + L], rest[5 + L:]
        norm = None if lnw is None else (lnw, lnb)
        o, Ws, Ss, acts = seq_forward_triton(q, k, v, packed, W, S, norm, act, residual, chunk, save=True)
        N = Ws[0].shape[1] - 1
        B, H = q.shape[:2]
        final = [x[:, N].reshape(B, H, *x.shape[-2:]).to(w.dtype, copy=True)
                 for x, w in zip(Ws + Ss, list(W) + list(S))]
        ctx.meta = meta
        ctx.save_for_backward(q, k, v, lnw, lnb, acts, *packed, *Ws, *Ss)
        return (o, *final)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, *dstate):
        L, act, residual, chunk = ctx.meta
        q, k, v, lnw, lnb, acts, *rest = ctx.saved_tensors
        packed, Ws, Ss = rest[:5], rest[5:5 + L], rest[5 + L:]
        norm = None if lnw is None else (lnw, lnb)
        do = do if do.stride(-1) == 1 else do.contiguous()
        dq, dk, dv, dpacked, dW, dS, (dlnw, dlnb) = seq_backward_triton(
            do, dstate[:L], dstate[L:], q, k, v, packed, Ws, Ss, acts, norm, act, residual, chunk)
        return (None, dq, dk, dv, dlnw, dlnb, *dpacked, *dW, *dS)


def _seq(q, k, v, gates, W, S, chunk, act, norm, residual):
    """Chunks from a chunk boundary (the last may be partial when it is the only one): ``(o, W_new, S_new)``."""
    T = q.shape[2]
    N = -(-T // chunk)
    packed = pack_coefficients(chunk_coefficients(gates, N, chunk), block_rows(chunk))
    L = len(W)
    leaves = [q, k, v, *packed, *W, *S, *(norm or ())]
    if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
        lnw, lnb = norm if norm is not None else (None, None)
        outs = SeqFunction.apply((L, act, residual, chunk), q, k, v, lnw, lnb, *packed, *W, *S)
        return outs[0], list(outs[1:1 + L]), list(outs[1 + L:])
    o, Ws, Ss, _ = seq_forward_triton(q, k, v, packed, W, S, norm, act, residual, chunk, save=False)
    B, H = q.shape[:2]
    last = N % 2
    return (o, [x[:, last].reshape(B, H, *x.shape[-2:]).to(w.dtype) for x, w in zip(Ws, W)],
            [x[:, last].reshape(B, H, *x.shape[-2:]).to(s.dtype) for x, s in zip(Ss, S)])


def _backward_fits(q, k, v, gates, W, S, chunk, act, norm, residual) -> str | None:
    """``None`` when the backward kernel of this call's shape launches on this device, else why not: found once per
    shape and launch configuration by a forward and backward over the first chunk of one (batch row, head), cut from
    the call's own tensors (their dtypes and strides: the same kernel specialization; ``_kernels`` has made the last
    stride 1). Skipped in the interpreter (no device)."""
    if interpreting():
        return None
    L, DK, DV = len(W), W[0].shape[-2], W[-1].shape[-1]
    cfg = config_for(True, L, block_rows(chunk), DK, W[0].shape[-1] if L == 2 else DV, DV)  # tuning changes it
    key = (q.device, q.dtype, tuple(tuple(w.shape[-2:]) for w in W), chunk, act, norm is not None, residual, cfg)
    if key not in _BACKWARD:
        n = min(chunk, q.shape[2])
        one = [t[:1, :1, :n].detach().requires_grad_() for t in (q, k, v)]
        with torch.enable_grad():  # a forward that does not fit raises here, as it would in the call itself
            o, W1, S1 = _seq(*one, [g[:1, :1, ..., :n].detach() for g in gates], [w[:1, :1].detach() for w in W],
                             [s_[:1, :1].detach() for s_ in S], n, act,
                             None if norm is None else tuple(x[:1].detach() for x in norm), residual)
        try:
            sum(x.float().sum() for x in (o, *W1, *S1)).backward()
            _BACKWARD[key] = None
        except OutOfResources as exc:
            _BACKWARD[key] = f"the backward kernel does not fit this device ({str(exc).splitlines()[0][:160]})"
    return _BACKWARD[key]


# The backward needs every chunk's starting weights and momentum (and a few activations). Above a budget of bytes of
# them for one call, the chunks are run in segments of about sqrt(N) under activation checkpointing: only each
# segment's starting state is kept, and the backward re-runs one segment's forward at a time (one extra forward in
# all). The budget: this many bytes, or where None a sixteenth of the CUDA device's memory and at least 4 GiB (5.3 GB
# on an 80 GB H100: a model of a dozen memory layers keeps its saved states within about three quarters of the card).
# Without code, the environment variable TITANS_TRITON_SAVE_BUDGET sets it (:func:`parse_bytes`); this wins over it.
SAVE_BUDGET_BYTES: int | None = None
SAVE_BUDGET_ENV = "TITANS_TRITON_SAVE_BUDGET"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, name: str = SAVE_BUDGET_ENV) -> int:
    """Bytes from ``'8G'``, ``'8GiB'``, ``'512M'``, ``'1.5G'``, ``'4294967296'`` (binary units) or ``'inf'`` (no bound:
    every chunk's state kept); ``name`` is what an error names."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t in ("INF", "NONE"):
        return 1 << 62
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={text!r}: expected a size in bytes such as '8G', '512MiB', '4294967296' or 'inf'")
    return int(value * _UNITS[unit])


def save_budget(device: torch.device) -> int:
    """Bytes of saved states and activations above which one call runs in checkpointed segments:
    :data:`SAVE_BUDGET_BYTES`, else ``TITANS_TRITON_SAVE_BUDGET``, else a sixteenth of the CUDA device's memory and
    at least 4 GiB."""
    if SAVE_BUDGET_BYTES is not None:
        return SAVE_BUDGET_BYTES
    if env := os.environ.get(SAVE_BUDGET_ENV):
        return parse_bytes(env)
    if device.type == "cuda":
        return max(4 << 30, torch.cuda.get_device_properties(device).total_memory // 16)
    return 4 << 30


def _segment(n_chunks: int, W, q, chunk: int, norm: bool) -> int:
    """Chunks per launch: all of them, or about ``sqrt(N)`` when what the backward needs of them (their starting
    states and activations) would pass :func:`save_budget`."""
    floats = 2 * sum(w[0, 0].numel() for w in W) + saved_width(len(W), block_rows(chunk), W[-1].shape[-1], norm)
    if not torch.is_grad_enabled():
        return max(n_chunks, 1)
    return _chunks_per_segment(n_chunks, 4 * floats * q.shape[0] * q.shape[1], q.device)  # float32, B*H


def _chunks_per_segment(n_chunks: int, per_chunk: int, device: torch.device) -> int:
    """All ``n_chunks``, or about ``sqrt(N)`` where keeping ``per_chunk`` bytes of each would pass
    :func:`save_budget`."""
    if n_chunks * per_chunk <= save_budget(device):
        return max(n_chunks, 1)
    return max(1, math.isqrt(n_chunks - 1) + 1)


def _fallback(why, q, k, v, alpha, eta, theta, params, momentum, weights, **kw):
    """The chunk form in place of the kernels, with a warning logged once per reason."""
    if why not in _WARNED:
        _WARNED.add(why)
        logging.getLogger("titans").warning("memory_update impl='triton' falls back to 'chunk': %s", why)
    low = q.dtype if q.dtype != weights[0].dtype else None  # half tokens, float32 memory: upcast for chunk
    if low is not None:
        q, k, v = q.float(), k.float(), v.float()
    o, state = memory_update_chunk(q, k, v, alpha, eta, theta, params, momentum, **kw)
    return (o if low is None else o.to(low)), state


def memory_update_triton(q, k, v, alpha, eta, theta, params, momentum=None, *, chunk_size=16, activation="gelu",
                         norm=None, residual=False):
    """Same contract as :func:`titans.ops.memory_update`; where the kernels cannot run (no triton, no CUDA and no
    interpreter, an uncovered configuration, a forward that does not fit the device's shared memory at the smallest
    tile) the chunk form, with a warning logged once per reason. Same results within the dtype's tolerance either
    way: where a gradient is wanted, the backward kernel is tried on one chunk first (:func:`_backward_fits`), and
    where it does not fit the whole call runs the chunk form."""
    weights = params.params if isinstance(params, MemoryState) else tuple(params)
    why = supported(q, weights, activation)
    if why is None and weights[0].dtype != torch.float32:
        why = f"memory dtype {weights[0].dtype} (the kernels keep a float32 memory)"
    kw = dict(chunk_size=chunk_size, activation=activation, norm=norm, residual=residual)
    piece = _piece_config(weights, v, chunk_size, q.shape[0] * q.shape[2]) if why is None and len(weights) == 2 \
        else None
    if piece is not None:
        try:
            return _pieces(q, k, v, alpha, eta, theta, params, momentum, weights, piece, **kw)
        except OutOfResources as exc:
            why = f"the piece kernels do not fit this device ({str(exc).splitlines()[0][:160]})"
    if why is None:
        try:
            return _kernels(q, k, v, alpha, eta, theta, params, momentum, weights, **kw)
        except OutOfResources as exc:
            why = f"the forward kernel does not fit this device ({str(exc).splitlines()[0][:160]})"
        except DoesNotFit as exc:
            why = str(exc)
    return _fallback(why, q, k, v, alpha, eta, theta, params, momentum, weights, **kw)


def _piece_config(weights, v, chunk: int, programs: int):
    """The configuration of ``triton_piece.py``'s kernels for a depth-2 call over ``programs`` (batch row, head)
    pairs, or None for the kernels of one program per head: the forward's configuration where it is a piece one (an
    override, such as a tuning candidate or a file of tuned configurations, decides alone), else
    ``triton_config.piece_default``'s."""
    key = (False, 2, block_rows(chunk), weights[0].shape[-2], weights[0].shape[-1], v.shape[-1])
    cfg = config_for(*key)
    if cfg.piece or key in OVERRIDES:
        return cfg if cfg.piece else None
    return piece_default(*key[1:], programs)


def _pieces(q, k, v, alpha, eta, theta, params, momentum, weights, cfg, **kw):
    """``chunk``'s loop over chunks with each piece's forward in ``triton_piece.py``'s four launches over every
    (batch row, head); the backward is ``chunk``'s (``piece.piece_backward``), its recomputation of each piece's
    intermediates those launches again. Half-precision tokens are computed in float32, as ``chunk`` computes them."""
    from .piece import piece_backward
    from .triton_piece import piece_forward_triton

    low = q.dtype if q.dtype != weights[0].dtype else None
    if low is not None:
        q, k, v = q.float(), k.float(), v.float()
    fwd = functools.partial(piece_forward_triton, cfg=cfg)
    bwd = functools.partial(piece_backward, recompute=fwd)
    if cfg.wgrad:
        from .triton_piece_bwd import weight_grads_triton

        shape = (2, block_rows(kw["chunk_size"]), weights[0].shape[-2], weights[0].shape[-1], v.shape[-1])
        bwd = functools.partial(bwd, wgrad=functools.partial(weight_grads_triton, shape=shape, cfg=cfg))
    elif cfg.compiled:  # excludes wgrad (KernelConfig)
        from .piece_compiled import piece_backward_compiled

        bwd = functools.partial(piece_backward_compiled, recompute=fwd)
    run = functools.partial(memory_update_chunk, piece=fwd, piece_bwd=bwd, save=cfg.save, **kw)
    b, T = kw["chunk_size"], q.shape[1]
    offset = params.offset if isinstance(params, MemoryState) else 0
    plan = piece_plan(cfg, weights, q, b, T, offset, (q, k, v, alpha, eta, theta, *weights, *(momentum or ()),
                                                      *(kw["norm"] or ())))
    # Past save_budget: checkpointed segments of whole chunks (the first one finishing a chunk in progress), each
    # keeping only its starting state for the backward, which runs its forward again (as for the kernels of one
    # program per head); then the chunks whose states fit beside those, as they are.
    outs, state = [], params
    for lo, hi, checkpointed in plan:
        args = [t[:, lo:hi] for t in (q, k, v, alpha, eta, theta)] if len(plan) > 1 else [q, k, v, alpha, eta, theta]
        mom = momentum if lo == 0 else None
        if checkpointed:
            o, state = torch.utils.checkpoint.checkpoint(run, *args, state, mom, use_reentrant=False)
        else:
            o, state = run(*args, state, mom)
        outs.append(o)
    o = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
    return (o if low is None else o.to(low)), state


def piece_plan(cfg, weights, q, b: int, T: int, offset: int, tensors) -> list[tuple[int, int, bool]]:
    """How a call in pieces of ``T`` tokens (``offset`` into a chunk in progress) runs: ``[(lo, hi, checkpointed),
    ...]``, token ranges in order. One range, not checkpointed, where what the backward keeps of every chunk (its
    starting weights and momentum, and with ``cfg.save`` the piece's intermediates) fits :func:`save_budget`, or
    without gradients. Otherwise the leading chunks run in checkpointed segments of about ``sqrt(N)`` chunks (the
    first finishing the chunk in progress; one more forward each, in the backward), and the trailing chunks whose
    states fit the budget beside the segments' starting states run as they are: their backward comes first and frees
    them before any segment runs again, so what is kept stays within the budget, and only the leading chunks pay the
    extra forward."""
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return [(0, T, False)]
    BN, DH, DV = block_rows(b), weights[0].shape[-1], weights[-1].shape[-1]
    floats = 2 * sum(w[0, 0].numel() for w in weights) + (6 * BN * DH + 4 * BN * DV + 2 * BN * BN if cfg.save else 0)
    per_chunk = 4 * floats * q.shape[0] * q.shape[2]  # float32, B*H
    n_chunks = -(-(T + offset) // b)
    per = _chunks_per_segment(n_chunks, per_chunk, q.device)
    if per >= n_chunks:
        return [(0, T, False)]
    # chunks kept as they are: the budget's worth, less the starting states of (at most) every segment
    tail = min(n_chunks - 1, max(0, save_budget(q.device) // per_chunk - -(-n_chunks // per)))
    head = min(T, (n_chunks - tail) * b - offset)  # tokens in checkpointed segments (at least the first chunk's)
    plan, lo = [], 0
    while lo < head:
        hi = min(head, lo + per * b - (offset if lo == 0 else 0))
        plan.append((lo, hi, True))
        lo = hi
    return plan + ([(head, T, False)] if head < T else [])


def _kernels(q, k, v, alpha, eta, theta, params, momentum, weights, *, chunk_size, activation, norm, residual):
    b = chunk_size
    T = q.shape[1]
    kw = dict(chunk_size=b, activation=activation, norm=norm, residual=residual)
    outs = []
    if isinstance(params, MemoryState) and params.offset > 0 and T > 0:
        # The rest of the chunk in progress (at most b - 1 tokens): the PyTorch piece, in float32.
        n = min(b - params.offset, T)
        low = q.dtype if q.dtype != weights[0].dtype else None
        x = [t[:, :n].float() if low is not None else t[:, :n] for t in (q, k, v)]
        o, params = memory_update_chunk(*x, alpha[:, :n], eta[:, :n], theta[:, :n], params, **kw)
        outs.append(o if low is None else o.to(low))
        q, k, v, alpha, eta, theta = (t[:, n:] for t in (q, k, v, alpha, eta, theta))
        T -= n
        if params.offset > 0 or T == 0:  # the call ended inside that chunk
            return torch.cat(outs, 1), params
    if isinstance(params, MemoryState):
        W, S = list(params.params), list(params.momentum)
    else:
        W = list(params)
        S = list(momentum) if momentum is not None else [torch.zeros_like(w) for w in W]
    G, L = W, len(W)
    gates = [gates_per_layer(g, L, name).permute(0, 2, 3, 1).to(W[0].dtype)
             for g, name in ((alpha, "alpha"), (eta, "eta"), (theta, "theta"))]
    # The kernels index tokens by strides but need a unit stride along D.
    q, k, v = ((t if t.stride(-1) == 1 else t.contiguous()).transpose(1, 2) for t in (q, k, v))
    full = T // b * b
    step = _segment(full // b, W, q, b, norm is not None) * b
    parts = [(lo, min(lo + step, full), b) for lo in range(0, full, step)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *gates, *W, *S, *(norm or ()))):
        # Outside the checkpointed segments below: the probe runs a backward of its own.
        for lo, hi, chunk in ([(0, b, b)] if full else []) + ([(full, T, T - full)] if full < T else []):
            args = (q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], [g[..., lo:hi] for g in gates], W, S, chunk)
            if why := _backward_fits(*args, activation, norm, residual):
                raise DoesNotFit(why)
    for lo, hi, chunk in parts + [(full, T, T - full)]:
        if hi > lo:
            G = W
            args = (q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], [g[..., lo:hi] for g in gates], W, S, chunk,
                    activation, norm, residual)
            if len(parts) > 1 and torch.is_grad_enabled():  # keep only the segments' starting states
                o, W, S = torch.utils.checkpoint.checkpoint(_seq, *args, use_reentrant=False)
            else:
                o, W, S = _seq(*args)
            outs.append(o.transpose(1, 2))
    offset = T % b
    if offset == 0:
        G = W
    o = outs[0] if len(outs) == 1 else torch.cat(outs, 1) if outs else v.transpose(1, 2).new_zeros(
        v.transpose(1, 2).shape)
    return o, MemoryState(tuple(W), tuple(S), tuple(G), offset, b)
