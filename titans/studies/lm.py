"""Language-modeling study: every variant at the same size, on the same batches, for the same tokens.

    titans study lm [--steps 1000] [--out runs/study_lm] [--variants lmm,mac,mag,mal,swa,transformer]
    titans study lm --variants mac-slowforget,lmm-slowforget      # an ablation of titans.models.ablations

Each variant trains into ``<out>/<variant>/`` with ``--resume`` semantics (stop it at any time and run the same
command again: finished variants are skipped, an interrupted one continues from its last checkpoint), then is
evaluated on the validation split at the training length and at 4x it (streamed in training-length pieces).
``<out>/results.json``, ``results.md`` and ``loss.png`` are rewritten after each variant.

Sizes: MAC at d 128, 2 layers, 4 heads (segment 64, chunk 16, 4 persistent tokens); every other variant gets the
SwiGLU width that brings it to MAC's parameter count; windows of SWA / MAG / MAL are 64 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..data import prepare
from ..models import STUDY_ALPHA_INIT, MemoryConfig, ModelConfig, TitansLM, count_params, match_params
from ..models.ablations import ablate, split_name
from ..train import RunConfig, TrainConfig, evaluate_split, latest_checkpoint, load_checkpoint, train
from ..train.checkpoint import load_model_weights
from ..train.config import DataConfig
from ..train.plots import plot_runs

SEQ_LEN = 256
BATCH = 8


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


def run_config(variant: str, steps: int, out: str, seed: int) -> RunConfig:
    return RunConfig(model=named_config(variant), data=DataConfig(corpus="shakespeare", seq_len=SEQ_LEN),
                     train=TrainConfig(seed=seed, batch_size=BATCH, max_steps=steps, lr=3e-3,
                                       warmup_steps=min(50, steps // 10), eval_every=max(1, steps // 10),
                                       eval_batches=4, ckpt_every=max(1, steps // 10), keep_last=1,
                                       log_every=max(1, steps // 100), out_dir=os.path.join(out, variant)))


def main(argv=None):
    ap = argparse.ArgumentParser(description="LM study: all variants, same size, same data, same tokens.")
    ap.add_argument("--steps", type=int, default=1000, help=f"optimizer steps per variant ({BATCH} x {SEQ_LEN} tokens)")
    ap.add_argument("--out", default="runs/study_lm")
    ap.add_argument("--variants", default="lmm,mac,mag,mal,swa,transformer",
                    help="comma-separated; a variant may carry an ablation (mac-slowforget, lmm-noconv, ...)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-windows", type=int, default=64, help="validation windows at 4x (4x as many at 1x)")
    args = ap.parse_args(argv)
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
    for v in variants:
        cfg = run_config(v, args.steps, args.out, args.seed)
        if results.get(v, {}).get("steps") == args.steps:
            print(f"{v}: done, skipping")
            continue
        t0 = time.time()
        summary = train(cfg, resume=True)
        model = TitansLM(cfg.model)
        ckpt = latest_checkpoint(cfg.train.out_dir)
        load_model_weights(model, load_checkpoint(ckpt)[0], ckpt)
        val = data.split("val")
        ev1 = evaluate_split(model, val, length=SEQ_LEN, max_windows=4 * args.eval_windows)
        ev4 = evaluate_split(model, val, length=4 * SEQ_LEN, max_windows=args.eval_windows, piece=SEQ_LEN)
        results[v] = {"params": count_params(model), "steps": args.steps, "tokens": args.steps * BATCH * SEQ_LEN,
                      "train_tokens_per_s": summary["tokens_per_s"], "wall_seconds": round(time.time() - t0, 1),
                      "val_bpb_1x": ev1["bpb"], "val_bpb_4x": ev4["bpb"], "config": cfg.model.to_dict()}
        with open(res_path, "w") as f:
            json.dump(results, f, indent=1)
        write_table(args.out, results)
        plot_runs({v: os.path.join(args.out, v, "log.csv") for v in variants}, os.path.join(args.out, "loss.png"),
                  "byte-level Shakespeare, same size and tokens", panels=True)
    print(write_table(args.out, results))


def write_table(out: str, results: dict) -> str:
    lines = ["| variant | params | tokens | train tok/s | val bpb @ 256 | val bpb @ 1024 (streamed) |",
             "|---|---|---|---|---|---|"]
    for v, r in sorted(results.items(), key=lambda kv: kv[1]["val_bpb_1x"]):
        lines.append(f"| {v} | {r['params']:,} | {r['tokens']:,} | {r['train_tokens_per_s']:,.0f} | "
                     f"{r['val_bpb_1x']:.3f} | {r['val_bpb_4x']:.3f} |")
    table = "\n".join(lines)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    return table


if __name__ == "__main__":
    main()
