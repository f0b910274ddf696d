"""How large the deep memory's output is before its LayerNorm, token by token, at initialization (CPU; a minute).

    python benchmarks/memory_scale.py                 # table + benchmarks/results/memory_scale.json

The memory ends in ``x + LN(f_W(x))`` (SPEC §1.1). The forget gate multiplies every weight by ``1 - alpha_t`` per
token, and at initialization the writes are too small to replace what is forgotten, so ``f_W`` shrinks (like
``(1 - alpha)^(L t)`` for an ``L``-layer memory while the writes are negligible) until writes and forgetting
balance. LN hides the shrinking from the forward pass (its output keeps unit scale) but not from the derivatives,
which carry its ``1 / std``. Two measurements, on a ``NeuralMemory`` layer at initialization fed random inputs:

- the scale: after each chunk, the median over probe keys (unit vectors, as the layer's keys are) of
  ``std(f_W(probe))``, the memory network without its residual and LN;
- the gradient: the norm of the gradient over the layer's parameters of a fixed random loss on the last chunk's
  outputs, for inputs of growing length ``T``. A bounded norm means the backward through the memory's recurrence
  is stable; a norm growing geometrically in ``T`` means it is not (the forward stays bounded either way).

Columns are the forget gate's initial value (``alpha_init``); the layer's other settings are the defaults of
``titans.models.MemoryConfig``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

from titans.layers import NeuralMemory  # noqa: E402
from titans.ops import memory_retrieve  # noqa: E402


def pre_norm_scale(layer: NeuralMemory, x: torch.Tensor, n_probes: int = 64, seed: int = 0) -> list[float]:
    """Median ``std(f_W(p))`` over unit probe keys ``p``, at ``W_0`` and after each chunk of ``x [B, T, d_model]``:
    ``1 + ceil(T / chunk_size)`` values. ``f_W`` is the memory network without its residual and LayerNorm."""
    B = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randn(B, n_probes, layer.n_heads, layer.head_dim, generator=gen, dtype=x.dtype)
    probes = probes / probes.norm(dim=-1, keepdim=True)

    def scale(memory) -> float:
        f = memory_retrieve(probes, memory, activation=layer.activation, norm=None, residual=False)
        return float(f.std(-1).median())

    out, state = [scale(layer.initial_state(B))], None
    for s in range(0, x.shape[1], layer.chunk_size):
        _, state = layer(x[:, s:s + layer.chunk_size], state)
        out.append(scale(state.memory))
    return out


def last_chunk_grad_norm(layer: NeuralMemory, x: torch.Tensor, seed: int = 1) -> float:
    """Norm of the gradient of ``<y[:, -chunk:], r>`` (``r`` a fixed random tensor) over the layer's parameters."""
    layer.zero_grad(set_to_none=True)
    y, _ = layer(x)
    r = torch.randn(y[:, -layer.chunk_size:].shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (y[:, -layer.chunk_size:] * r).sum().backward()
    return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in layer.parameters() if p.grad is not None)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphas", default="0.01,0.003,0.001", help="initial forget-gate values to compare")
    ap.add_argument("--tokens", type=int, default=8192, help="the longest input")
    ap.add_argument("--grad-lengths", default="256,512,1024,2048,4096,8192",
                    help="input lengths T at which the gradient norm is taken (each <= --tokens)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "memory_scale.json"))
    args = ap.parse_args(argv)
    alphas = [float(a) for a in args.alphas.split(",")]
    lengths = [int(t) for t in args.grad_lengths.split(",")]
    if max(lengths) > args.tokens:
        ap.error(f"--grad-lengths {args.grad_lengths}: each must be <= --tokens {args.tokens}")
    x = torch.randn(args.batch, args.tokens, args.d_model, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    scales, grads = {}, {}
    for a in alphas:
        torch.manual_seed(0)  # the same layer for every alpha, up to the forget gate's bias
        layer = NeuralMemory(args.d_model, args.heads, alpha_init=a).double()
        with torch.no_grad():
            scales[a] = pre_norm_scale(layer, x)
        grads[a] = {T: last_chunk_grad_norm(layer, x[:, :T]) for T in lengths}
    chunk = layer.chunk_size  # the same for every alpha
    cols = [f"alpha_init {a:g}" for a in alphas]
    marks = [t for t in (0, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192) if t <= args.tokens]
    rows = [{"tokens t": str(t), **{c: f"{scales[a][t // chunk]:.4f}" for c, a in zip(cols, alphas)}} for t in marks]
    print(f"NeuralMemory(d_model={args.d_model}, heads={args.heads}), defaults otherwise, float64, batch "
          f"{args.batch} of N(0, 1) inputs.\n\nMedian pre-LayerNorm std of the memory's output after t tokens "
          f"(LN's floor sqrt(1e-5) = 0.0032):\n")
    print(table(rows, ["tokens t"] + cols))
    rows = [{"input length T": str(T), **{c: f"{grads[a][T]:.3g}" for c, a in zip(cols, alphas)}} for T in lengths]
    print(f"\nNorm of the gradient over the layer's parameters of a fixed random loss on the last {chunk} "
          f"outputs:\n")
    print(table(rows, ["input length T"] + cols))
    write_results(args.out, {"config": {k: v for k, v in vars(args).items() if k != "out"}, "chunk_size": chunk,
                             "scale": {str(a): scales[a] for a in alphas},
                             "grad_norm": {str(a): {str(T): g for T, g in grads[a].items()} for a in alphas}})


if __name__ == "__main__":
    main()
