"""``titans eval niah|babilong|mqar``: long-context evaluation of a checkpoint, streamed, resumable.

    titans eval niah --ckpt runs/niah --lengths 256,1k,4k,16k,64k --depths 0,0.25,0.5,0.75,1 --samples 4
    titans eval babilong --ckpt runs/babilong --lengths 512,2k,8k --samples 20
    titans eval mqar --ckpt runs/mqar --pairs 8,16,32,64,96

Every prompt is fed ``--piece`` tokens at a time with the model's carried state, so the length is bounded by time,
not memory (``peak_rss_mib`` is recorded after each length: lengths run in increasing order and the high-water mark
stays flat when memory does not grow with length). NIAH and BABILong are scored by exact match of the greedy answer
(as many tokens as the answer has; ``continued`` keeps two more for inspection) and by the answer's
log-likelihood; MQAR by the accuracy of every recalled value. ``<out>/results.json`` gains a
record per instance as it goes (an interrupted run continues where it stopped); ``results.md`` (accuracy per kind
and length) and heatmaps (``heatmap_<kind>.png``: depth x length for NIAH, task x length for BABILong, accuracy
against pairs for MQAR) are rewritten after each length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from ..atomic import write_json, write_text
from ..device import resolve_device
from ..pyplot import pyplot
from .answers import answer_batch, recall_accuracy
from .scoring import exact_match

TASKS = ("niah", "babilong", "mqar")


def parse_lengths(text: str, flag: str = "--lengths") -> list[int]:
    """``"256,1k,4K,1m"`` -> ``[256, 1024, 4096, 1048576]`` (k = 1024, m = 1024^2); a bad item is a ``ValueError``
    naming ``flag``."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        mult = {"k": 1024, "m": 1024 ** 2}.get(item[-1:], 1)
        num = item[:-1] if mult > 1 else item
        if not num.isdigit() or int(num) < 1:
            raise ValueError(f"{flag}: {item!r} is not a length (use e.g. 512,2k,64k)")
        out.append(int(num) * mult)
    return sorted(set(out))


def parse_numbers(text: str, flag: str, kind=int, low: float = 1, high: float | None = None,
                  example: str = "1,2,4") -> list:
    """``"1,2,4"`` -> ``[1, 2, 4]``: ``kind`` each, in ``[low, high]``; a bad item is a ``ValueError`` naming
    ``flag``."""
    try:
        out = [kind(item) for item in text.split(",")]
    except ValueError:
        out = None
    if not out or any(x < low or (high is not None and x > high) for x in out):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s {span}, e.g. {example}")
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _key(r: dict) -> tuple:
    return (r["kind"], r["length"], r.get("depth"), r["sample"])


def _instances(task: str, kind: str, length: int, depths, samples: int, seed: int, tokenizer):
    from ..data.synthetic.tasks import make_instance, parse_task

    spec = parse_task(f"{task}:{kind}")
    for d in depths if task == "niah" else [None]:
        for s in range(samples):
            ex = make_instance(spec, kind, length=length, seed=seed * 1_000_003 + s, tokenizer=tokenizer,
                               depth=0.5 if d is None else d)  # babilong has no depth
            yield {"kind": kind, "length": length, "depth": d, "sample": s}, ex


def evaluate_qa(model, task: str, *, kinds, lengths, depths, samples: int, seed: int, tokenizer, piece: int,
                batch: int, done: dict, on_length=None, log=print) -> dict:
    """Score every (kind, length, depth, sample) not in ``done`` (keyed by :func:`_key`); returns ``done``."""
    for length in lengths:
        for kind in kinds:
            todo = [(m, ex) for m, ex in _instances(task, kind, length, depths, samples, seed, tokenizer)
                    if _key(m) not in done]
            t0 = time.time()
            for i in range(0, len(todo), batch):
                group = todo[i:i + batch]
                prompts = torch.tensor([ex.tokens for _, ex in group], device=_device_of(model))
                gen, logprob, nbytes = answer_batch(model, prompts, [ex.answer_tokens for _, ex in group],
                                                    piece=piece)
                for j, (meta, ex) in enumerate(group):
                    # Scored on as many generated tokens as the answer has (what a caller that budgets the answer's
                    # length would read; RULER-style containment would also accept "123456" for "12345").
                    pred = tokenizer.decode(gen[j, :len(ex.answer_tokens)].tolist())
                    done[_key(meta)] = {**meta, "answer": ex.answer, "prediction": pred,
                                        "continued": tokenizer.decode(gen[j].tolist()),
                                        "correct": exact_match([pred], [ex.answer]) == 1.0,
                                        "logprob": float(logprob[j]), "answer_tokens": len(ex.answer_tokens),
                                        "state_bytes": nbytes}
            if todo:
                dt = time.time() - t0
                acc = np.mean([r["correct"] for r in done.values() if r["kind"] == kind and r["length"] == length])
                log(f"{task} {kind} length {length:,}: accuracy {acc:.3f} ({len(todo)} new, {dt:.1f} s, "
                    f"{len(todo) * length / max(dt, 1e-9):,.0f} tok/s, peak RSS {peak_rss_mib():,.0f} MiB)")
        if on_length is not None:
            on_length(length)
    return done


def evaluate_mqar(model, *, pairs, samples: int, seed: int, vocab_size: int, piece: int, done: dict,
                  on_length=None, log=print) -> dict:
    from ..data.synthetic import make_mqar

    for n in pairs:
        key = ("mqar", 4 * n, None, n)
        if key in done:
            continue
        idx, tgt = make_mqar(batch=samples, n_pairs=n, vocab_size=vocab_size, seed=seed * 1_000_003 + n)
        hits, total = recall_accuracy(model, idx.to(_device_of(model)), tgt.to(_device_of(model)), piece)
        done[key] = {"kind": "mqar", "length": 4 * n, "depth": None, "sample": n, "pairs": n,
                     "accuracy": hits / total, "recalls": total}
        log(f"mqar {n} pairs: accuracy {hits / total:.3f} over {total} recalls")
        if on_length is not None:
            on_length(4 * n)
    return done


def summarize(records: list[dict]) -> list[dict]:
    """Accuracy and mean answer log-likelihood per (kind, length) (NIAH: averaged over depths)."""
    rows = {}
    for r in records:
        rows.setdefault((r["kind"], r["length"]), []).append(r)
    out = []
    for (kind, length), rs in sorted(rows.items()):
        if kind == "mqar":
            out.append({"kind": kind, "length": length, "pairs": rs[0]["pairs"], "accuracy": rs[0]["accuracy"],
                        "n": rs[0]["recalls"]})
        else:
            out.append({"kind": kind, "length": length, "accuracy": float(np.mean([r["correct"] for r in rs])),
                        "logprob": float(np.mean([r["logprob"] for r in rs])), "n": len(rs)})
    return out


def write_report(out: str, task: str, meta: dict, records: list[dict]) -> str:
    """``results.json`` (meta, summary, records), ``results.md`` and the heatmaps; returns the markdown."""
    summary = summarize(records)
    write_json(os.path.join(out, "results.json"), {"meta": meta, "summary": summary, "records": records})
    lengths = sorted({s["length"] for s in summary})
    kinds = sorted({s["kind"] for s in summary})
    by = {(s["kind"], s["length"]): s for s in summary}
    if task == "mqar":
        lines = ["| pairs | tokens | accuracy |", "|---|---|---|"]
        lines += [f"| {s['pairs']} | {s['length']} | {s['accuracy']:.3f} |" for s in summary]
    else:
        lines = ["| kind | " + " | ".join(f"{n:,}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
        for k in kinds:
            cells = [f"{by[(k, n)]['accuracy']:.2f} ({by[(k, n)]['logprob']:.1f})" if (k, n) in by else "-"
                     for n in lengths]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("\nCells: exact-match accuracy (mean answer log-likelihood, nats).")
    md = "\n".join(lines)
    write_text(os.path.join(out, "results.md"),
               f"{task}: {meta['checkpoint']} ({meta['variant']}, trained at {meta['train_len']} tokens)\n\n{md}\n")
    plot_heatmaps(out, task, records)
    return md


def plot_heatmaps(out: str, task: str, records: list[dict]):
    plt = pyplot()
    if plt is None:
        return
    if task == "mqar":
        s = summarize(records)
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot([r["pairs"] for r in s], [r["accuracy"] for r in s], marker="o")
        ax.set(xlabel="key/value pairs", ylabel="recall accuracy", ylim=(0, 1.02), title="MQAR")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "heatmap_mqar.png"), dpi=110)
        plt.close(fig)
        return
    lengths = sorted({r["length"] for r in records})
    if task == "niah":
        kinds = sorted({r["kind"] for r in records})
        panels = {k: sorted({r["depth"] for r in records if r["kind"] == k}) for k in kinds}
    else:
        panels = {"babilong": sorted({r["kind"] for r in records})}
    for name, rows in panels.items():
        grid = np.full((len(rows), len(lengths)), np.nan)
        for i, row in enumerate(rows):
            for j, n in enumerate(lengths):
                rs = [r["correct"] for r in records if r["length"] == n and
                      ((r["kind"] == name and r["depth"] == row) if task == "niah" else r["kind"] == row)]
                if rs:
                    grid[i, j] = np.mean(rs)
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(lengths), 0.9 + 0.45 * len(rows)))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i in range(len(rows)):
            for j in range(len(lengths)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n >= 1024 else str(n) for n in lengths], fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{r:.2f}" if task == "niah" else r for r in rows], fontsize=8)
        ax.set(xlabel="context length (tokens)", ylabel="needle depth" if task == "niah" else "task", title=name)
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"heatmap_{name}.png"), dpi=110)
        plt.close(fig)


def run(task: str, model, cfg, ckpt: str, *, out: str, lengths=(), depths=(0.0, 0.5, 1.0), kinds=None,
        samples: int = 4, pairs=(), seed: int = 0, piece: int | None = None, batch: int = 8, log=print) -> dict:
    """Evaluate ``model`` (trained with run config ``cfg``) on ``task``; resumable through ``<out>/results.json``."""
    from ..data import get_tokenizer
    from ..data.synthetic import BABI_TASKS, NIAH_KINDS

    if task not in TASKS:
        raise ValueError(f"task={task!r}: must be one of {TASKS}")
    os.makedirs(out, exist_ok=True)
    piece = piece or cfg.data.seq_len
    meta = {"task": task, "checkpoint": ckpt, "variant": cfg.model.variant, "train_len": cfg.data.seq_len,
            "train_task": cfg.data.task, "piece": piece, "seed": seed, "samples": samples,
            "threads": torch.get_num_threads()}
    path = os.path.join(out, "results.json")
    done, peaks = {}, {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if {k: v for k, v in old["meta"].items() if k not in ("peak_rss_mib", "threads")} != \
                {k: v for k, v in meta.items() if k != "threads"}:
            raise ValueError(f"--out {out}: holds results of another evaluation ({old['meta']}); use another --out")
        done = {_key(r): r for r in old["records"]}
        peaks = old["meta"].get("peak_rss_mib", {})
    meta["peak_rss_mib"] = peaks

    def on_length(n):
        peaks[str(n)] = round(peak_rss_mib(), 1)
        write_report(out, task, meta, list(done.values()))

    model.eval()
    if task == "mqar":
        evaluate_mqar(model, pairs=pairs, samples=samples, seed=seed, vocab_size=cfg.model.vocab_size, piece=piece,
                      done=done, on_length=on_length, log=log)
    else:
        tok = get_tokenizer(cfg.data.tokenizer)
        allowed = NIAH_KINDS if task == "niah" else BABI_TASKS
        kinds = list(kinds or allowed)
        bad = [k for k in kinds if k not in allowed]
        if bad:
            raise ValueError(f"--kinds: unknown {task} kind(s) {bad}; choose from {allowed}")
        evaluate_qa(model, task, kinds=kinds, lengths=lengths, depths=depths, samples=samples, seed=seed,
                    tokenizer=tok, piece=piece, batch=batch, done=done, on_length=on_length, log=log)
    return {"meta": meta, "summary": summarize(list(done.values())),
            "markdown": write_report(out, task, meta, list(done.values()))}


def main(argv=None, load=None):
    ap = argparse.ArgumentParser(prog="titans eval TASK", description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=TASKS)
    ap.add_argument("--ckpt", required=True, help="run folder or checkpoint folder")
    ap.add_argument("--lengths", default="256,512,1k,2k,4k", help="prompt lengths in tokens (niah, babilong)")
    ap.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths (niah)")
    ap.add_argument("--kinds", default=None, help="niah: passkey,number,uuid; babilong: qa1,qa2,qa3 (default: all)")
    ap.add_argument("--pairs", default="8,16,32,64", help="key/value pairs (mqar)")
    ap.add_argument("--samples", type=int, default=4, help="instances per cell (mqar: sequences per pair count)")
    ap.add_argument("--piece", type=int, default=None, help="tokens per forward call (default: training length)")
    ap.add_argument("--batch", type=int, default=8, help="prompts answered together")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results folder (default: <ckpt>/eval_<task>)")
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, mps, auto")
    args = ap.parse_args(argv)
    try:
        lengths = parse_lengths(args.lengths)
        depths = parse_numbers(args.depths, "--depths", float, 0, 1, "0,0.5,1")
        pairs = parse_numbers(args.pairs, "--pairs")
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    model, cfg, path = load(args.ckpt)
    model = model.to(device)
    res = run(args.task, model, cfg, path, out=args.out or os.path.join(args.ckpt, f"eval_{args.task}"),
              lengths=lengths, depths=depths, kinds=args.kinds.split(",") if args.kinds else None,
              samples=args.samples, pairs=pairs, seed=args.seed, piece=args.piece, batch=args.batch)
    print(res["markdown"])
