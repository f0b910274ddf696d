"""Training throughput against sequence length on CPU: the paper's Figs. 8 and 9 ([V1]) at this machine's scale.

    python benchmarks/scaling.py                                   # both sections (~10 min, 2 cores)
    python benchmarks/scaling.py --sections depth --lengths 512,2048,8192
    python benchmarks/scaling.py --tokens 4096 --out FILE.json     # a smaller step
    python benchmarks/scaling.py --batch 1 --out FILE.json         # one sequence a step: the tokens grow with it

1. ``depth`` (Fig. 8): the LMM with a memory of depth 1 to 4, tokens/s of a training step against the sequence length.
2. ``variants`` (Fig. 9): every variant, the same.

Every step holds the same number of tokens (``--tokens``, as batch x length: 16 x 512 ... 1 x 8192), so a model
whose arithmetic is linear in the length does the same arithmetic at every length; but the memory walks its chunks
in order, so a longer sequence is more, smaller chunk steps (each over fewer sequences), and where a step's cost is
more its operations' than their arithmetic (a CPU at these sizes) tokens/s falls with the length all the same. With
``--batch N`` every step holds N sequences instead: its tokens grow with the length, each chunk's work stays the same,
and tokens/s stays flat where the cost per chunk does. A step is one forward, backward and AdamW update of a model at
d 128, 2 layers, 4 heads, byte vocabulary (the ``small`` preset narrowed; memory chunk 16, depth-2 memory unless
varied, 8 persistent tokens, attention window 512 for SWA / MAG / MAL and MAC segments of 512), float32; tokens/s is
the best of ``--repeats`` steps after a warm-up, each (model, length) in its own process. The same width and depth
for every variant, so the hybrids carry both mixers and are not matched in size. Writes the table, ``--out`` (JSON)
and a plot beside it (``.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_isolated, table, write_results  # noqa: E402

THREADS = 2
VARIANTS = ("lmm", "mac", "mag", "mal", "swa", "transformer")


def model_config(variant: str, depth: int = 2):
    """The benchmark's model: the ``small`` preset at d 128 / 2 layers, window and MAC segment 512."""
    from dataclasses import replace

    from titans.models import small

    cfg = small(variant, d_model=128, n_layers=2, n_heads=4, window=512, segment_len=512)
    return replace(cfg, memory=replace(cfg.memory, depth=depth))


def train_step(spec: dict) -> dict:
    """Tokens/s of one training step on ``batch`` (default ``tokens // length``) sequences of ``length`` (best of
    ``repeats``)."""
    import torch

    from titans.models import TitansLM, count_params

    torch.set_num_threads(spec.get("threads", THREADS))
    torch.manual_seed(0)
    model = TitansLM(model_config(spec["variant"], spec.get("depth", 2)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = spec.get("batch") or spec["tokens"] // spec["length"]
    idx = torch.randint(0, 256, (batch, spec["length"] + 1))

    def step():
        out = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    step()  # warm-up: the optimizer's first allocation, the allocator's caches
    times = []
    for _ in range(spec.get("repeats", 2)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {**spec, "batch": batch, "params_m": count_params(model) / 1e6,
            "tokens_per_s": batch * spec["length"] / min(times)}


def plot(result: dict, path: str) -> str | None:
    """Tokens/s against length: the LMM by memory depth (left), every variant (right)."""
    from titans.pyplot import pyplot

    plt = pyplot()
    if plt is None:
        return None
    panels = [(name, rows) for name, rows in (("LMM by memory depth (Fig. 8)", result.get("depth", [])),
                                              ("variants, depth-2 memory (Fig. 9)", result.get("variants", [])))
              if rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        key = "depth" if title.startswith("LMM") else "variant"
        for label in dict.fromkeys(r[key] for r in rows):
            pts = sorted((r["length"], r["tokens_per_s"]) for r in rows if r[key] == label and "tokens_per_s" in r)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"depth {label}" if key == "depth" else label)
        ax.set_xscale("log", base=2)
        per_step = (f"batch {result['batch']}" if result.get("batch")
                    else f"batch x length = {result['tokens']:,} tokens")
        ax.set(xlabel=f"sequence length ({per_step})", ylabel="training tokens/s",
               title=title, ylim=(0, None))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _relative(rows: list[dict], key: str) -> None:
    """Each row's tokens/s as a fraction of the same model's at the shortest length (1.0: linear in the length)."""
    first = {}
    for r in sorted(rows, key=lambda r: r["length"]):
        if "tokens_per_s" in r:
            base = first.setdefault(r[key], r["tokens_per_s"])
            r["vs_shortest"] = round(r["tokens_per_s"] / base, 3)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="depth,variants", help="depth, variants, or both")
    ap.add_argument("--lengths", default="512,1024,2048,4096,8192", help="sequence lengths (each divides --tokens)")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per training step (batch x length)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step at every length (instead of --tokens)")
    ap.add_argument("--depths", default="1,2,3,4", help="memory depths of the depth section")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per measurement (the best is kept)")
    ap.add_argument("--threads", type=int, default=THREADS, help="intra-op threads of each measured process")
    ap.add_argument("--out", default="benchmarks/results/scaling.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(train_step(json.loads(args.one))))
        return {}
    sections = [s for s in args.sections.split(",") if s]
    if bad := [s for s in sections if s not in ("depth", "variants")]:
        raise SystemExit(f"--sections {args.sections!r}: unknown {bad} (depth, variants)")
    try:
        lengths = [int(x) for x in args.lengths.split(",")]
        depths = [int(x) for x in args.depths.split(",")]
    except ValueError:
        raise SystemExit(f"--lengths {args.lengths!r} / --depths {args.depths!r}: comma-separated integers") from None
    if args.batch is not None and args.batch < 1:
        raise SystemExit(f"--batch {args.batch}: must be >= 1")
    if bad := [n for n in lengths if n < 1 or (args.batch is None and args.tokens % n)]:
        raise SystemExit(f"--lengths {bad}: each must divide --tokens {args.tokens}")
    if bad := [d for d in depths if d < 1]:
        raise SystemExit(f"--depths {bad}: each must be >= 1")
    variants = [v for v in args.variants.split(",") if v]
    if bad := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"--variants {bad}: not among {list(VARIANTS)}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats {args.repeats}: must be >= 1")

    import torch

    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": args.threads, "tokens": args.tokens, "batch": args.batch, "repeats": args.repeats}
    base = {"tokens": args.tokens, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}
    plans = {"depth": ("depth", [{"variant": "lmm", "depth": d} for d in depths]),
             "variants": ("variant", [{"variant": v} for v in variants])}
    for section in sections:
        key, models = plans[section]
        rows = []
        for m in models:
            for n in lengths:
                rows.append(run_isolated(__file__, {**base, **m, "depth": m.get("depth", 2), "length": n}))
                print(json.dumps({k: rows[-1].get(k) for k in (key, "length", "batch", "tokens_per_s", "error")}),
                      flush=True)
        _relative(rows, key)
        result[section] = rows
        print(f"\n{section}\n\n" + table(rows, [key, "length", "batch", "params_m", "tokens_per_s", "vs_shortest"]))
    write_results(args.out, result)
    if png := plot(result, os.path.splitext(args.out)[0] + ".png"):
        print(f"wrote {png}")
    return result


if __name__ == "__main__":
    main()
