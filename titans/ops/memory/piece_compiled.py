"""``piece.piece_backward`` compiled by ``torch.compile`` (Inductor), for the calls in pieces of ``impl="triton"``
(``KernelConfig.compiled``).

Why: a piece's backward is about two hundred small PyTorch operations (at depth 2 with a LayerNorm: 32 batched
products, the rest elementwise passes and sums over ``[B, H, n, d]`` and weight-sized tensors), one launch each, run
once per chunk in sequence. Where a call has few (batch row, head) pairs each launch does little, and the cost of
each operation in eager PyTorch (dispatch, autograd's engine, the launch) weighs: at the same 128K tokens per call
``chunk``'s forward runs 2.7x slower at 8K tokens / batch 16 than at 2K / batch 64 and 19x slower at 32K / batch 4,
its forward+backward 2.5x and 9.8x (H200, runs 19 and 7, depth 2 / head dim 64 / 64-row chunks). Inductor fuses the
elementwise passes and sums between the products into a few generated kernels (``benchmarks/piece_backward_ops.py``
counts them).

The function compiled is ``piece_backward`` itself, given the piece's intermediates; the recomputation that produces
them (the piece kernels of ``triton_piece.py``, or ``piece_forward``) runs before it, outside the compiled graph. It
compiles once per structure (depth, norm, residual, activation, dtype, device), with dynamic shapes: the batch, the
piece's length (a last partial piece, a resume mid-chunk) and the widths vary without compiling again.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch.fx.experimental import _config as fx_config

from .piece import piece_backward, piece_forward


def _backward(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, residual, saved):
    # G None: the gradients were taken at the piece's starting weights (G is W; a chunk's start), passed once so
    # that the graph does not depend on two arguments aliasing
    return piece_backward(do, dWp, dSp, q, k, v, coef, W if G is None else G, W, S, norm, act, residual, saved=saved)


# Why torch.compile could not compile the backward in this process (then the eager one runs, with one warning).
FAILED: list[str] = []


@functools.cache
def _compiled():
    # fullgraph: a graph break would split the fusions silently (and make this path slower, not wrong); dynamic: one
    # compile serves every shape (the default compiles static shapes first, then again at the first new shape)
    return torch.compile(_backward, fullgraph=True, dynamic=True)


def _own(t):
    """``t`` detached (the backward builds no graph) and contiguous from offset 0 (a chunk's slice of the tokens or
    of a group's coefficients is a strided view into a larger tensor, one that differs chunk to chunk): the compiled
    graph is specialized on its inputs' flags, strides and offsets, and would compile again for each new pattern.
    The copies are of the piece's small inputs; the weight-sized ones arrive contiguous."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach()
    return t.clone(memory_format=torch.contiguous_format) if t.storage_offset() or not t.is_contiguous() else t


def piece_backward_compiled(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, residual, *, recompute=None, saved=None,
                            wgrad=None):
    """:func:`piece.piece_backward` (same arguments, same returns) with the backward proper compiled by
    ``torch.compile``. ``wgrad`` must be None: a kernel of its own does not run inside the compiled graph (Inductor
    fuses ``weight_grads``' passes itself). Where ``torch.compile`` fails (tracing, or Inductor's code generation:
    a ``TorchDynamoException``), it warns once and runs the eager backward from then on (:data:`FAILED` says why)."""
    if wgrad is not None:
        raise ValueError("piece_backward_compiled: wgrad must be None (KernelConfig.compiled and wgrad exclude each "
                         "other: Inductor fuses weight_grads' passes itself)")
    if saved is None:
        with torch.no_grad():
            _, saved = (recompute or piece_forward)(q, k, v, coef, G, W, S, norm, act, residual, keep=True)
    same = all(g is w for g, w in zip(G, W))
    do, q, k, v = _own(do), _own(q), _own(k), _own(v)
    coef, dWp, dSp, G, W, S = ([_own(t) for t in x] for x in (coef, dWp, dSp, G, W, S))
    norm = None if norm is None else (_own(norm[0]), _own(norm[1]))
    saved = {name: [_own(t) for t in x] if isinstance(x, list) else _own(x) for name, x in saved.items()}
    if not FAILED:
        try:
            # no duck sizing: sizes equal by chance at the first call (the chunk and the head dim, the batch and the
            # depth) would become one symbol, and a later call where they differ would compile again
            with fx_config.patch(use_duck_shape=False):
                return _compiled()(do, dWp, dSp, q, k, v, coef, None if same else G, W, S, norm, act, residual, saved)
        except torch._dynamo.exc.TorchDynamoException as exc:  # tracing or Inductor failed: not the backward's fault
            FAILED.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            logging.getLogger("titans").warning("piece_backward_compiled: torch.compile failed (%s); the piece "
                                                "backward runs eagerly from now on", FAILED[0])
    return piece_backward(do, dWp, dSp, q, k, v, coef, W if same else G, W, S, norm, act, residual, saved=saved)
