"""Where the time of the memory layer goes on CPU: ``torch.profiler`` over forward+backward of the matched layer.

    python benchmarks/profile_memory_layer.py                       # the matched config of memory_op.py
    python benchmarks/profile_memory_layer.py --mode fwd --top 25
    python benchmarks/profile_memory_layer.py --out benchmarks/results/profile_memory_layer.json

The matched configuration of ``memory_op.py`` (dim 256, 4 heads of 64, depth-2 memory with expansion 4, chunk 64,
batch 4 x 1024, fp32, 2 threads). Prints the operators by self CPU time (a table), the share of the total spent in
matrix products, and the count of operator calls per token: on two cores a chunk of 64 tokens at 4 x 4 heads is
small enough that per-call overhead matters as much as arithmetic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

MATMULS = ("aten::bmm", "aten::mm", "aten::addmm", "aten::matmul", "aten::baddbmm", "aten::linear")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="fwd+bwd", choices=["fwd", "fwd+bwd"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from titans.layers import NeuralMemory

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = NeuralMemory(256, 4, depth=2, expansion=4, chunk_size=args.chunk)
    grad = args.mode == "fwd+bwd"
    x = torch.randn(args.batch, args.seq, 256, requires_grad=grad)

    def step():
        with torch.set_grad_enabled(grad):
            y = m(x)[0]
            if grad:
                y.sum().backward()

    step()  # warm-up
    t0 = time.perf_counter()
    step()
    plain = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    tokens = args.batch * args.seq
    rows = [{"op": e.key, "self ms": e.self_cpu_time_total / 1e3, "%": 100 * e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:args.top]]
    print(f"matched layer, {args.mode}, batch {args.batch} x {args.seq}, chunk {args.chunk}, "
          f"{args.threads} threads: {tokens / plain:,.0f} tokens/s unprofiled\n")
    print(table(rows, ["op", "self ms", "%", "calls"]))
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    calls = sum(e.count for e in events)
    print(f"\nmatrix products: {100 * mm / total:.1f}% of self time; {calls:,} operator calls "
          f"({calls / tokens:.2f} per token)")
    if args.out:
        write_results(args.out, {"config": vars(args), "tokens_per_s": tokens / plain, "matmul_share": mm / total,
                                 "calls": calls, "ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3,
                                                          "calls": e.count} for e in events[:50]]})


if __name__ == "__main__":
    main()
