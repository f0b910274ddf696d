"""The main job (``make demo``): a small Titans MAC against a Transformer++ of the same size, same data, same tokens.

1. prepares the embedded corpus (Shakespeare's plays, byte-level) into token files;
2. trains a MAC model and a Transformer++ whose SwiGLU width is set so both have the same parameter count, on the
   same batches (same seed) for the same number of tokens;
3. evaluates both on the validation split at the training length and at 4x it (streamed in training-length pieces);
4. samples a continuation from each; prints a results table and writes it, the JSON and the loss plot to
   ``runs/demo/``.

About 8 minutes on 2 CPU cores. ``python -m titans.demo --steps 50`` for a quick look. Results at this scale are
what they are (a 0.8M-parameter model, about a million tokens): they say nothing about the paper's scale.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from .atomic import write_json, write_text
from .data import get_tokenizer, prepare
from .models import MemoryConfig, ModelConfig, TitansLM, count_params, match_params
from .train import RunConfig, TrainConfig, evaluate_split, train
from .train.config import DataConfig
from .train.plots import plot_runs

SEQ_LEN = 256


def configs(steps: int, out_root: str) -> dict[str, RunConfig]:
    mac = ModelConfig(variant="mac", vocab_size=256, d_model=128, n_layers=2, n_heads=4, segment_len=64,
                      n_persistent=4, memory=MemoryConfig(chunk_size=16))
    with torch.device("meta"):
        target = count_params(TitansLM(mac))
    tfm = match_params(ModelConfig(variant="transformer", vocab_size=256, d_model=128, n_layers=2, n_heads=4),
                       target, multiple=16)
    runs = {}
    for name, model in (("mac", mac), ("transformer", tfm)):
        runs[name] = RunConfig(model=model, data=DataConfig(corpus="shakespeare", seq_len=SEQ_LEN),
                               train=TrainConfig(batch_size=8, max_steps=steps, lr=3e-3,
                                                 warmup_steps=min(30, steps // 10), eval_every=max(1, steps // 6),
                                                 eval_batches=4, ckpt_every=steps, keep_last=1,
                                                 log_every=max(1, steps // 60), out_dir=os.path.join(out_root, name)))
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description="MAC vs Transformer++ on byte-level Shakespeare (the main job).")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per model (8 x 256 tokens each)")
    ap.add_argument("--out", default="runs/demo", help="output folder")
    ap.add_argument("--eval-windows", type=int, default=48, help="validation windows per length")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    os.makedirs(args.out, exist_ok=True)
    data = prepare("shakespeare", "byte")
    print(f"data: {data.path} ({data.meta['tokens']['train']:,} train / {data.meta['tokens']['val']:,} val tokens)")
    runs = configs(args.steps, args.out)
    tok = get_tokenizer("byte")
    results = {}
    for name, cfg in runs.items():
        t0 = time.time()
        summary = train(cfg)
        model = TitansLM(cfg.model)
        from .train.checkpoint import latest_checkpoint, load_checkpoint, load_model_weights

        ckpt = latest_checkpoint(cfg.train.out_dir)
        load_model_weights(model, load_checkpoint(ckpt)[0], ckpt)
        model.eval()
        val = data.split("val")
        ev1 = evaluate_split(model, val, length=SEQ_LEN, max_windows=args.eval_windows * 4)
        ev4 = evaluate_split(model, val, length=4 * SEQ_LEN, max_windows=args.eval_windows, piece=SEQ_LEN)
        prompt = "ROMEO:\n"
        out, _ = model.generate(torch.tensor([tok.encode(prompt)]), 240, temperature=0.8, top_k=40,
                                generator=torch.Generator().manual_seed(0))
        results[name] = {"params": count_params(model), "tokens": cfg.train.max_steps * 8 * SEQ_LEN,
                         "train_seconds": round(time.time() - t0, 1), "train_tokens_per_s": summary["tokens_per_s"],
                         "val_bpb_1x": ev1["bpb"], "val_bpb_4x": ev4["bpb"], "sample": tok.decode(out[0].tolist())}
    lines = ["| model | params | training tokens | train time (s) | val bpb @ 256 | val bpb @ 1024 (streamed) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['params']:,} | {r['tokens']:,} | {r['train_seconds']} | {r['val_bpb_1x']:.3f} "
                     f"| {r['val_bpb_4x']:.3f} |")
    table = "\n".join(lines)
    png = plot_runs({n: os.path.join(c.train.out_dir, "log.csv") for n, c in runs.items()},
                    os.path.join(args.out, "loss.png"), "MAC vs Transformer++: same size, same tokens (Shakespeare)")
    write_json(os.path.join(args.out, "results.json"), results)
    write_text(os.path.join(args.out, "results.md"),
               table + "\n\n" + "\n\n".join(f"**{n}** sample:\n\n```\n{r['sample']}\n```" for n, r in results.items()))
    print("\n" + table + "\n")
    for name, r in results.items():
        print(f"--- {name} sample ---\n{r['sample']}\n")
    print(f"wrote {args.out}/results.md, results.json" + (f", {png}" if png else ""))


if __name__ == "__main__":
    main()
