"""``titans genomics``: train a DNA window classifier on the genus task (strains held out), pick the step with the best
validation accuracy, score it on the test strains, write JSON; ``--all`` runs every model of the study.

    titans genomics --model lmm                                  # one run: runs/genomics/lmm_s0.json
    titans genomics --model lmm --pretrain-steps 500             # next-nucleotide pretraining first (HyenaDNA's way)
    titans genomics --all --out runs/genomics                    # every model; resumable (also within a run)
    titans genomics --report runs/genomics                       # results.md and results.png from the JSON files
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import write_bytes, write_json, write_text
from ..device import resolve_device
from ..models import count_params
from ..models.ablations import split_name
from ..pyplot import pyplot
from .data import GENERA, GenusTask
from .models import MODELS, build_classifier, check_model, cross_entropy, pretrainable

STUDY = ("lmm", "mac", "mag", "mal", "transformer", "swa", "cnn", "kmer")


def _lr(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% (within a phase). ``train.lr_at``'s schedule, written so that its
    floats differ in the last bits; kept, since the committed results were trained with these exact rates."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """Predicted classes ``[N]`` (on the CPU) for windows ``x [N, T]`` (run where the model's parameters are)."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i:i + batch].to(device)).argmax(-1).cpu() for i in range(0, len(x), batch)])
    model.train()
    return out


def scores(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy with its standard error, per-class accuracy, confusion matrix (rows: truth)."""
    acc = float((pred == y).float().mean())
    conf = torch.zeros(len(GENERA), len(GENERA), dtype=torch.int64)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    return {"acc": acc, "stderr": math.sqrt(acc * (1 - acc) / len(y)), "n": len(y),
            "per_class": {g: float(conf[i, i] / conf[i].sum()) for i, g in enumerate(GENERA)},
            "confusion": conf.tolist()}


def _save(obj, path: str):
    buf = io.BytesIO()  # serialized whole first, so the file is written in one atomic step
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def run(model_name: str, *, out: str, length: int = 200, steps: int = 1000, pretrain_steps: int = 0, batch: int = 32,
        lr: float = 1e-3, seed: int = 0, eval_every: int = 100, val_per_class: int = 250, test_per_class: int = 1000,
        root: str | None = None, task: GenusTask | None = None, progress: bool = True, log=print,
        device: torch.device | str = "cpu") -> dict:
    """Train, select by validation accuracy, test; checkpoints to ``out`` every ``eval_every`` steps so an interrupted
    run continues where it stopped (batches are drawn from ``(seed, step)``, so a resumed run is the same run).
    ``device``: where the model trains (a checkpoint resumes on any device)."""
    for name, val in (("steps", steps), ("batch", batch), ("eval_every", eval_every),
                      ("val_per_class", val_per_class), ("test_per_class", test_per_class)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name}={val!r}: must be an int >= 1")
    if not isinstance(pretrain_steps, int) or pretrain_steps < 0:
        raise ValueError(f"pretrain_steps={pretrain_steps!r}: must be an int >= 0")
    torch.manual_seed(seed)
    model = build_classifier(model_name, len(GENERA))  # a bad name fails here, before any data is read
    device = resolve_device(str(device), "device")
    model = model.to(device)
    if pretrain_steps and not pretrainable(model):
        raise ValueError(f"pretrain_steps={pretrain_steps}: model {model_name!r} has no language-model backbone")
    task = task or GenusTask(length, root=root)
    if task.length != length:
        raise ValueError(f"length={length}: the task given has windows of {task.length}")
    xva, yva = task.fixed("val", val_per_class, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    tag = run_name(model_name, seed, pretrain_steps)
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, tag + ".ckpt.pt")
    # grad_max: the largest gradient norm (before clipping) since the last curve point, a divergence diagnostic
    state = {"step": 0, "curve": [], "best_acc": -1.0, "best_step": 0, "best": None, "seconds": 0.0, "grad_max": 0.0}
    run_args = {"length": length, "batch": batch, "lr": lr}  # what a resumed run must share with this one
    if os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if bad := {k: v for k, v in saved.get("args", {}).items() if run_args.get(k) != v}:
            raise ValueError(f"{ckpt} was trained with {bad}, not {({k: run_args[k] for k in bad})}: resume it "
                             "with its own settings, or use another output folder")
        model.load_state_dict(saved.pop("model"))
        opt.load_state_dict(saved.pop("opt"))
        state.update(saved)
        log(f"{tag}: resumed at step {state['step']}")
    total = pretrain_steps + steps
    bar = tqdm(total=total, initial=state["step"], desc=tag, unit="step", disable=not progress, leave=False)
    t0 = time.time() - state["seconds"]
    model.train()
    for step in range(state["step"], total):
        pre = step < pretrain_steps
        x, y = (t.to(device) for t in task.train_batch(batch, np.random.default_rng([seed, step])))
        phase_step, phase_total = (step, pretrain_steps) if pre else (step - pretrain_steps, steps)
        for g in opt.param_groups:
            g["lr"] = _lr(phase_step, phase_total, lr, max(1, phase_total // 20))
        loss = model.lm_loss(x) if pre else cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        state["grad_max"] = max(state["grad_max"], norm)
        opt.step()
        bar.update(1)
        done = step + 1
        since = done if pre else done - pretrain_steps
        if since % eval_every == 0 or done in (pretrain_steps, total):
            acc = None if pre else float((predict(model, xva) == yva).float().mean())
            state["curve"].append({"step": done, "loss": float(loss.detach()), "val_acc": acc,
                                   "grad_norm_max": state["grad_max"]})
            state["grad_max"] = 0.0
            if acc is not None and acc > state["best_acc"]:
                state.update(best_acc=acc, best_step=done,
                             best={k: v.detach().clone() for k, v in model.state_dict().items()})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val=f"{acc:.3f}" if acc is not None else "-")
            state.update(step=done, seconds=time.time() - t0)
            _save({**state, "args": run_args, "model": model.state_dict(), "opt": opt.state_dict()}, ckpt)
    bar.close()
    train_seconds = time.time() - t0
    model.load_state_dict(state["best"])
    xte, yte = task.fixed("test", test_per_class, seed)
    test = scores(predict(model, xte), yte)
    return {"model": model_name, "seed": seed, "pretrain_steps": pretrain_steps, "steps": steps, "batch": batch,
            "lr": lr, "length": length, "params": count_params(model), "threads": torch.get_num_threads(),
            "device": str(device),
            "train_seconds": round(train_seconds, 1), "best_step": state["best_step"], "val_acc": state["best_acc"],
            "val_n": len(yva), "test": test, "curve": state["curve"], "data": task.describe()}


def run_name(model: str, seed: int, pretrain_steps: int) -> str:
    return f"{model}_s{seed}" + (f"_pt{pretrain_steps}" if pretrain_steps else "")


def _label(r: dict) -> str:
    return r["model"] + (f" + pretrain {r['pretrain_steps']}" if r.get("pretrain_steps") else "")


def report(out: str) -> str:
    """Markdown table of every result JSON in ``out`` (test accuracy ± standard error, per genus, validation
    accuracy, parameters, time) into ``out/results.md``; test accuracies and validation curves into
    ``out/results.png``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if "test" in r:
            rows.append(r)
    order = {m: i for i, m in enumerate(STUDY)}
    rows.sort(key=lambda r: (order.get(split_name(r["model"])[0], len(order)), r["model"],
                             r.get("pretrain_steps", 0), r["seed"]))
    head = "| model | params | test acc | " + " | ".join(GENERA) + " | val acc (step) | train time |"
    lines = [head, "|---|---|---|" + "---|" * len(GENERA) + "---|---|"]
    for r in rows:
        t = r["test"]
        lines.append(f"| {_label(r)} (seed {r['seed']}) | {r['params']:,} | {100 * t['acc']:.1f} ± "
                     f"{100 * t['stderr']:.1f} | " + " | ".join(f"{100 * t['per_class'][g]:.1f}" for g in GENERA)
                     + f" | {100 * r['val_acc']:.1f} ({r['best_step']}) | {r['train_seconds'] / 60:.1f} min |")
    table = "\n".join(lines)
    if rows:
        r0 = rows[0]
        desc = "; ".join(f"{g}: " + ", ".join(f"{sp} {'+'.join(r0['data'][sp][g]['genomes'])}"
                                              for sp in ("train", "val", "test")) for g in GENERA)
        setup = (f"Genus of a {r0['length']}-nucleotide window, 4 classes (chance 25%), strains held out ({desc}). "
                 f"Test: {r0['test']['n']} windows, class-balanced; accuracy in % ± its standard error. "
                 f"{r0['steps']} steps of batch {r0['batch']}, model chosen by validation accuracy "
                 f"({r0['val_n']} windows); CPU threads {sorted({r['threads'] for r in rows})}.\n\n")
        write_text(os.path.join(out, "results.md"), setup + table + "\n")
        _plot(rows, out)
    return table


def _plot(rows, out):
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    labels = [f"{_label(r)}\n(s{r['seed']})" for r in rows]
    acc = [100 * r["test"]["acc"] for r in rows]
    err = [100 * r["test"]["stderr"] for r in rows]
    ax1.bar(range(len(rows)), acc, yerr=err, color="tab:blue", capsize=3)
    ax1.axhline(25, color="gray", ls="--", lw=1, label="chance")
    ax1.set_xticks(range(len(rows)), labels, fontsize=7)
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("genus of a DNA window, held-out strains", fontsize=9)
    ax1.legend(fontsize=7)
    for r in rows:
        pts = [(c["step"], 100 * c["val_acc"]) for c in r["curve"] if c["val_acc"] is not None]
        if pts:
            ax2.plot(*zip(*pts), label=_label(r), lw=1)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation accuracy (%)")
    ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "results.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="titans genomics", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lmm", help=f"one of {', '.join(MODELS)}; a variant may carry an ablation: "
                                                   "mac-slowforget, lmm-noconv, ...")
    ap.add_argument("--all", action="store_true", help=f"every model of the study ({', '.join(STUDY)}); resumable")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (with --all)")
    ap.add_argument("--models", default=",".join(STUDY), help="comma-separated models (with --all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--length", type=int, default=200, help="nucleotides per window")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="next-nucleotide pretraining steps first")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=1000)
    ap.add_argument("--data-root", default=None, help="where `make genomics-data` unpacked (default: "
                                                       "$TITANS_GENOMICS_DIR or the venv's share/titans-genomics)")
    ap.add_argument("--report", default=None, metavar="DIR", help="only write DIR/results.md and results.png")
    ap.add_argument("--out", default="runs/genomics")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--device", default="cpu", help="where the models train: cpu, cuda, cuda:1, mps, auto")
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.all else [args.seed]
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    models = tuple(args.models.split(",")) if args.all else (args.model,)
    for m in models:
        try:
            check_model(m)
        except ValueError as e:
            ap.error(f"--model{'s' if args.all else ''}: {e}")
    if args.pretrain_steps and args.all:
        models = tuple(m for m in models if m not in ("cnn", "kmer"))
    os.makedirs(args.out, exist_ok=True)
    want = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "length": args.length}
    for seed in seeds:  # a finished run is skipped, so it must be this run: another --steps is another folder
        for m in models:
            path = os.path.join(args.out, run_name(m, seed, args.pretrain_steps) + ".json")
            if os.path.exists(path):
                with open(path) as f:
                    have = json.load(f)
                if bad := {k: have[k] for k, v in want.items() if k in have and have[k] != v}:
                    ap.error(f"{path} was run with {bad}, not {({k: want[k] for k in bad})}: use another --out")
    task = GenusTask(args.length, root=args.data_root)  # before any training: a missing file fails here
    for seed in seeds:
        for m in models:
            tag = run_name(m, seed, args.pretrain_steps)
            path = os.path.join(args.out, tag + ".json")
            if os.path.exists(path):
                print(f"{path}: done, skipped")
                continue
            res = run(m, out=args.out, length=args.length, steps=args.steps, pretrain_steps=args.pretrain_steps,
                      batch=args.batch, lr=args.lr, seed=seed, eval_every=args.eval_every,
                      test_per_class=args.test_per_class, task=task, progress=not args.quiet, device=device)
            write_json(path, res, indent=None)
            ckpt = os.path.join(args.out, tag + ".ckpt.pt")
            if os.path.exists(ckpt):
                os.remove(ckpt)
            print(json.dumps({k: v for k, v in res.items() if k not in ("curve", "data")}))
    print(report(args.out))


if __name__ == "__main__":
    main()
