"""Batches from a memory-mapped token split.

Training batches are a pure function of ``(seed, step, micro-step)``: resuming at a step reproduces exactly the
batches an uninterrupted run would have seen, with no data-position state to save. With ``world`` processes each
takes its rows of the same global batch, so N processes see the batch one process would.
"""

from __future__ import annotations

import numpy as np
import torch


def batch_rows(batch_size: int, micro: int, micros: int, rank: int, world: int) -> range:
    """The rows of a step's global batch of ``batch_size`` that micro-batch ``micro`` of ``micros`` on process
    ``rank`` of ``world`` takes: each micro-batch a contiguous block, split over the processes. So a step sees the
    same sequences however it is accumulated or parallelized."""
    per, rem = divmod(batch_size, micros * world)
    if rem or per == 0:
        raise ValueError(f"train.batch_size={batch_size}: must be a multiple of train.grad_accum x processes "
                         f"= {micros} x {world}")
    start = (micro * world + rank) * per
    return range(start, start + per)


def train_batch(tokens: np.ndarray, *, seq_len: int, batch_size: int, seed: int, step: int, micro: int = 0,
                micros: int = 1, rank: int = 0, world: int = 1):
    """Rows :func:`batch_rows` of the global batch of ``batch_size`` for ``step``: ``(x, y)`` int64
    ``[batch_size / (micros * world), seq_len]``, ``y`` the next token of each position."""
    n = len(tokens) - seq_len - 1
    if n <= 0:
        raise ValueError(f"seq_len={seq_len}: the split has only {len(tokens)} tokens")
    rows = batch_rows(batch_size, micro, micros, rank, world)
    # The 0 is where the micro-batch's index went before a step drew one global batch; kept, so that runs without
    # accumulation draw the sequences they always drew.
    g = torch.Generator().manual_seed(hash((seed, step, 0)) & 0x7FFF_FFFF_FFFF_FFFF)
    starts = torch.randint(0, n + 1, (batch_size,), generator=g)
    starts = starts[rows.start:rows.stop].tolist()
    rows = np.stack([np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64) for s in starts])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


def eval_windows(tokens: np.ndarray, *, length: int, max_windows: int | None = None):
    """Consecutive non-overlapping windows of ``length + 1`` tokens (input and shifted target), as ``(x, y)``
    pairs of ``[1, length]``; at most ``max_windows`` (spread evenly over the split when fewer than fit)."""
    total = (len(tokens) - 1) // length
    if total < 1:
        raise ValueError(f"length={length}: the split has only {len(tokens)} tokens")
    idx = range(total) if max_windows is None or max_windows >= total else \
        np.linspace(0, total - 1, max_windows).round().astype(int).tolist()
    for i in idx:
        row = torch.from_numpy(np.asarray(tokens[i * length:i * length + length + 1], dtype=np.int64))[None]
        yield row[:, :-1], row[:, 1:]
