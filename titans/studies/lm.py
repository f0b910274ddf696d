"""Language-modeling study: every variant at the same size, on the same batches, for the same tokens.

    titans study lm [--steps 1000] [--out runs/study_lm] [--variants lmm,mac,mag,mal,swa,transformer]
    titans study lm --variants mac-slowforget,lmm-slowforget      # an ablation of titans.models.ablations
    titans study lm --variants lmm-linear-slowforget,lmm-slowforget,lmm-depth3-slowforget --long 4096,16384
                                                                   # memory depth against length (the paper's Fig. 7)
    titans study lm --seq-len 1024 --eval-windows 16 --long 16384 --out runs/study_lm_1024
                                                                   # trained on 4x longer windows, same tokens

Each variant trains into ``<out>/<variant>/`` with ``--resume`` semantics (stop it at any time and run the same
command again: finished variants are skipped, an interrupted one continues from its last checkpoint), then is
evaluated on the validation split at the training length and at 4x it (streamed in training-length pieces), and at
any ``--long`` lengths (the same number of tokens as at 4x, streamed the same way). ``<out>/results.json``,
``results.md``, ``loss.png`` and (with ``--long``) ``length.png`` are rewritten after each variant.

Sizes: MAC at d 128, 2 layers, 4 heads (segment 64, chunk 16, 4 persistent tokens); every other variant gets the
SwiGLU width that brings it to MAC's parameter count; windows of SWA / MAG / MAL are 64 tokens.

Training length: ``--seq-len`` (default 256) with the batch that keeps every step at ``8 x 256 = 2,048`` tokens
(1024 -> batch 2), so studies at different lengths see the same tokens in the same number of steps. A study folder
holds one training length; its results record it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..atomic import write_json, write_text
from ..data import prepare
from ..models import STUDY_ALPHA_INIT, MemoryConfig, ModelConfig, TitansLM, count_params, match_params
from ..models.ablations import ablate, split_name
from ..pyplot import pyplot
from ..train import RunConfig, TrainConfig, evaluate_split, latest_checkpoint, load_checkpoint, train
from ..train.checkpoint import check_run_folder, load_model_weights
from ..train.config import DataConfig
from ..train.plots import plot_runs

SEQ_LEN = 256  # the default training length
BATCH = 8
STEP_TOKENS = BATCH * SEQ_LEN  # every step of every study, whatever its training length


def model_config(variant: str) -> ModelConfig:
    base = dict(vocab_size=256, d_model=128, n_layers=2, n_heads=4, window=64, segment_len=64, n_persistent=4,
                memory=MemoryConfig(chunk_size=16, alpha_init=STUDY_ALPHA_INIT))  # as the committed tables
    mac = ModelConfig(variant="mac", **base)
    if variant == "mac":
        return mac
    with torch.device("meta"):
        target = count_params(TitansLM(mac))
    return match_params(ModelConfig(variant=variant, **base), target, multiple=16)


def named_config(name: str) -> ModelConfig:
    """``"mag"`` -> :func:`model_config`; ``"mac-slowforget"`` -> MAC's config with that ablation
    (:data:`titans.models.ablations.ABLATIONS`), its size left as the ablation makes it."""
    variant, ablation = split_name(name)
    return ablate(model_config(variant), ablation, name=name)


def batch_for(seq_len: int) -> int:
    """The batch that keeps a step at :data:`STEP_TOKENS` tokens; ``seq_len`` must divide it."""
    if seq_len <= 0 or STEP_TOKENS % seq_len:
        raise ValueError(f"seq_len={seq_len}: must divide the {STEP_TOKENS:,} tokens of a step (e.g. 256, 512, 1024)")
    return STEP_TOKENS // seq_len


def run_config(variant: str, steps: int, out: str, seed: int, seq_len: int = SEQ_LEN) -> RunConfig:
    """The study's run for one variant at training length ``seq_len`` (batch :func:`batch_for`)."""
    return RunConfig(model=named_config(variant), data=DataConfig(corpus="shakespeare", seq_len=seq_len),
                     train=TrainConfig(seed=seed, batch_size=batch_for(seq_len), max_steps=steps, lr=3e-3,
                                       warmup_steps=min(50, steps // 10), eval_every=max(1, steps // 10),
                                       eval_batches=4, ckpt_every=max(1, steps // 10), keep_last=1,
                                       log_every=max(1, steps // 100), out_dir=os.path.join(out, variant)))


def main(argv=None):
    ap = argparse.ArgumentParser(description="LM study: all variants, same size, same data, same tokens.")
    ap.add_argument("--steps", type=int, default=1000,
                    help=f"optimizer steps per variant ({STEP_TOKENS:,} tokens each)")
    ap.add_argument("--seq-len", type=int, default=SEQ_LEN,
                    help=f"training length in bytes (default {SEQ_LEN}); the batch keeps {STEP_TOKENS:,} tokens a step")
    ap.add_argument("--out", default="runs/study_lm")
    ap.add_argument("--variants", default="lmm,mac,mag,mal,swa,transformer",
                    help="comma-separated; a variant may carry an ablation (mac-slowforget, lmm-noconv, ...)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-windows", type=int, default=64, help="validation windows at 4x (4x as many at 1x)")
    ap.add_argument("--long", default="", help="more validation lengths in bytes, e.g. 4096,16384 (the same tokens "
                                              "as at 4x; a variant already evaluated gains the missing ones)")
    args = ap.parse_args(argv)
    try:
        long = sorted({int(x) for x in args.long.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--long {args.long!r}: expected comma-separated lengths in bytes, e.g. 4096,16384")
    seq_len = args.seq_len
    try:
        batch_for(seq_len)
    except ValueError as e:
        ap.error(f"--seq-len: {e}")
    if bad := [n for n in long if n <= seq_len]:
        ap.error(f"--long: {bad} must be longer than the training length {seq_len}")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    os.makedirs(args.out, exist_ok=True)
    variants = args.variants.split(",")
    for v in variants:
        try:
            named_config(v)  # a bad name fails before any work
        except ValueError as e:
            ap.error(f"--variants: {e}")
    data = prepare("shakespeare", "byte")
    res_path = os.path.join(args.out, "results.json")
    results = {}
    if os.path.exists(res_path):
        with open(res_path) as f:
            results = json.load(f)
    if mixed := {v: _seq_len(r) for v, r in results.items() if _seq_len(r) != seq_len}:
        ap.error(f"--seq-len {seq_len}: {args.out} holds variants trained at another length {mixed}; "
                 "use another --out")
    for v in variants:  # a run already in the folder is reused: it must be this one (not another --seed)
        cfg = run_config(v, args.steps, args.out, args.seed, seq_len)
        try:
            check_run_folder(cfg.train.out_dir, cfg.to_dict())
        except ValueError as e:
            ap.error(str(e))
    for v in variants:
        cfg = run_config(v, args.steps, args.out, args.seed, seq_len)
        done = results.get(v, {})
        missing = [n for n in long if str(n) not in done.get("val_bpb_long", {})]
        if done.get("steps") == args.steps and not missing:
            print(f"{v}: done, skipping")
            continue
        t0 = time.time()
        summary = train(cfg, resume=True) if done.get("steps") != args.steps else None
        model = TitansLM(cfg.model)
        ckpt = latest_checkpoint(cfg.train.out_dir)
        load_model_weights(model, load_checkpoint(ckpt)[0], ckpt)
        val = data.split("val")
        if summary is not None:
            ev1 = evaluate_split(model, val, length=seq_len, max_windows=4 * args.eval_windows)
            ev4 = evaluate_split(model, val, length=4 * seq_len, max_windows=args.eval_windows, piece=seq_len)
            done = {"params": count_params(model), "steps": args.steps, "tokens": args.steps * STEP_TOKENS,
                    "seq_len": seq_len,
                    "train_tokens_per_s": summary["tokens_per_s"], "wall_seconds": round(time.time() - t0, 1),
                    "val_bpb_1x": ev1["bpb"], "val_bpb_4x": ev4["bpb"], "config": cfg.model.to_dict()}
        long_bpb = dict(done.get("val_bpb_long", {}))
        for n in missing:
            # As many tokens as at 4x (fewer, longer windows), streamed in training-length pieces.
            windows = max(1, args.eval_windows * 4 * seq_len // n)
            long_bpb[str(n)] = evaluate_split(model, val, length=n, max_windows=windows, piece=seq_len)["bpb"]
        if long_bpb:
            done["val_bpb_long"] = dict(sorted(long_bpb.items(), key=lambda kv: int(kv[0])))
        results[v] = done
        write_json(res_path, results)
        write_table(args.out, results)
        plot_runs({v: os.path.join(args.out, v, "log.csv") for v in variants}, os.path.join(args.out, "loss.png"),
                  "byte-level Shakespeare, same size and tokens", panels=True)
        plot_lengths(args.out, results)
    print(write_table(args.out, results))


def _seq_len(r: dict) -> int:
    """The training length of a result (results written before ``--seq-len`` existed were trained at 256)."""
    return r.get("seq_len", SEQ_LEN)


def _lengths(r: dict) -> dict[int, float]:
    """A result's validation bpb by evaluation length (bytes)."""
    n = _seq_len(r)
    return {n: r["val_bpb_1x"], 4 * n: r["val_bpb_4x"], **{int(k): b for k, b in r.get("val_bpb_long", {}).items()}}


def write_table(out: str, results: dict) -> str:
    """``results.md``: one row per variant, validation bpb at every length evaluated (at 4x and past it streamed in
    training-length pieces)."""
    seq_len = _seq_len(next(iter(results.values()))) if results else SEQ_LEN
    rest = sorted({n for r in results.values() for n in _lengths(r)} - {seq_len, 4 * seq_len})
    lines = [f"| variant | params | tokens | train tok/s | val bpb @ {seq_len} | val bpb @ {4 * seq_len} (streamed) |"
             + "".join(f" @ {n:,} |" for n in rest), "|---|---|---|---|---|---|" + "---|" * len(rest)]
    for v, r in sorted(results.items(), key=lambda kv: kv[1]["val_bpb_1x"]):
        at = _lengths(r)
        lines.append(f"| {v} | {r['params']:,} | {r['tokens']:,} | {r['train_tokens_per_s']:,.0f} | "
                     f"{r['val_bpb_1x']:.3f} | {r['val_bpb_4x']:.3f} |"
                     + "".join(f" {at[n]:.3f} |" if n in at else " - |" for n in rest))
    table = "\n".join(lines)
    write_text(os.path.join(out, "results.md"), table + "\n")
    return table


def plot_lengths(out: str, results: dict):
    """``length.png``: validation bpb against evaluation length, one line per variant (only where a variant was
    evaluated past 4x)."""
    plt = pyplot()
    rows = {v: _lengths(r) for v, r in results.items() if r.get("val_bpb_long")}
    if plt is None or not rows:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for v, at in rows.items():
        ns = sorted(at)
        ax.plot(ns, [at[n] for n in ns], marker="o", label=v)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"evaluation length (bytes; trained at {_seq_len(next(iter(results.values())))})",
           ylabel="validation bits per byte",
           title="byte-level Shakespeare: bpb against length")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "length.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
