"""GPU benchmark of the memory op: ``chunk`` vs ``triton``, beside titans-pytorch and (depth 1) fla's gated delta rule.

    python benchmarks/gpu_memory_op.py                 # the table (minutes on one GPU)
    python benchmarks/gpu_memory_op.py --quick         # two sizes, as a smoke run
    python benchmarks/gpu_memory_op.py --out FILE.json --budget-s 300
    python benchmarks/gpu_memory_op.py --compile-only --shard 0/4   # fill Triton's cache (run shards in parallel)
    python benchmarks/gpu_memory_op.py --tune --tune-out tuned.json   # time launch configurations, keep the best
    python benchmarks/gpu_memory_op.py --baselines fla   # leave titans-pytorch out (minutes per size at batch 1)
    python benchmarks/gpu_memory_op.py --report benchmarks/results/gpu_memory_op_h100_run*.json   # markdown

Needs a CUDA device (without one it says so and exits 0). For every size it first checks ``triton`` against
``chunk`` (forward output and final weights, relative RMS error), then times forward and forward+backward
(median of ``--repeats`` after warm-up, CUDA events) and records the peak allocated memory, then times the two in
alternation (``--paired`` rounds on one set of inputs, ``_gpu_timing.paired``) for the median of their per-round
ratios, which a drift of the card between the two medians does not move. Sizes follow the
paper: head dim 64 and 128, memory depth 1 and 2 (expansion 4), chunk 16 and 64, sequences of 2K-32K tokens, the
batch filling ``--tokens`` tokens per call. Beside them, when installed: ``titans_pytorch.NeuralMemory`` at the same
dims (its ``batch_size`` = our chunk; its batch, then its length, halved until it fits, the table saying which
ran) and, for depth 1, ``fla``'s ``chunk_gated_delta_rule`` (the closest fused
kernel; a linear memory without momentum). The card's two ceilings (a large device copy in GB/s, a large bf16 matmul
in TFLOP/s) are measured first, and the triton kernel's achieved fraction of the matmul ceiling is reported from the
analytic FLOPs of the chunked form.

With ``--tune``, the first length of every kernel shape without a measured default (``--retune``: every shape;
``--tune-every-size``: every length) also times each candidate launch configuration (``_gpu_candidates.candidates``:
tile width, warps, pipeline stages, dot precision; ``titans.ops.memory.triton_config``) that agrees with ``chunk`` to
1e-5, keeps the fastest forward and the fastest backward (backward time = forward+backward minus forward), and
measures the row with them; the choices are written to ``--tune-out``, a file that ``TITANS_TRITON_CONFIGS`` loads.
The candidates in ``_gpu_candidates.RISKY`` (tf32x3 kernels no GPU has run, which may end the process's CUDA
context) are timed only where ``--candidates`` names them in full; ``gpu_lease.sh`` runs each in a process of its own
(``LAST_CANDIDATES``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import failure, table, write_results  # noqa: E402
from _gpu_candidates import ONLY, RISKY, candidates  # noqa: E402
from _gpu_report import flops_per_token, kernel_keys, memory_dims, report  # noqa: E402
from _gpu_steps import ceilings, inputs, run_fla, run_ours, run_pair, run_titans_pytorch  # noqa: E402
from _gpu_timing import cuda_time, paired  # noqa: E402

from titans.ops import memory_update  # noqa: E402
from titans.ops.memory import triton_config as tc  # noqa: E402
from titans.ops.memory import triton_op, triton_seq  # noqa: E402

TUNE_TOL = 1e-5  # a candidate must agree with ``chunk`` this well (forward output and final weights)


def segments(B, T, H, D, depth, chunk, device="cuda") -> tuple[int, float]:
    """``(ranges, share)``: the ranges of tokens ``triton``'s forward+backward runs in at this size
    (``triton_op.save_budget``; 1: every chunk's state kept, more: checkpointed segments, each one more forward, and
    for calls in pieces a tail kept as it is, ``triton_op.piece_plan``) and the share of the tokens checkpointed."""
    dims = memory_dims(D, depth)
    W = [torch.empty(B, H, dims[i], dims[i + 1], device="meta") for i in range(depth)]
    v = torch.empty(1, 1, 1, D, device="meta")
    piece = triton_op._piece_config(W, v, chunk, B * H) if depth == 2 else None
    if piece is not None:  # chunk's loop in checkpointed segments of whole chunks, then a tail as it is
        q = torch.empty(B, 1, H, D, device=device, requires_grad=True)
        with torch.enable_grad():
            plan = triton_op.piece_plan(piece, W, q, chunk, T, 0, (q,))
        return len(plan), sum(hi - lo for lo, hi, ckpt in plan if ckpt) / T
    n = T // chunk
    with torch.enable_grad():
        per = triton_op._segment(n, W, torch.empty(B, H, 1, D, device=device), chunk, True)
    return -(-n // per), float(per < n)


def measure(make, tokens, repeats):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        step = make()
        t = cuda_time(step, repeats)
    except Exception as exc:  # out of memory, a missing package, a kernel that does not compile at this size
        return {"error": failure(exc)}
    return {"tok_s": tokens / t, "peak_MiB": torch.cuda.max_memory_allocated() / 2**20}


def measure_pair(B, T, H, D, depth, chunk, backward, rounds) -> dict:
    """``triton`` against ``chunk`` timed in alternation (:func:`_gpu_timing.paired`): ``{"ratio", "rounds"}``,
    the ratio being how many times faster ``triton`` is, or ``{"error"}``."""
    torch.cuda.empty_cache()
    try:
        r = paired(*run_pair(B, T, H, D, depth, chunk, backward), rounds)
    except Exception as exc:  # out of memory with both in flight
        return {"error": failure(exc)}
    return {"ratio": r["ratio"], "rounds": r["rounds"]}


def check(T, H, D, depth, chunk) -> float:
    """Relative error of ``triton`` against ``chunk`` (forward output and final weights, no gradient) at batch 2."""
    leaves, norm = inputs(2, T, H, D, depth)
    q, k, v, a, e, th, *W = leaves
    with torch.no_grad():
        o_c, s_c = memory_update(q, k, v, a, e, th, tuple(W), chunk_size=chunk, norm=norm, residual=True)
        o_t, s_t = memory_update(q, k, v, a, e, th, tuple(W), chunk_size=chunk, norm=norm, residual=True,
                                 impl="triton")
    errs = [(x - y).norm() / y.norm() for x, y in [(o_t, o_c), *zip(s_t.params, s_c.params)]]
    return float(max(errs))




RETUNE = []  # set by --retune: tune shapes with a measured default too


def fallbacks() -> list[str]:
    """The reasons ``impl="triton"`` fell back to ``chunk`` since the last call (a row must not time ``chunk``
    under the kernel's name without saying so; the report then says "falls back to chunk")."""
    out = sorted(triton_op._WARNED)
    triton_op._WARNED.clear()
    return out


def preset(D, depth, chunk) -> bool:
    """Whether both kernels of this size already have a measured configuration (``triton_config.TUNED``, or
    ``TITANS_TRITON_CONFIGS``): then ``--tune`` leaves them alone unless ``--retune``."""
    kf, kb = kernel_keys(D, depth, chunk)
    tc.config_for(*kf)  # reads the file, once
    known = set(tc.OVERRIDES) | (set() if RETUNE else set(tc.TUNED))
    return kf in known and kb in known


def use(D, depth, chunk, fwd_cfg, bwd_cfg):
    kf, kb = kernel_keys(D, depth, chunk)
    tc.OVERRIDES[kf], tc.OVERRIDES[kb] = fwd_cfg, bwd_cfg


def tune(row, B, T, H, D, depth, chunk, repeats) -> None:
    """Time every candidate at this size; leave the best forward and backward configurations in ``OVERRIDES``. A
    forward in pieces (``KernelConfig.piece``) runs ``chunk``'s backward whatever the backward configuration, so
    those candidates are a whole path: one wins where its forward+backward is faster than the best forward's with
    the best backward's of the others."""
    row["candidates"], best_f, best_b, best_piece = {}, None, None, None
    for name, (fc, bc) in candidates(D, depth, chunk).items():
        if name in RISKY and name not in ONLY:
            continue
        use(D, depth, chunk, fc, bc)
        r = {"fwd": str(fc), "bwd": str(bc)}
        try:
            r["max_rel_err"] = check(min(T, 1024), H, D, depth, chunk)
        except Exception as exc:  # a configuration that does not compile or launch here
            r["error"] = failure(exc)
        if why := fallbacks():
            r["error"] = f"falls back to chunk: {why[0][:120]}"
        if "error" not in r and r.get("max_rel_err", 1.0) <= TUNE_TOL:
            for pass_, fwd_bwd in (("fwd", False), ("fwd+bwd", True)):
                m = measure(partial(run_ours, "triton", B, T, H, D, depth, chunk, fwd_bwd), B * T, repeats)
                r.update({f"{pass_} {k}": v for k, v in m.items()})
        if fc.piece:
            if r.get("fwd+bwd tok_s") and (best_piece is None or r["fwd+bwd tok_s"] > best_piece[0]):
                best_piece = (r["fwd+bwd tok_s"], fc, bc)
        elif r.get("fwd tok_s") and (best_f is None or r["fwd tok_s"] > best_f[0]):
            best_f = (r["fwd tok_s"], fc)
        if not fc.piece and r.get("fwd tok_s") and r.get("fwd+bwd tok_s"):
            t_bwd = B * T / r["fwd+bwd tok_s"] - B * T / r["fwd tok_s"]
            if best_b is None or t_bwd < best_b[0]:
                best_b = (t_bwd, bc)
        row["candidates"][name] = r
        print(json.dumps({"D": D, "depth": depth, "chunk": chunk, "candidate": name, **r}), flush=True)
    f, b = (tc.default_config(*k) for k in kernel_keys(D, depth, chunk))
    if best_piece and (not (best_f and best_b) or B * T / best_piece[0] < B * T / best_f[0] + best_b[0]):
        use(D, depth, chunk, best_piece[1], best_piece[2])
        return
    use(D, depth, chunk, best_f[1] if best_f else f, best_b[1] if best_b else b)


def compile_kernels(jobs, H):
    """Run each job's kernels once at batch 2 (the same Triton specializations as the timed runs): fills the
    kernel cache, so that shards of the jobs can compile in parallel processes before the timed run. A job is
    ``(D, depth, chunk, T, candidate name or None for the defaults)``."""
    for D, depth, chunk, T, name in jobs:
        if name is not None:
            use(D, depth, chunk, *candidates(D, depth, chunk)[name])
        try:
            leaves, norm = inputs(2, min(T, 2048), H, D, depth, grad=True)
            q, k, v, a, e, th, *W = leaves
            o, _ = memory_update(q, k, v, a, e, th, tuple(W), chunk_size=chunk, norm=norm, residual=True,
                                 impl="triton")
            o.sum().backward()
            with torch.no_grad():
                memory_update(q, k, v, a, e, th, tuple(W), chunk_size=chunk, norm=norm, residual=True,
                              impl="triton")
            torch.cuda.synchronize()
            print(f"compiled D={D} depth={depth} chunk={chunk} {name}", flush=True)
        except Exception as exc:  # reported; the timed run reports it again for that candidate
            print(f"FAILED D={D} depth={depth} chunk={chunk} {name}: {failure(exc, 200)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1 << 17, help="tokens per call (batch = tokens / sequence)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--paired", type=int, default=3, metavar="ROUNDS",
                    help="then time triton and chunk in alternation, ROUNDS calls each, for the median of their "
                    "per-round ratios (0: not)")
    ap.add_argument("--lengths", default="8192,2048,32768", help="sequence lengths, most important first")
    ap.add_argument("--sizes", default=None, help="'D,depth,chunk,T;...' instead of the grid")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="start no new size after this many seconds (the rows so far are written)")
    ap.add_argument("--compile-only", action="store_true", help="only compile the kernels of this shard's sizes")
    ap.add_argument("--shard", default="0/1", help="i/n: this process takes sizes i, i+n, ... (with --compile-only)")
    ap.add_argument("--out", default="benchmarks/results/gpu_memory_op.json")
    ap.add_argument("--tune", action="store_true", help="time launch configurations at each kernel shape's first "
                    "length and use the fastest (see the module docstring)")
    ap.add_argument("--retune", action="store_true", help="with --tune, also the shapes that have a measured default")
    ap.add_argument("--tune-every-size", action="store_true",
                    help="with --tune, time the candidates at every size, not only at a kernel shape's first length "
                    "(which path is fastest can depend on the batch: triton_config.PIECE_FROM)")
    ap.add_argument("--candidates", default="", help="with --tune, only the candidates whose names start with one of "
                    "these (comma-separated prefixes, e.g. 'default,split'; one of RISKY only by its full name)")
    ap.add_argument("--tune-out", default="benchmarks/results/gpu_triton_configs.json",
                    help="where --tune writes the chosen configurations (TITANS_TRITON_CONFIGS reads it)")
    ap.add_argument("--baselines", default="titans-pytorch,fla",
                    help="comma-separated comparisons to time beside chunk and triton ('' for none: titans-pytorch at "
                    "batch 1 takes minutes per size)")
    ap.add_argument("--baselines-at", default="", metavar="SIZES",
                    help="'D,depth,chunk,T;...': time the baselines only at these sizes (e.g. titans-pytorch at the "
                    "acceptance size, 64,2,16,8192)")
    ap.add_argument("--report", nargs="+", metavar="JSON", help="print saved runs as a markdown table and exit")
    args = ap.parse_args()
    if args.report:
        print(report(args.report))
        return
    if args.retune:
        RETUNE.append(True)
    ONLY.extend(x for x in args.candidates.split(",") if x)
    baselines = {b for b in args.baselines.split(",") if b}
    if unknown := baselines - {"titans-pytorch", "fla"}:
        raise SystemExit(f"gpu_memory_op: --baselines: unknown {sorted(unknown)} (known: titans-pytorch, fla)")
    spec = [one.split(",") for one in args.baselines_at.split(";") if one]
    if any(len(one) != 4 or not all(x.strip().isdigit() for x in one) for one in spec):
        raise SystemExit(f"gpu_memory_op: --baselines-at {args.baselines_at!r}: expected 'D,depth,chunk,T;...'")
    baselines_at = {tuple(int(x) for x in one) for one in spec}
    if not torch.cuda.is_available():
        print("gpu_memory_op: no CUDA device here; nothing to measure (the interpreter tests cover correctness).")
        return
    H = args.heads
    lengths = [int(x) for x in args.lengths.split(",")]
    # The acceptance size first (depth 2, head dim 64, chunk 16, 8K), then the rest of the grid.
    sizes = [(D, depth, chunk, T) for T in lengths for D in (64, 128) for depth in (2, 1) for chunk in (16, 64)]
    if args.quick:
        sizes = [(64, 2, 16, 8192), (64, 1, 64, 2048)]
    if args.sizes:
        sizes = [tuple(int(x) for x in one.split(",")) for one in args.sizes.split(";")]
    if args.compile_only:
        i, n = (int(x) for x in args.shard.split("/"))
        kernels = sorted({(D, depth, chunk, 2048) for D, depth, chunk, _ in sizes})
        jobs = [(*size, name) for size in kernels
                for name in (candidates(*size[:3]) if args.tune and not preset(*size[:3]) else [None])]
        compile_kernels(jobs[i::n], H)
        return
    start = time.time()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "heads": H, "tokens": args.tokens,
              "ceilings": ceilings(), "rows": []}
    print(json.dumps(result["ceilings"]), flush=True)
    tuned = set()
    for D, depth, chunk, T in sizes:
        if time.time() - start > args.budget_s:
            result["stopped"] = f"budget {args.budget_s:.0f} s reached before D={D} depth={depth} chunk={chunk} T={T}"
            break
        B = max(1, args.tokens // T)
        row = {"D": D, "depth": depth, "chunk": chunk, "T": T, "B": B}
        here = baselines if not baselines_at or (D, depth, chunk, T) in baselines_at else set()
        torch.cuda.empty_cache()
        shape_key = (D, depth, chunk, T) if args.tune_every_size else (D, depth, chunk)
        if args.tune and shape_key not in tuned and not preset(D, depth, chunk):
            tune(row, B, T, H, D, depth, chunk, args.repeats)
            tuned.add(shape_key)
            tc.save_configs(args.tune_out, dict(tc.OVERRIDES))
        kf, kb = kernel_keys(D, depth, chunk)
        row["triton config"] = {"fwd": str(tc.config_for(*kf)), "bwd": str(tc.config_for(*kb))}
        row["triton segments"], row["triton checkpointed share"] = segments(B, T, H, D, depth, chunk)
        below = triton_seq.split_below(torch.device("cuda"), kf)
        few = below > B * H and not tc.config_for(*kf).split
        if few:
            row["triton forward split"] = f"{B * H} programs < {below}"
        fallbacks()
        try:
            row["max_rel_err"] = check(min(T, 1024), H, D, depth, chunk)
        except Exception as exc:  # reported, and the timings still run
            row["check_error"] = failure(exc)
        for name, fwd_bwd in (("fwd", False), ("fwd+bwd", True)):
            for impl in ("triton", "chunk"):
                r = measure(partial(run_ours, impl, B, T, H, D, depth, chunk, fwd_bwd), B * T, args.repeats)
                row.update({f"{impl} {name} {k}": v for k, v in r.items()})
            if args.paired and row.get(f"triton {name} tok_s") and row.get(f"chunk {name} tok_s"):
                r = measure_pair(B, T, H, D, depth, chunk, fwd_bwd, args.paired)
                row.update({f"triton/chunk {name} paired {k}": v for k, v in r.items()})
            if few:  # the forward ran split over programs because of the batch: what one program per head gives
                triton_seq.SPLIT_BELOW = 0
                r = measure(partial(run_ours, "triton", B, T, H, D, depth, chunk, fwd_bwd), B * T, args.repeats)
                triton_seq.SPLIT_BELOW = None
                row.update({f"triton-seq {name} {k}": v for k, v in r.items()})
            if fwd_bwd and row["triton segments"] > 1:
                # What checkpointing costs (one extra forward): every chunk's state kept, where it fits the card
                # (the budget is a memory choice, triton_op.save_budget).
                triton_op.SAVE_BUDGET_BYTES = 1 << 62
                r = measure(partial(run_ours, "triton", B, T, H, D, depth, chunk, True), B * T, args.repeats)
                triton_op.SAVE_BUDGET_BYTES = None
                row.update({f"triton-unsegmented fwd+bwd {k}": v for k, v in r.items()})
            # titans-pytorch keeps far more activations: halve its batch until it fits, then (at batch 1) its
            # sequence down to 1K, and say which batch and length it ran (its cost per token does not grow with T).
            bt, tt = B, T
            while "titans-pytorch" in here:
                r = measure(partial(run_titans_pytorch, bt, tt, H, D, depth, chunk, fwd_bwd), bt * tt, args.repeats)
                if "out of memory" not in r.get("error", "") or (bt == 1 and tt <= 1024):
                    break
                bt, tt = (bt // 2, tt) if bt > 1 else (1, tt // 2)
            if "titans-pytorch" in here:
                row.update({f"titans-pytorch {name} {k}": v for k, v in r.items()})
                row[f"titans-pytorch {name} batch"] = bt
                if tt != T:
                    row[f"titans-pytorch {name} T"] = tt
            if depth == 1 and "fla" in here:
                r = measure(partial(run_fla, B, T, H, D, fwd_bwd), B * T, args.repeats)
                row.update({f"fla-gdn {name} {k}": v for k, v in r.items()})
            if why := fallbacks():
                row["triton fallback"] = why[0]
            tok = row.get(f"triton {name} tok_s")
            if tok:
                flops = flops_per_token(D, depth, chunk, fwd_bwd) * H * tok
                row[f"triton {name} fraction of matmul ceiling"] = flops / (result["ceilings"]["bf16_matmul_TFLOPs"]
                                                                            * 1e12)
            for base in ("chunk", "titans-pytorch"):
                if tok and row.get(f"{base} {name} tok_s"):
                    row[f"triton/{base} {name}"] = tok / row[f"{base} {name} tok_s"]
        result["rows"].append(row)
        result["elapsed_s"] = time.time() - start
        result["kernels"] = [{"key": list(slot[0]), "config": str(slot[1]), **({"part": slot[2]} if slot[2:] else {}),
                              **v} for slot, v in tc.LAUNCHED.items()]
        print(json.dumps(row), flush=True)
        write_results(args.out, result)
    cols = ["D", "depth", "chunk", "T", "B", "max_rel_err"] + [f"{i} {n} tok_s" for n in ("fwd", "fwd+bwd")
                                                               for i in ("chunk", "triton", "titans-pytorch")]
    print(table(result["rows"], cols))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
