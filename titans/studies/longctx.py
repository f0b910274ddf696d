"""Long-context studies: every variant trained on short S-NIAH (or BABILong-style) instances, tested far past the
training length; the paper's Table-5 ablations on the same task; memory depth 1-4 on MQAR.

    titans study niah [--steps 3000] [--variants lmm,mac,mag,mal,swa,transformer,lmm-linear,lmm-noconv,...]
    titans study niah --task babilong:qa1,qa2,qa3 --seq-len 512 --batch 2   # one model per variant, every task
    titans study mqar [--steps 3000] [--depths 1,2,3,4]

Every model is the LM study's size (MAC at d 128, 2 layers; the others matched to its parameter count), trained with
the same batches (4 x 256 tokens of ``niah:passkey``, loss on the answer tokens; a Transformer++ needed about 1,000
such steps before its first correct answer) for the same steps, then evaluated by ``titans eval niah`` in streaming
mode at 1x-16x the training length (5 depths) and, for every model with a constant-size state (all but
``transformer``), at 64K tokens. Ablations (the paper's Table 5) are a variant with one part removed: ``lmm-linear``
(memory depth 1), ``lmm-noconv``, ``lmm-nomomentum``, ``lmm-noforget`` (alpha = 0), ``lmm-slowforget`` (the
forget gate starts at 1e-3 instead of 1e-2), ``mac-nopersist`` (no persistent tokens; only the attention variants
have them); and ours: ``mag-sumgate`` (attention and memory summed, not gated), ``mag-gatesum`` (gated, plus the
sum's direct memory path), ``mac-inputwrite`` (MAC's memory written with the block input, not the attention output);
they chain (``mac-inputwrite-sumgate-slowforget``).
Each model trains into ``<out>/<name>/`` with ``--resume`` semantics and the evaluations are resumable, so the
command can be stopped and run again at any time; ``<out>/results.json``, ``results.md`` and ``accuracy.png`` are
rewritten after each model. Memory against length is measured in a fresh process (the training in this one sets the
high-water mark): ``titans eval niah --ckpt <out>/mac --lengths 1k,4k,16k,64k`` records it per length.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from ..atomic import write_json, write_text
from ..eval.longctx import run as eval_run
from ..models import TitansLM, count_params
from ..models.ablations import ABLATIONS
from ..pyplot import pyplot
from ..train import RunConfig, TrainConfig, latest_checkpoint, load_checkpoint, train
from ..train.checkpoint import check_run_folder, check_same_run, load_model_weights
from ..train.config import DataConfig
from .lm import named_config

SHORT_MULTIPLES = (1, 2, 4, 8, 16)  # evaluation lengths, in training lengths
LONG_LENGTHS = (65536,)


def named_model(name: str):
    """``"mag"`` -> the matched MAG config; ``"mac-noconv"`` -> MAC without the convolution (see ABLATIONS)."""
    try:
        return named_config(name)
    except ValueError as e:
        raise ValueError(f"--variants: {e}") from None


def run_config(model, task: str, seq_len: int, steps: int, out_dir: str, seed: int, batch: int = 4,
               task_loss: str = "answer") -> RunConfig:
    return RunConfig(model=model, data=DataConfig(seq_len=seq_len, task=task, task_loss=task_loss),
                     train=TrainConfig(seed=seed, batch_size=batch, max_steps=steps, lr=3e-3,
                                       warmup_steps=min(100, steps // 10), eval_every=max(1, steps // 10),
                                       eval_batches=max(4, 64 // batch), ckpt_every=max(1, steps // 5), keep_last=1,
                                       log_every=max(1, steps // 50), out_dir=out_dir))


def _niah_run_config(args, name: str) -> RunConfig:
    return run_config(named_model(name), args.task, args.seq_len, args.steps, os.path.join(args.out, name),
                      args.seed, args.batch)


def trained(cfg: RunConfig):
    """Train (or resume, or skip when finished) and return ``(model, checkpoint path, train summary or None)``."""
    ckpt = latest_checkpoint(cfg.train.out_dir)
    summary, weights = None, None
    if ckpt is not None:  # a finished run is reused: it must be this one (not another --seed)
        weights, state, saved = load_checkpoint(ckpt)
        check_same_run(saved, cfg.to_dict(), ckpt)
        if state["step"] < cfg.train.max_steps:
            weights = None
    if weights is None:
        summary = train(cfg, resume=True)
        ckpt = latest_checkpoint(cfg.train.out_dir)
        weights = load_checkpoint(ckpt)[0]
    model = TitansLM(cfg.model)
    load_model_weights(model, weights, ckpt)
    return model.eval(), ckpt, summary


def last_validation(run_dir: str) -> dict:
    """``{"val_loss", "val_acc"}`` of the last validation row of a run's ``log.csv`` (answer tokens only)."""
    import csv

    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    return {"val_loss": float(rows[-1]["loss"]), "val_acc": float(rows[-1]["acc"])} if rows else {}


def _save(out: str, results: dict, table: str):
    write_json(os.path.join(out, "results.json"), results)
    write_text(os.path.join(out, "results.md"), table + "\n")


def niah(args):
    """Train each of ``args.variants`` on ``args.task`` (S-NIAH or BABILong-style) and evaluate it past its length."""
    from ..data.synthetic.tasks import parse_task

    spec = parse_task(args.task)
    kinds = list(spec.kinds)
    # BABILong instances have no needle depth: 5x the instances per length, so a cell counts as many as S-NIAH's
    if spec.family == "niah":
        depths, samples, long_depths, long_samples = (0.0, 0.25, 0.5, 0.75, 1.0), args.samples, (0.1, 0.5, 0.9), \
            args.long_samples
    else:
        depths, samples, long_depths, long_samples = (None,), 5 * args.samples, (None,), 3 * args.long_samples
    os.makedirs(args.out, exist_ok=True)
    res_path = os.path.join(args.out, "results.json")
    results = json.loads(Path(res_path).read_text()) if os.path.exists(res_path) else {}
    for name in args.variants.split(","):
        model_cfg = named_model(name)
        cfg = _niah_run_config(args, name)
        t0 = time.time()
        model, ckpt, summary = trained(cfg)
        entry = results.get(name, {})
        if summary is not None:
            entry.update(train_tokens_per_s=summary["tokens_per_s"], train_seconds=round(time.time() - t0, 1))
        entry.update(params=count_params(model), steps=args.steps, config=model_cfg.to_dict(),
                     **last_validation(cfg.train.out_dir))
        rows = eval_run(spec.family, model, cfg, ckpt, out=os.path.join(args.out, name, "eval"),
                        lengths=args.lengths, depths=depths, kinds=kinds, samples=samples)["summary"]
        entry.pop("peak_rss_mib", None)  # this process trained first: its high-water mark says nothing of eval
        if model_cfg.variant != "transformer" and args.long:
            rows += eval_run(spec.family, model, cfg, ckpt, out=os.path.join(args.out, name, "eval_long"),
                             lengths=args.long, depths=long_depths, kinds=kinds, samples=long_samples,
                             batch=3)["summary"]
        entry.update(_by_length(rows))
        if len(kinds) > 1:
            entry["by_kind"] = {k: _by_length([r for r in rows if r["kind"] == k]) for k in kinds}
        results[name] = entry
        order = args.variants.split(",")  # the requested order first, then anything else already in the file
        results = dict(sorted(results.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        _save(args.out, results, niah_table(results, args.seq_len))
        plot_accuracy(results, os.path.join(args.out, "accuracy.png"), f"{args.task}, trained at "
                      f"{args.seq_len} tokens", keys=("accuracy", "logprob"))
    print(niah_table(results, args.seq_len))


def _by_length(rows: list[dict]) -> dict:
    """``{"accuracy": {length: mean}, "logprob": {length: mean}}`` over the summary rows (kinds weighted by count)."""
    out = {"accuracy": {}, "logprob": {}}
    for n in sorted({r["length"] for r in rows}):
        rs = [r for r in rows if r["length"] == n]
        total = sum(r["n"] for r in rs)
        for key in out:
            out[key][str(n)] = sum(r[key] * r["n"] for r in rs) / total
    return out


def niah_table(results: dict, train_len: int) -> str:
    lengths = sorted({int(n) for r in results.values() for n in r.get("accuracy", {})})
    head = " | ".join(f"{n // 1024}K" if n >= 1024 else str(n) for n in lengths)
    lines = [f"| model | params | val loss / acc @ {train_len} | {head} |", "|---|---|---|" + "---|" * len(lengths)]

    def cells(r):
        acc, lp = r.get("accuracy", {}), r.get("logprob", {})
        return " | ".join(f"{acc[str(n)]:.2f} ({lp[str(n)]:.1f})" if str(n) in acc else "-" for n in lengths)

    for name, r in results.items():
        val = f"{r['val_loss']:.2f} / {r['val_acc']:.2f}" if "val_loss" in r else "-"
        lines.append(f"| {name} | {r['params']:,} | {val} | " + cells(r) + " |")
        for kind, rk in r.get("by_kind", {}).items():
            lines.append(f"| {name}, {kind} | | | " + cells(rk) + " |")
    return "\n".join(lines) + ("\n\nCells: exact-match accuracy (mean log-likelihood of the answer, nats). "
                               "val: answer loss per token (nats) and teacher-forced accuracy on held-out "
                               "training-length instances.")


def plot_accuracy(results: dict, path: str, title: str, keys=("accuracy",), xlabel: str = "context length (tokens)"):
    """One panel per key (``accuracy``; ``logprob``: the answer's mean log-likelihood), a line per model."""
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, r in results.items():
            pts = sorted((int(n), a) for n, a in r.get(key, {}).items())
            if pts:
                ax.plot(*zip(*pts), marker="o", lw=1.2, label=name, ls="--" if "-" in name else "-")
        ax.set_xscale("log", base=2)
        if key == "accuracy":
            ax.set(ylabel="exact-match accuracy", ylim=(-0.02, 1.02))
        else:
            ax.set(ylabel="answer log-likelihood (nats)")
        ax.set(xlabel=xlabel, title=title)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mqar(args):
    """LMM with memory depth 1-4 on MQAR (Figure 7's capacity question): accuracy against key/value pairs."""
    os.makedirs(args.out, exist_ok=True)
    res_path = os.path.join(args.out, "results.json")
    results = json.loads(Path(res_path).read_text()) if os.path.exists(res_path) else {}
    base = named_model("lmm" + (f"-{args.ablation}" if args.ablation else ""))
    for depth in args.depths:
        name = f"lmm-depth{depth}" + (f"-{args.ablation}" if args.ablation else "")
        model_cfg = dataclasses.replace(base, memory=dataclasses.replace(base.memory, depth=depth))
        cfg = run_config(model_cfg, f"mqar:{args.pairs}", 4 * args.pairs, args.steps, os.path.join(args.out, name),
                         args.seed, args.batch)
        model, ckpt, summary = trained(cfg)
        res = eval_run("mqar", model, cfg, ckpt, out=os.path.join(args.out, name, "eval"),
                       pairs=args.eval_pairs, samples=args.samples)
        entry = results.get(name, {})
        if summary is not None:
            entry.update(train_tokens_per_s=summary["tokens_per_s"], val_acc=summary.get("val_acc"))
        entry.update(params=count_params(model), steps=args.steps, memory_depth=depth,
                     accuracy={str(s["pairs"]): s["accuracy"] for s in res["summary"]})
        results[name] = entry
        _save(args.out, results, mqar_table(results, args.pairs))
        plot_accuracy(results, os.path.join(args.out, "accuracy.png"), f"MQAR, trained with {args.pairs} pairs",
                      xlabel="key/value pairs")
    print(mqar_table(results, args.pairs))


def mqar_table(results: dict, train_pairs: int) -> str:
    pairs = sorted({int(n) for r in results.values() for n in r["accuracy"]})
    lines = ["| memory depth | params | " + " | ".join(f"{p} pairs" for p in pairs) + " |",
             "|---|---|" + "---|" * len(pairs)]
    for r in results.values():
        cells = [f"{r['accuracy'][str(p)]:.3f}" if str(p) in r["accuracy"] else "-" for p in pairs]
        lines.append(f"| {r['memory_depth']} | {r['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nTrained with {train_pairs} pairs; accuracy over every recalled value."


def main(argv=None, which: str = "niah"):
    from ..eval.longctx import parse_lengths, parse_numbers

    ap = argparse.ArgumentParser(prog=f"titans study {which}", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="optimizer steps per model")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--samples", type=int, default=4, help="instances per (length, depth) cell / MQAR sequences")
    if which == "niah":
        ap.add_argument("--variants", default="lmm,mac,mag,mal,swa,transformer,lmm-linear,lmm-noconv,"
                                               "lmm-nomomentum,lmm-noforget,mac-nopersist")
        ap.add_argument("--task", default="niah:passkey",
                        help="niah:passkey | niah:number | niah:uuid | babilong:qa1,qa2,qa3 (one model, every kind)")
        ap.add_argument("--seq-len", type=int, default=256, help="training length")
        ap.add_argument("--lengths", default=None,
                        help="evaluation lengths (default 1x, 2x, 4x, 8x, 16x the training length; S-NIAH: 5 depths)")
        ap.add_argument("--long", default=",".join(map(str, LONG_LENGTHS)),
                        help="long lengths for constant-state models (3 depths); '' to skip")
        ap.add_argument("--long-samples", type=int, default=2, help="instances per depth at the long lengths")
        ap.add_argument("--out", default="runs/study_niah")
    else:
        ap.add_argument("--depths", default="1,2,3,4", help="memory depths")
        ap.add_argument("--ablation", default="", help=f"an LMM ablation for every depth ({', '.join(ABLATIONS)})")
        ap.add_argument("--pairs", type=int, default=32, help="key/value pairs in training sequences")
        ap.add_argument("--eval-pairs", default="8,16,32,48,64,96", help="pairs at evaluation")
        ap.add_argument("--out", default="runs/study_mqar")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if which == "niah":
        from ..data.synthetic.tasks import parse_task

        spec = parse_task(args.task)  # a bad task fails here, before any training
        if spec.family not in ("niah", "babilong"):
            raise ValueError(f"--task {args.task!r}: study niah takes an S-NIAH or BABILong task (mqar: study mqar)")
        from ..data import get_tokenizer
        from ..data.synthetic.tasks import task_batch

        # One batch of the first step now: a training length too short for the task fails before any training.
        task_batch(spec, seq_len=args.seq_len, batch_size=8, seed=args.seed, step=0, tokenizer=get_tokenizer("byte"))
        args.lengths = parse_lengths(args.lengths) if args.lengths else [args.seq_len * m for m in SHORT_MULTIPLES]
        args.long = parse_lengths(args.long, "--long") if args.long else []
        for name in args.variants.split(","):
            # A bad name fails before any training, and so does a run in the folder that is another run (another
            # --seed or --seq-len): it would be reused as this one.
            cfg = _niah_run_config(args, name)
            try:
                check_run_folder(cfg.train.out_dir, cfg.to_dict())
            except ValueError as e:
                ap.error(str(e))
        niah(args)
    else:
        try:
            args.depths = parse_numbers(args.depths, "--depths")
            args.eval_pairs = parse_numbers(args.eval_pairs, "--eval-pairs")
        except ValueError as e:
            ap.error(str(e))
        mqar(args)
