"""Benchmark of the models on CPU: training throughput per variant, and constant-memory streaming.

    python benchmarks/models.py                              # training table + 1M-token streams (~15 min, 2 cores)
    python benchmarks/models.py --stream-tokens 100000       # shorter streams
    python benchmarks/models.py --sections decode              # decoding only
    python benchmarks/models.py --sections save --variants lmm,mac,mag,mal   # the memory's save_intermediates
    python benchmarks/models.py --out FILE.json
    python benchmarks/models.py --threads 1 --sections save --variants lmm --out FILE.json   # one thread a process

1. Training: one forward+backward+AdamW step on a batch of 1 x ``--context`` tokens at the ``small`` preset widened
   to d 256 / 4 layers (every variant at the same width and depth; attention window 512, MAC segment 512), tokens/s
   (best of 2 after a warm-up) and the peak resident memory of the step over the model's, each in its own process.
2. Streaming: a ``small`` LMM and MAC read ``--stream-tokens`` random tokens in pieces of 1024 (no gradients),
   carrying the state; prints seconds per 1K tokens and resident memory over the first and the last pieces.
3. Decoding: every ``small`` variant generates ``--decode-tokens`` tokens greedily, one call per token with the carried
   state, after a prompt of 256; tokens/s (best of 3), with the memory's one-token path (``step.py``, and the
   convolution's taps) and with the dual form and the convolution kernel for every call (as before that path
   existed), the two alternating in one process; and the operator calls (ATen, views included) of one token's forward
   through each.
4. ``save_intermediates``: the training step of section 1 for the memory variants with the memory's pieces
   recomputing their intermediates in the backward (the default) and keeping them from the forward, each in its own
   process, the two alternating twice (best tokens/s of each, lowest peak); then one profiled step of each: the
   share of the step spent in the memory op (forward and backward) and its backward's seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import reset_peak, rss_kib, run_isolated, table, write_results  # noqa: E402

THREADS = 2
SECTIONS = ("train", "stream", "decode", "save")


def _config(variant: str, context: int, save: bool = False):
    from dataclasses import replace

    from titans.models import small

    cfg = small(variant, d_model=256, n_layers=4, n_heads=4, window=512, segment_len=512)
    return replace(cfg, memory=replace(cfg.memory, save_intermediates=save))


def _train_step(spec: dict) -> dict:
    import torch

    from titans.models import TitansLM, count_params

    torch.set_num_threads(spec.get("threads", THREADS))
    torch.manual_seed(0)
    model = TitansLM(_config(spec["variant"], spec["context"], spec.get("save", False)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 256, (1, spec["context"] + 1))

    def step():
        out = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    base = rss_kib()
    reset_peak()
    step()  # warm-up; its peak includes the optimizer's first allocation of its moments
    peak = (rss_kib("VmHWM") - base) / 1024
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    shares = _memory_share(step) if spec.get("profile") else {}
    return {**spec, "params_m": count_params(model) / 1e6, "tokens_per_s": spec["context"] / min(times),
            "peak_mib": peak, **shares}


def _memory_share(step) -> dict:
    """One more step under ``torch.profiler``: its wall time and the CPU time of the memory op inside it, forward
    (every ``memory_update`` call of the layers) and backward (the ``ChunkPiece`` nodes), in seconds."""
    from torch.profiler import ProfilerActivity, profile, record_function

    import titans.layers.memory as layer

    op = layer.memory_update

    def timed(*args, **kw):
        with record_function("memory_update"):
            return op(*args, **kw)

    layer.memory_update = timed
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            step()
            wall = time.perf_counter() - t0
    finally:
        layer.memory_update = op
    cpu = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
    return {"profiled_step_s": wall, "memory_fwd_s": cpu.get("memory_update", 0.0),
            "memory_bwd_s": cpu.get("ChunkPieceBackward", 0.0)}


def _stream(spec: dict) -> dict:
    import torch

    from titans.models import TitansLM, small, state_nbytes

    torch.set_num_threads(spec.get("threads", THREADS))
    torch.manual_seed(0)
    model = TitansLM(small(spec["variant"])).eval()
    piece, total = 1024, spec["tokens"]
    g = torch.Generator().manual_seed(0)
    state, rows = None, []
    base = rss_kib()
    with torch.no_grad():
        for start in range(0, total, piece):
            idx = torch.randint(0, 256, (1, min(piece, total - start)), generator=g)
            t0 = time.perf_counter()
            out = model(idx, state=state)
            state = out.state
            dt = time.perf_counter() - t0
            rows.append({"tokens": start + idx.shape[1], "s_per_1k": dt * 1000 / idx.shape[1],
                         "rss_mib": (rss_kib() - base) / 1024, "state_kib": state_nbytes(state) / 1024})
    k = min(16, len(rows) // 2 or 1)
    first, last = rows[:k], rows[-k:]

    def avg(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    return {**spec, "start_s_per_1k": avg(first, "s_per_1k"), "end_s_per_1k": avg(last, "s_per_1k"),
            "start_rss_mib": avg(first, "rss_mib"), "end_rss_mib": avg(last, "rss_mib"),
            "peak_rss_mib": max(r["rss_mib"] for r in rows), "state_kib": rows[-1]["state_kib"],
            "trace": rows[:: max(1, len(rows) // 64)]}


def _decode(spec: dict) -> dict:
    import torch

    from titans.layers import conv
    from titans.models import TitansLM, small
    from titans.ops.memory import chunk

    torch.set_num_threads(spec.get("threads", THREADS))
    torch.manual_seed(0)
    model = TitansLM(small(spec["variant"])).eval()
    prompt = torch.randint(0, 256, (1, 256), generator=torch.Generator().manual_seed(0))
    modes = {"dual_form": (False, 0), "step": (True, conv.SHORT)}  # (chunk.ONE_TOKEN_STEP, conv.SHORT)
    times, generated = {m: [] for m in modes}, {}
    with torch.no_grad():
        state = model(prompt[:, :-1]).state
        for rep in range(4):  # alternate the two paths (drift of the machine hits both); the first round warms up
            for mode, (step, short) in modes.items():
                chunk.ONE_TOKEN_STEP, conv.SHORT = step, short
                t0 = time.perf_counter()
                tokens, _ = model.generate(prompt[:, -1:], spec["tokens"], temperature=0, state=state)
                if rep:
                    times[mode].append(time.perf_counter() - t0)
                generated[mode] = tokens[0, 1:].tolist()
        calls = {}
        for mode, (step, short) in modes.items():  # operator calls of one token's forward, views included
            chunk.ONE_TOKEN_STEP, conv.SHORT = step, short
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                model(prompt[:, -1:], state=state)
            calls[mode] = sum(1 for ev in prof.events() if ev.name.startswith("aten::") and not (
                ev.cpu_parent is not None and ev.cpu_parent.name.startswith("aten::")))
    return {**spec, **{f"{m}_tokens_per_s": spec["tokens"] / min(t) for m, t in times.items()},
            **{f"{m}_calls_per_token": c for m, c in calls.items()},
            "same_tokens": generated["dual_form"] == generated["step"]}


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=4096, help="training context (tokens)")
    ap.add_argument("--stream-tokens", type=int, default=1_000_000, help="tokens per streaming run")
    ap.add_argument("--decode-tokens", type=int, default=256, help="tokens generated per decoding run")
    ap.add_argument("--variants", default="lmm,mac,mag,mal,swa,transformer")
    ap.add_argument("--sections", default="train,stream,decode", help="which sections to run")
    ap.add_argument("--threads", type=int, default=THREADS, help="intra-op threads of each measured process")
    ap.add_argument("--out", default="benchmarks/results/models.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps({"train": _train_step, "stream": _stream, "decode": _decode}[spec["task"]](spec)))
        return

    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    result = {}
    if os.path.exists(args.out):  # keep the other sections' results when running some of them
        with open(args.out) as f:
            result = json.load(f)
    if "machine" in result:  # a file of the old layout: one record for all sections, not knowing which it fits
        raise SystemExit(f"--out {args.out}: has one 'machine' for all its sections; give each section its own "
                         "record under 'machines' (see git log of the file) or write to a new file")
    # each section keeps the machine and day it ran on: a rerun of one section leaves the others' records
    here = {"platform": platform.platform(), "threads": args.threads, "cpus": os.cpu_count(),
            "date": datetime.date.today().isoformat()}
    result["machines"] = {**result.get("machines", {}), **{s: here for s in sections}}
    train = result.get("train", []) if "train" not in sections else []
    for v in (args.variants.split(",") if "train" in sections else []):
        r = run_isolated(__file__, {"task": "train", "variant": v, "context": args.context, "threads": args.threads})
        print(r, flush=True)
        train.append(r)
    result["train"] = train
    streams = result.get("stream", []) if "stream" not in sections else []
    for v in (("lmm", "mac") if "stream" in sections else ()):
        r = run_isolated(__file__, {"task": "stream", "variant": v, "tokens": args.stream_tokens,
                                    "threads": args.threads})
        print({k: val for k, val in r.items() if k != "trace"}, flush=True)
        streams.append(r)
    result["stream"] = streams
    decode = result.get("decode", []) if "decode" not in sections else []
    for v in (args.variants.split(",") if "decode" in sections else []):
        r = run_isolated(__file__, {"task": "decode", "variant": v, "tokens": args.decode_tokens,
                                    "threads": args.threads})
        row = {k: val for k, val in r.items() if k != "task"}
        if r.get("step_tokens_per_s"):
            row["speedup"] = r["step_tokens_per_s"] / r["dual_form_tokens_per_s"]
        print(row, flush=True)
        decode.append(row)
    result["decode"] = decode
    saves = result.get("save", []) if "save" not in sections else []
    for v in (args.variants.split(",") if "save" in sections else []):
        runs = {False: [], True: []}
        for _ in range(2):  # alternate the two modes: drift of the machine hits both
            for save in runs:
                runs[save].append(run_isolated(__file__, {"task": "train", "variant": v, "context": args.context,
                                                          "save": save, "threads": args.threads}))
        prof = {save: run_isolated(__file__, {"task": "train", "variant": v, "context": args.context, "save": save,
                                              "threads": args.threads, "profile": True}) for save in runs}
        row = {"variant": v, "context": args.context, "threads": args.threads}
        for save, name in ((False, "recompute"), (True, "save")):
            row[f"{name}_tokens_per_s"] = max(r["tokens_per_s"] for r in runs[save])
            row[f"{name}_peak_mib"] = min(r["peak_mib"] for r in runs[save])
            p = prof[save]  # a profiled step, in a process of its own
            row[f"{name}_memory_share"] = (p["memory_fwd_s"] + p["memory_bwd_s"]) / p["profiled_step_s"]
            row[f"{name}_memory_bwd_s"] = p["memory_bwd_s"]
        row["speedup"] = row["save_tokens_per_s"] / row["recompute_tokens_per_s"]
        row["peak_ratio"] = row["save_peak_mib"] / row["recompute_peak_mib"]
        print(row, flush=True)
        saves.append(row)
    result["save"] = saves

    print(f"\n## Training step (d 256, 4 layers, 1 x {args.context} tokens, fp32, {args.threads} threads)\n")
    print(table(train, ["variant", "params_m", "tokens_per_s", "peak_mib"]))
    print(f"\n## Streaming {args.stream_tokens:,} tokens (small preset, pieces of 1024, no gradients)\n")
    print(table(streams, ["variant", "tokens", "start_s_per_1k", "end_s_per_1k", "start_rss_mib", "end_rss_mib",
                          "peak_rss_mib", "state_kib"]))
    print(f"\n## Decoding {args.decode_tokens} tokens after a prompt of 256 (small preset, batch 1, greedy)\n")
    print(table(decode, ["variant", "dual_form_tokens_per_s", "step_tokens_per_s", "speedup",
                         "dual_form_calls_per_token", "step_calls_per_token", "same_tokens"]))
    print(f"\n## Training step with the memory's save_intermediates (as the training table, {args.threads} threads)\n")
    print(table(saves, ["variant", "recompute_tokens_per_s", "save_tokens_per_s", "speedup", "recompute_peak_mib",
                        "save_peak_mib", "peak_ratio"]))
    print("\nA profiled step of each (another process each; the profiler slows small operators, so these are shares,"
          " not speeds): the memory op's share of the step and its backward's seconds\n")
    print(table(saves, ["variant", "recompute_memory_share", "save_memory_share", "recompute_memory_bwd_s",
                        "save_memory_bwd_s"]))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
