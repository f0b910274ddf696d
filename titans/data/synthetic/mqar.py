"""Multi-query associative recall (MQAR, Arora et al. 2023), for memory-capacity studies.

A sequence of ``n_pairs`` key-value token pairs, then the keys again in a random order, each followed by the slot
where its value must be recalled:

    k1 v1 k2 v2 ... kN vN | kq1 vq1 kq2 vq2 ...

Keys come from ids ``[1, vocab/2)`` and values from ``[vocab/2, vocab)`` (id 0 pads). ``targets`` is -100 except
at the positions that predict a recalled value, so the model's loss and accuracy count only recall.
"""

from __future__ import annotations

import torch


def make_mqar(*, batch: int, n_pairs: int, n_queries: int | None = None, vocab_size: int = 256,
              length: int | None = None,
              seed: int = 0):
    """Returns ``(idx [batch, L], targets [batch, L])`` int64; ``L = 2 * (n_pairs + n_queries)`` or ``length``
    (right-padded with 0, targets -100 there)."""
    n_queries = n_pairs if n_queries is None else n_queries
    half = vocab_size // 2
    if n_pairs > half - 1:
        raise ValueError(f"n_pairs={n_pairs}: at most {half - 1} distinct keys with vocab_size={vocab_size}")
    if n_queries > n_pairs:
        raise ValueError(f"n_queries={n_queries}: at most n_pairs={n_pairs}")
    need = 2 * (n_pairs + n_queries)
    length = need if length is None else length
    if length < need:
        raise ValueError(f"length={length}: at least {need} tokens are needed")
    g = torch.Generator().manual_seed(seed)
    idx = torch.zeros(batch, length, dtype=torch.long)
    targets = torch.full((batch, length), -100, dtype=torch.long)
    for b in range(batch):
        keys = torch.randperm(half - 1, generator=g)[:n_pairs] + 1
        values = torch.randint(half, vocab_size, (n_pairs,), generator=g)
        idx[b, 0:2 * n_pairs:2], idx[b, 1:2 * n_pairs:2] = keys, values
        q = torch.randperm(n_pairs, generator=g)[:n_queries]
        start = 2 * n_pairs
        idx[b, start:start + 2 * n_queries:2] = keys[q]
        idx[b, start + 1:start + 2 * n_queries:2] = values[q]
        targets[b, start:start + 2 * n_queries:2] = values[q]  # the query position predicts its value
    return idx, targets
