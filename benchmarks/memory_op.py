"""Benchmark of the memory op and layer on CPU: tokens/s and peak memory; prints tables and writes JSON.

    python benchmarks/memory_op.py                 # full run (a few minutes on 2 cores)
    python benchmarks/memory_op.py --quick         # a small subset
    python benchmarks/memory_op.py --out FILE.json

Every measurement runs in its own subprocess: the peak memory is the process's peak resident set (VmHWM) during
the first timed call minus its resident set just before it, so nothing allocated by an earlier configuration
counts. Tokens/s is the best of ``--repeats`` calls after one warm-up.

Sections:
  1. op grid: ``chunk`` vs ``naive`` over sequence length, chunk size and memory depth (B=1, H=4, D=64, hidden 4D,
     residual + LayerNorm, per-layer gates), forward and forward+backward.
  2. matched layer: ``titans.layers.NeuralMemory`` vs ``titans_pytorch.NeuralMemory`` (when installed) at dim 256,
     4 heads of 64, depth 2, expansion 4, chunk 64 (theirs: ``batch_size=64``), batch 4 x 1024, fp32.
  3. forward-only memory of the layer against sequence length (no growth beyond the activations).
Also the analytic FLOPs of the chunked forward per token and the machine's measured float32 matmul rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import reset_peak, rss_kib, run_isolated, table, write_results  # noqa: E402

THREADS = 2


def flops_per_token(D: int, depth: int, expansion: int, chunk: int) -> float:
    """Forward FLOPs per token per head of the chunked form (matmuls only; 2 FLOPs per multiply-add)."""
    dims = [D] + [expansion * D] * (depth - 1) + [D]
    f = 0.0
    for l in range(depth):
        din, dout = dims[l], dims[l + 1]
        f += din * dout  # keys at G
        f += 2 * din * dout  # queries: x W and x S
        f += chunk * din + chunk * dout  # (x a^T) and (C * .) delta, per token: n columns each
        f += 2 * din * dout  # end-of-chunk weights and momentum: n rank-one terms each per chunk of n tokens
        if l > 0:
            f += din * dout  # back-propagating delta through the layer
    return 2 * f


def matmul_rate() -> float:
    import torch

    torch.set_num_threads(THREADS)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0)


def _measure(spec: dict) -> dict:
    """Runs in a subprocess: one configuration, returns tokens/s and peak extra memory (MiB)."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    kind, mode, repeats = spec["kind"], spec["mode"], spec.get("repeats", 2)
    B, T = spec["B"], spec["T"]
    grad = mode == "fwd+bwd"
    if kind in ("chunk", "naive"):
        import titans

        H, D, L, b = spec["H"], spec["D"], spec["depth"], spec["chunk"]
        dims = [D] + [4 * D] * (L - 1) + [D]
        q, k, v = (torch.nn.functional.normalize(torch.randn(B, T, H, D), dim=-1) for _ in range(3))
        gates = [torch.rand(B, T, H, L) * s for s in (0.01, 0.9, 0.1)]
        params = [torch.randn(B, H, dims[i], dims[i + 1]) / dims[i] ** 0.5 for i in range(L)]
        norm = [torch.ones(H, D), torch.zeros(H, D)]
        leaves = [q, k, v, *gates, *params, *norm]
        for t in leaves:
            t.requires_grad_(grad)

        def run():
            o, _ = titans.memory_update(q, k, v, gates[0], gates[1], gates[2], tuple(params), chunk_size=b,
                                        norm=tuple(norm), residual=True, impl=kind)
            if grad:
                o.sum().backward()
    else:
        x = torch.randn(B, T, spec["dim"], requires_grad=grad)
        if kind == "titans":
            from titans.layers import NeuralMemory

            m = NeuralMemory(spec["dim"], spec["heads"], depth=2, expansion=4, chunk_size=spec["chunk"])
        else:
            from titans_pytorch import NeuralMemory as TPNeuralMemory

            m = TPNeuralMemory(dim=spec["dim"], chunk_size=spec["chunk"], batch_size=spec["chunk"],
                               dim_head=spec["dim"] // spec["heads"], heads=spec["heads"],
                               default_model_kwargs=dict(depth=2, expansion_factor=4.0))

        def run():
            y = m(x)[0]
            if grad:
                y.sum().backward()

    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        base = rss_kib("VmRSS")
        reset_peak()
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
        peak = (rss_kib("VmHWM") - base) / 1024
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    best = min(times) if times else first
    return {**spec, "tokens_per_s": B * T / best, "peak_mib": peak}


def measure(spec: dict) -> dict:
    return run_isolated(__file__, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small subset")
    ap.add_argument("--out", default="benchmarks/results/memory_op.json", help="JSON output path")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_measure(json.loads(args.one))))
        return

    rate = matmul_rate()
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "threads": THREADS, "cpus": os.cpu_count(), "fp32_matmul_gflops": rate / 1e9}}
    print(f"machine: {result['machine']}")

    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    depths = [2] if args.quick else [1, 2, 3]
    grid = []
    for depth in depths:
        for chunk in (16, 64):
            for T in lengths:
                for mode in ("fwd", "fwd+bwd"):
                    spec = dict(kind="chunk", mode=mode, B=1, T=T, H=4, D=64, depth=depth, chunk=chunk)
                    r = measure(spec)
                    fl = flops_per_token(64, depth, 4, chunk) * 4
                    r["mflop_per_token_fwd"] = fl / 1e6
                    if "tokens_per_s" in r:
                        # forward+backward is counted as 3x the forward's FLOPs
                        r["matmul_fraction"] = r["tokens_per_s"] * fl * (3 if mode == "fwd+bwd" else 1) / rate
                    grid.append(r)
                    print(r)
    for depth in depths:  # the per-token reference is slow: 1K tokens only
        for mode in ("fwd", "fwd+bwd"):
            r = measure(dict(kind="naive", mode=mode, B=1, T=1024, H=4, D=64, depth=depth, chunk=16, repeats=0))
            grid.append(r)
            print(r)
    result["op_grid"] = grid

    matched = []
    for kind in ("titans", "titans_pytorch"):
        for mode in ("fwd", "fwd+bwd"):
            r = measure(dict(kind=kind, mode=mode, B=4, T=1024, dim=256, heads=4, chunk=64, repeats=3))
            matched.append(r)
            print(r)
    result["matched_layer"] = matched

    fwd_mem = []
    for T in ([1024, 4096] if args.quick else [1024, 4096, 16384]):
        r = measure(dict(kind="titans", mode="fwd", B=1, T=T, dim=256, heads=4, chunk=64, repeats=1))
        fwd_mem.append(r)
        print(r)
    result["forward_memory"] = fwd_mem

    print("\n## Op grid (B=1, H=4, D=64, residual+LN, fp32)\n")
    print(table(grid, ["kind", "mode", "depth", "chunk", "T", "tokens_per_s", "peak_mib", "mflop_per_token_fwd",
                        "matmul_fraction"]))
    print("\n## Matched layer (dim 256, 4x64 heads, depth 2, exp 4, chunk 64, batch 4x1024, fp32)\n")
    print(table(matched, ["kind", "mode", "tokens_per_s", "peak_mib"]))
    ours = {r["mode"]: r for r in matched if r["kind"] == "titans"}
    theirs = {r["mode"]: r for r in matched if r["kind"] == "titans_pytorch" and "tokens_per_s" in r}
    for mode in theirs:
        print(f"{mode}: speed x{ours[mode]['tokens_per_s'] / theirs[mode]['tokens_per_s']:.2f}, "
              f"memory x{ours[mode]['peak_mib'] / max(theirs[mode]['peak_mib'], 1e-9):.2f} of titans-pytorch")
    print("\n## Forward-only layer memory vs length (B=1)\n")
    print(table(fwd_mem, ["T", "tokens_per_s", "peak_mib"]))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
