"""Does ``torch.compile`` speed up the memory on CPU? Eager against compiled, at the matched configuration.

    python benchmarks/compile_memory_op.py            # a few minutes on 2 cores (compilation included)
    python benchmarks/compile_memory_op.py --out benchmarks/results/compile_memory_op.json

The matched configuration of ``memory_op.py`` (dim 256, 4 heads of 64, depth-2 memory with expansion 4, chunk 64,
batch 4 x 1024, fp32, 2 threads), three ways, each in a fresh process:

- ``op``: ``memory_update(impl="chunk")`` alone (normalized q/k/v, random gates), eager, then with the per-piece
  forward and hand-written backward (``piece.py``) under ``torch.compile`` (the Python loop over chunks stays eager);
- ``layer``: ``titans.layers.NeuralMemory`` eager, with the compiled pieces, and the whole layer under
  ``torch.compile``.

Tokens/s is the best of three calls after the first (which includes compilation; its time is reported too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_isolated, table, write_results  # noqa: E402

THREADS = 2
B, T, H, D, CHUNK = 4, 1024, 4, 64, 64


def _compiled_pieces():
    import torch

    from titans.ops.memory.piece import piece_backward, piece_forward

    return torch.compile(piece_forward, dynamic=False), torch.compile(piece_backward, dynamic=False)


def _measure(spec: dict) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    grad = spec["mode"] == "fwd+bwd"
    if spec["what"] == "op":
        from titans.ops.memory import memory_update_chunk

        dims = [D, 4 * D, D]
        q, k, v = (torch.nn.functional.normalize(torch.randn(B, T, H, D), dim=-1) for _ in range(3))
        gates = [torch.rand(B, T, H, 2) * s for s in (0.01, 0.9, 0.1)]
        params = [torch.randn(B, H, dims[i], dims[i + 1]) / dims[i] ** 0.5 for i in range(2)]
        norm = (torch.ones(H, D), torch.zeros(H, D))
        for t in (q, k, v, *gates, *params, *norm):
            t.requires_grad_(grad)
        kw = dict(zip(("piece", "piece_bwd"), _compiled_pieces())) if spec["how"] == "compiled pieces" else {}

        def forward():
            return memory_update_chunk(q, k, v, *gates, tuple(params), chunk_size=CHUNK, norm=norm, residual=True,
                                       **kw)[0]
    else:
        from titans.layers import NeuralMemory
        from titans.ops import memory as memory_ops

        m = NeuralMemory(256, H, depth=2, expansion=4, chunk_size=CHUNK)
        x = torch.randn(B, T, 256, requires_grad=grad)
        if spec["how"] == "compiled pieces":
            fwd, bwd = _compiled_pieces()
            chunk = memory_ops._IMPLS["chunk"]
            memory_ops._IMPLS["chunk"] = lambda *a, **k: chunk(*a, **k, piece=fwd, piece_bwd=bwd)
        f = torch.compile(m) if spec["how"] == "compiled layer" else m

        def forward():
            return f(x)[0]

    def run():
        with torch.set_grad_enabled(grad):
            y = forward()
            if grad:
                y.sum().backward()

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {**spec, "tokens_per_s": B * T / min(times), "first_call_s": first}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON path (default: print only)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_measure(json.loads(args.one))))
        return
    rows = []
    for what, hows in (("op", ("eager", "compiled pieces")), ("layer", ("eager", "compiled pieces", "compiled layer"))):
        for mode in ("fwd", "fwd+bwd"):
            for how in hows:
                r = run_isolated(__file__, {"what": what, "how": how, "mode": mode})
                base = next((x for x in rows if x["what"] == what and x["mode"] == mode and x["how"] == "eager"), r)
                if "tokens_per_s" in r and "tokens_per_s" in base:
                    r["vs eager"] = r["tokens_per_s"] / base["tokens_per_s"]
                rows.append(r)
                print(table([r], ["what", "how", "mode", "tokens_per_s", "vs eager", "first_call_s", "error"])
                      .splitlines()[-1], flush=True)
    print()
    print(table(rows, ["what", "how", "mode", "tokens_per_s", "vs eager", "first_call_s", "error"]))
    if args.out:
        write_results(args.out, {"config": {"B": B, "T": T, "H": H, "D": D, "chunk": CHUNK, "threads": THREADS},
                                 "rows": rows})


if __name__ == "__main__":
    main()
