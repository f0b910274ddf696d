"""Test-time memorization, the idea Titans is built on, in one table (``titans memorize``).

A fresh memory network is written a stream of random (key, value) pairs by the memory op alone (no training, no
outer parameters: gradient descent on ||M(k) - v||^2 at test time, chunks of 16), then read with every key. A key
counts as recalled when its retrieval is closer (cosine) to its own value than to any other stored value.
Deeper memories hold more pairs than a linear one of the same key size; more passes over the stream help them.

    python -m titans.memorize [--dim 32] [--theta 0.02] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from .ops import memory_retrieve, memory_update


def recall(n_pairs: int, depth: int, passes: int, *, dim: int = 32, theta: float = 0.02, chunk_size: int = 16,
           seed: int = 0) -> float:
    """Fraction of ``n_pairs`` keys whose retrieval is nearest to their own value, after ``passes`` writes."""
    g = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(1, n_pairs, 1, dim, generator=g), dim=-1)  # [B=1, T, H=1, D]
    v = torch.randn(1, n_pairs, 1, dim, generator=g)
    dims = [dim] + [4 * dim] * (depth - 1) + [dim]
    params = tuple(torch.randn(1, 1, dims[i], dims[i + 1], generator=g) / dims[i] ** 0.5 for i in range(depth))
    keys, values = k.repeat(1, passes, 1, 1), v.repeat(1, passes, 1, 1)
    zeros = torch.zeros(1, n_pairs * passes, 1)
    # No forgetting (alpha=0), no momentum (eta=0): plain mini-batch gradient descent on the stream.
    _, state = memory_update(keys, keys, values, zeros, zeros, zeros + theta, params, chunk_size=chunk_size)
    out = F.normalize(memory_retrieve(k, state), dim=-1)
    sim = torch.einsum("bnhd,bmhd->bhnm", out, F.normalize(v, dim=-1))  # [1, 1, N, N]
    return (sim.argmax(-1) == torch.arange(n_pairs)).float().mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Test-time memorization: recall against stream length and depth.")
    ap.add_argument("--dim", type=int, default=32, help="key/value size per head")
    ap.add_argument("--theta", type=float, default=0.02, help="inner learning rate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    lengths, depths, passes_list = (16, 64, 256, 1024), (1, 2, 3), (1, 4, 16)
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    print(f"\nkey/value dim {args.dim}, hidden {4 * args.dim}, inner lr {args.theta}, chunk 16, seed {args.seed}\n")
    t0 = time.time()
    header = f"{'passes':>6} {'depth':>5} | " + " ".join(f"{n:>6}" for n in lengths)
    print(header + "   (pairs written; cells: recall)")
    print("-" * len(header))
    for passes in passes_list:
        for depth in depths:
            accs = [recall(n, depth, passes, dim=args.dim, theta=args.theta, seed=args.seed) for n in lengths]
            print(f"{passes:>6} {depth:>5} | " + " ".join(f"{a:>6.2f}" for a in accs))
    print(f"\n({time.time() - t0:.1f}s on {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
