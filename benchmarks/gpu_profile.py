"""Where a call's GPU time goes, by kernel: ``torch.profiler``'s CUDA kernel records of one forward and one
forward+backward call of ``memory_update`` per implementation and size, summed by kernel and by kind (matrix
products, Triton kernels, elementwise, reductions, copies, other), against the call's wall time.

    python benchmarks/gpu_profile.py --sizes "128,2,64,2048" --impls chunk,triton --out OUT/profile.json
    python benchmarks/gpu_profile.py --candidates default,piece-ieee ...   # triton under these configurations
    python benchmarks/gpu_profile.py --report OUT/profile.json      # the tables again, no GPU needed

Why: at depth 2 / head dim 128 / chunk 64 ``triton`` is 0.4x ``chunk`` (docs/benchmarks.md, "Runs 13-15"), and
whether a kernel built another way could beat ``chunk`` there depends on where ``chunk``'s time goes: cuBLAS's
matrix products (which tensor-core products could shorten), the elementwise kernels between them and the gaps
between launches (which fusing removes). The stall sampler (``gpu_stalls.py``, CUPTI PC sampling through proton)
ended in a segmentation fault in its one run; this uses the kernel activity records every PyTorch install's
profiler collects. Batch = ``--tokens`` / T, 8 heads, fp32, LayerNorm and residual, as ``gpu_memory_op.py`` runs
them (the defaults' launch configurations, or with ``--candidates`` each of those).

Without CUDA it says so and exits 0; ``--report`` needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

# Kernel names by kind, first match wins: cuBLAS / CUTLASS products (sm90_xmma_gemm_..., cutlass_80_tensorop_...,
# ampere_sgemm_..., gemv...), this package's Triton kernels, PyTorch's elementwise and reduction kernels, copies.
KINDS = (("matmul", re.compile(r"gemm|gemv|xmma|cutlass|cublas|s1688|s16816", re.I)),
         ("triton", re.compile(r"^_seq_|^_split_")),
         ("reduction", re.compile(r"reduce|softmax|norm", re.I)),
         ("elementwise", re.compile(r"elementwise|vectorized|unrolled|where|fill", re.I)),
         ("copy", re.compile(r"copy|memcpy|memset|cat|index", re.I)))


def kind(name: str) -> str:
    """The kind of a CUDA kernel, from its name (:data:`KINDS`; ``other`` where none matches)."""
    return next((k for k, pat in KINDS if pat.search(name)), "other")


def kernel_events(prof) -> list[tuple[str, float, float]]:
    """``(name, start_us, end_us)`` of every CUDA kernel (and memcpy/memset) a ``torch.profiler.profile`` recorded."""
    from torch.autograd import DeviceType

    return [(e.name, float(e.time_range.start), float(e.time_range.end)) for e in prof.events()
            if e.device_type == DeviceType.CUDA]


def busy_us(events) -> float:
    """Microseconds when at least one of ``events`` ran (the union of their intervals)."""
    total, end = 0.0, float("-inf")
    for _, s, e in sorted(events, key=lambda x: x[1]):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def summarize(events, wall_us: float, top: int = 12) -> dict:
    """A call's kernels: ``{"wall_us", "busy_us", "launches", "kinds": {kind: {"us", "launches", "share"}},
    "kernels": [{"name", "kind", "us", "launches", "share"}]}``, shares of the summed kernel time, kernels by time
    (``top`` of them)."""
    per, kinds = {}, {}
    for name, s, e in events:
        rec = per.setdefault(name, [0.0, 0])
        rec[0] += e - s
        rec[1] += 1
    total = sum(us for us, _ in per.values()) or 1.0
    for name, (us, n) in per.items():
        k = kinds.setdefault(kind(name), {"us": 0.0, "launches": 0})
        k["us"] += us
        k["launches"] += n
    for k in kinds.values():
        k["share"] = round(k["us"] / total, 4)
        k["us"] = round(k["us"], 1)
    kernels = [{"name": name[:120], "kind": kind(name), "us": round(us, 1), "launches": n,
                "share": round(us / total, 4)} for name, (us, n) in sorted(per.items(), key=lambda x: -x[1][0])]
    return {"wall_us": round(wall_us, 1), "busy_us": round(busy_us(events), 1), "launches": len(events),
            "kinds": dict(sorted(kinds.items(), key=lambda x: -x[1]["us"])), "kernels": kernels[:top]}


def profile(sizes: str, impls: str, tokens: int, heads: int, top: int, candidates: str = "",
            out: str | None = None) -> list[dict] | None:
    """One profiled call per size, implementation (``triton`` under each of ``candidates``, ``_gpu_candidates``'
    names, where given) and pass after a warm-up call; ``None`` without CUDA. Rows are written to ``out`` as they
    come (a kernel that ends the CUDA context loses only what follows it)."""
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to profile")
        return None
    import _gpu_candidates
    import gpu_memory_op as bench
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    names = [x for x in candidates.split(",") if x]
    _gpu_candidates.ONLY[:] = names
    rows = []
    for spec in sizes.split(";"):
        D, depth, chunk, T = (int(x) for x in spec.split(","))
        B = max(1, tokens // T)
        configs = _gpu_candidates.candidates(D, depth, chunk) if names else {}
        runs = [(impl, name) for impl in impls.split(",") for name in (names if impl == "triton" and names else [None])]
        for impl, name in runs:
            if name is not None:
                if name not in configs:
                    print(f"D={D} depth={depth} chunk={chunk}: no candidate {name!r}")
                    continue
                bench.use(D, depth, chunk, *configs[name])
            for backward in (False, True):
                step = bench.run_ours(impl, B, T, heads, D, depth, chunk, backward)
                step()  # compiles, fills the allocator's cache
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                torch.cuda.synchronize()
                wall = (time.perf_counter() - t0) * 1e6
                with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    step()
                    torch.cuda.synchronize()
                row = {"D": D, "depth": depth, "chunk": chunk, "T": T, "B": B, "impl": impl,
                       **({"candidate": name, "config": " / ".join(map(str, configs[name]))} if name else {}),
                       "pass": "fwd+bwd" if backward else "fwd", **summarize(kernel_events(prof), wall, top)}
                rows.append(row)
                print_row(row)
                if out:
                    write_results(out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "heads": heads, "tokens": tokens, "rows": rows})
                del step
                torch.cuda.empty_cache()
    return rows


def print_row(r: dict) -> None:
    kinds = ", ".join(f"{k} {v['share']:.0%} ({v['launches']})" for k, v in r["kinds"].items())
    impl = r["impl"] + (f" {r['candidate']} ({r['config']})" if r.get("candidate") else "")
    print(f"\n## D={r['D']} depth={r['depth']} chunk={r['chunk']} T={r['T']} B={r['B']} {impl} {r['pass']}: "
          f"wall {r['wall_us'] / 1e3:,.1f} ms, kernels busy {r['busy_us'] / 1e3:,.1f} ms, {r['launches']:,} "
          f"launches; {kinds}")
    print(table([{"kernel": k["name"][:80], "kind": k["kind"], "ms": f"{k['us'] / 1e3:,.2f}",
                  "launches": k["launches"], "share": f"{k['share']:.1%}"} for k in r["kernels"]],
                ["kernel", "kind", "ms", "launches", "share"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,2,64,2048", help="'D,depth,chunk,T;...'")
    ap.add_argument("--impls", default="chunk,triton")
    ap.add_argument("--candidates", default="", help="triton under each of these launch configuration candidates "
                    "(_gpu_candidates' names, in full; default: the defaults)")
    ap.add_argument("--tokens", type=int, default=1 << 17, help="tokens per call (batch = tokens / T)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--top", type=int, default=12, help="kernels listed per call")
    ap.add_argument("--out", default="benchmarks/results/gpu_profile.json")
    ap.add_argument("--report", metavar="JSON", help="print a saved file's tables and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            for row in json.load(f)["rows"]:
                print_row(row)
        return
    profile(args.sizes, args.impls, args.tokens, args.heads, args.top, args.candidates, args.out)


if __name__ == "__main__":
    main()
