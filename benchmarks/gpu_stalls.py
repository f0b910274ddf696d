"""Where the Triton kernels of ``impl="triton"`` wait, on a CUDA device: sampled program counters with their stall
reasons (CUPTI PC sampling through Triton's profiler, proton), summed by kernel source line.

    python benchmarks/gpu_stalls.py --sizes "128,2,64,2048" --candidates default,phased --out-dir OUT
    python benchmarks/gpu_stalls.py --report OUT/stalls_default.hatchet ...   # the tables again, no GPU needed

Why: compiled offline the kernels' instruction counts per chunk do not explain their measured times. At the sizes
where ``triton`` is slower than ``chunk`` a warp issues one instruction per 5-14 ns, 10-27 cycles
(docs/benchmarks.md, "Instructions per chunk"), so the time is in stalls, and which ones (memory dependencies,
barriers, memory fences, the tensor cores' waits, spills) only the device can say. For each size and launch
configuration candidate (``_gpu_candidates``, as ``gpu_memory_op.py --candidates`` names them) it runs one
forward+backward call of ``--tokens`` tokens as a warm-up (compiling), then one under sampling, in a profiler scope
named after the size and candidate; proton writes the samples (``OUT/stalls_<candidates>.hatchet``, JSON) and this
script sums them: per kernel the share of each stall reason, then the source lines with the most samples and their
main reasons (``OUT/stalls_<candidates>.json``). A sample is a warp seen at an instruction, with the reason it was
not issuing (``selected``: it was issuing); so a line's share of the samples is its share of the kernel's warp time.

Without CUDA (or without proton's CUPTI backend) it says so and exits 0; ``--report`` needs neither.

Its one run on a GPU so far (run 13, H100, Triton 3.6, driver 580.159) ended in a segmentation fault for the
default kernels, with nothing written: before another lease spends time on it, try it on the default configuration
alone with a short ``STALLS_S``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

LINE = re.compile(r"([^/\s:]+\.py):(\d+)")  # proton's frame of a sampled line: "<dir>/<file>:<line>@<function>"


def _frames(node, path=()):
    """Every node of a proton tree (hatchet JSON) with the names of the nodes above it."""
    if isinstance(node, list):
        for x in node:
            yield from _frames(x, path)
        return
    if not isinstance(node, dict) or "frame" not in node:
        return
    name = str(node["frame"].get("name", ""))
    yield node, path
    for child in node.get("children", []):
        yield from _frames(child, path + (name,))


def summarize(tree, top: int = 25) -> list[dict]:
    """Per profiler scope and kernel: ``{"scope", "kernel", "samples", "reasons": {reason: share}, "lines": [{"line",
    "share", "reasons"}]}``, from a proton tree. A sampled line is a node named ``file.py:N@kernel`` whose metrics
    count its samples per reason (``stalled_<reason>``; ``stalled_selected``: the warp issued); it is summed under
    the nearest enclosing node that is neither a line nor the kernel (the user's scope). Shares are of the
    samples summed over the reasons: proton's ``num_samples`` also counts CUPTI's "not issued" subsets of them."""
    per = defaultdict(lambda: {"reasons": Counter(), "lines": defaultdict(Counter)})
    for node, path in _frames(tree):
        name = str(node["frame"].get("name", ""))
        metrics = node.get("metrics", {})
        m = LINE.search(name)
        counts = {k[len("stalled_"):]: int(v) for k, v in metrics.items()
                  if k.startswith("stalled_") and isinstance(v, (int, float)) and v}
        if not m or not counts:
            continue
        above = [p for p in path if p != "ROOT" and not LINE.search(p)]
        kernel = name.split("@", 1)[1] if "@" in name else (above[-1] if above else "?")  # else its parent
        scope = next((p for p in reversed(above) if p != kernel), "")
        rec = per[(scope, kernel)]
        where = f"{m.group(1)}:{m.group(2)}"
        rec["reasons"].update(counts)
        rec["lines"][where].update(counts)
    out = []
    for (scope, kernel), rec in sorted(per.items()):
        total = sum(rec["reasons"].values())
        lines = sorted(rec["lines"].items(), key=lambda x: -sum(x[1].values()))[:top]
        out.append({"scope": scope, "kernel": kernel, "samples": total,
                    "reasons": {k: round(v / total, 4) for k, v in rec["reasons"].most_common()},
                    "lines": [{"line": where, "share": round(sum(c.values()) / total, 4),
                               "reasons": {k: round(v / sum(c.values()), 3) for k, v in c.most_common()}}
                              for where, c in lines]})
    return out


def print_summary(rows: list[dict], reasons: int = 4) -> None:
    """Per scope and kernel: a line of its main stall reasons, then a table of its top lines."""
    for r in rows:
        main = ", ".join(f"{k} {v:.0%}" for k, v in list(r["reasons"].items())[:6])
        print(f"\n## {r['scope']} / {r['kernel']}: {r['samples']:,} samples; {main}")
        print(table([{"line": x["line"], "share": f"{x['share']:.1%}",
                      "main reasons": ", ".join(f"{k} {v:.0%}" for k, v in list(x["reasons"].items())[:reasons])}
                     for x in r["lines"]], ["line", "share", "main reasons"]))


def profile(sizes: str, names: str, out_dir: str, tokens: int, heads: int) -> str | None:
    """Sample one forward+backward call per size and candidate; returns the proton file (None without CUDA or
    proton's CUPTI backend)."""
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to sample")
        return None
    try:
        import triton.profiler as proton
    except ImportError as exc:
        print(f"proton (Triton's profiler) is missing: {exc}")
        return None
    import _gpu_candidates
    import gpu_memory_op as bench

    _gpu_candidates.ONLY[:] = [x for x in names.split(",") if x]
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, "stalls_" + names.replace(",", "-"))
    steps = []
    for spec in sizes.split(";"):
        D, depth, chunk, T = (int(x) for x in spec.split(","))
        for name, (fwd_cfg, bwd_cfg) in _gpu_candidates.candidates(D, depth, chunk).items():
            bench.use(D, depth, chunk, fwd_cfg, bwd_cfg)
            step = bench.run_ours("triton", max(1, tokens // T), T, heads, D, depth, chunk, True)
            step()  # compiles this configuration's kernels, outside the sampling
            torch.cuda.synchronize()
            steps.append((f"D{D} depth{depth} chunk{chunk} T{T} {name} ({fwd_cfg} / {bwd_cfg})", step,
                          (D, depth, chunk, fwd_cfg, bwd_cfg)))
            if bench.fallbacks():
                print(f"{steps[-1][0]}: falls back to chunk; not sampled")
                steps.pop()
    proton.start(stem, backend="cupti", mode="pcsampling")
    for scope, step, (D, depth, chunk, fwd_cfg, bwd_cfg) in steps:
        bench.use(D, depth, chunk, fwd_cfg, bwd_cfg)
        with proton.scope(scope):
            step()
            torch.cuda.synchronize()
    proton.finalize()
    made = [f for f in glob.glob(stem + ".*") if not f.endswith((".json", ".log"))]  # proton adds ".hatchet"
    return next((f for f in made if f.endswith(".hatchet")), made[0] if made else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,2,64,2048", help="'D,depth,chunk,T;...'")
    ap.add_argument("--candidates", default="default", help="candidate name prefixes (_gpu_candidates)")
    ap.add_argument("--tokens", type=int, default=1 << 16, help="tokens per call (batch = tokens / T)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--top", type=int, default=25, help="lines listed per kernel")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--report", nargs="+", metavar="HATCHET", help="summarize saved proton files and exit")
    args = ap.parse_args()
    files = args.report or [profile(args.sizes, args.candidates, args.out_dir, args.tokens, args.heads)]
    for path in filter(None, files):
        with open(path) as f:
            rows = summarize(json.load(f), args.top)
        print(f"# {path}")
        print_summary(rows)
        write_results(os.path.splitext(path)[0] + ".json", {"source": os.path.basename(path), "rows": rows})


if __name__ == "__main__":
    main()
