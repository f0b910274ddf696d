"""MAD study: every variant trained on each MAD synthetic task (the paper's Table 10, [V2]) at the size and budget
of the other studies.

    titans study mad [--steps 600] [--tasks recall,noisy_recall,fuzzy_recall,selective_copy,memorize]
                     [--variants lmm,mac,mag,mal,swa,transformer] [--out runs/study_mad]

Every model is the LM study's size (MAC at d 128, 2 layers; the others matched to its parameter count; names of
:mod:`titans.models.ablations` work too), trained on one task at MAD's baseline length (128 tokens; selective copy
256, memorize 32) with 2,048 tokens a step (batch = 2,048 / length) at lr 3e-3 (``--lr``), then scored on ``--test``
held-out instances (MAD's test set is 1,280): the accuracy over every scored token (the recalled values, the
copied tokens, the memorized values). MAD itself trains 200 epochs of 12,800 instances in batches of 128, about
20,000 steps of 16K tokens: this budget is a small fraction of that, and the table says so.

Each model trains into ``<out>/<task>/<variant>/`` with ``--resume`` semantics and writes its score to
``result.json`` there, so the command can be stopped and run again at any time, and two processes may run disjoint
``--tasks`` into the same ``--out``; ``<out>/results.json``, ``results.md`` and ``accuracy.png`` are rebuilt from
every ``result.json`` after each model.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import time
from pathlib import Path

import torch

from ..atomic import write_json, write_text
from ..data.synthetic.mad import IGNORE, KINDS, counting_choices, expected_hits
from ..data.synthetic.tasks import VAL_SEED_OFFSET, task_batch
from ..models import count_params
from ..models.ablations import split_name
from ..pyplot import pyplot
from ..train import RunConfig, TrainConfig
from ..train.checkpoint import check_run_folder
from ..train.config import DataConfig
from ..train.evaluate import evaluate_task
from .lm import STEP_TOKENS
from .longctx import named_model, trained

VARIANTS = "lmm,mac,mag,mal,swa,transformer"
LR = 3e-3  # the study's peak learning rate (--lr), the LM study's


def run_config(task: str, name: str, steps: int, out: str, seed: int, lr: float = LR) -> RunConfig:
    """The study's run of model ``name`` on MAD task ``task`` (a key of :data:`KINDS`)."""
    seq_len = KINDS[task].seq_len
    return RunConfig(model=named_model(name), data=DataConfig(seq_len=seq_len, task=f"mad:{task}"),
                     train=TrainConfig(seed=seed, batch_size=STEP_TOKENS // seq_len, max_steps=steps, lr=lr,
                                       warmup_steps=min(50, steps // 10), eval_every=max(1, steps // 5),
                                       eval_batches=4, ckpt_every=max(1, steps // 5), keep_last=1,
                                       log_every=max(1, steps // 50), out_dir=os.path.join(out, task, name)))


def collect(out: str) -> dict:
    """``{task: {variant: result}}`` from every ``<out>/<task>/<variant>/result.json`` (with the validation
    accuracy of its ``log.csv`` by step), tasks in :data:`KINDS` order."""
    results: dict = {}
    for path in sorted(glob.glob(os.path.join(out, "*", "*", "result.json"))):
        r = json.loads(Path(path).read_text())
        log = os.path.join(os.path.dirname(path), "log.csv")
        if os.path.exists(log):  # the validation accuracy through training: still rising at the end, or flat?
            with open(log) as f:
                r["val_acc_by_step"] = {row["step"]: float(row["acc"]) for row in csv.DictReader(f)
                                        if row["split"] == "val"}
        results.setdefault(r["task"], {})[r["model"]] = r
    return {t: results[t] for t in KINDS if t in results}


def held_out_batches(task: str, seed: int, n_test: int):
    """The held-out ``(x, y)`` batches ``evaluate_task`` scores for ``seed`` and ``n_test`` instances of ``task``."""
    kind = KINDS[task]
    batch = STEP_TOKENS // kind.seq_len
    for i in range(-(-n_test // batch)):
        yield task_batch(f"mad:{task}", seq_len=kind.seq_len, batch_size=batch, seed=seed,
                         step=VAL_SEED_OFFSET + i, tokenizer=None, vocab_size=kind.vocab, answer_only=True)


def counting_reference(task: str, seed: int, n_test: int) -> tuple[float, float | None]:
    """On the study's held-out instances: :func:`.mad.frequency_guess`'s accuracy (what counting answers, without
    tying them to keys, scores) and how often the true answer is one counting gives where counting rules an answer
    out (the agreement a perfect model has with counting; ``None`` where counting never decides)."""
    hits = n = truth = decided = 0.0
    for x, y in held_out_batches(task, seed, n_test):
        choices, target = counting_choices(task, x.numpy(), y.numpy())
        d = ~choices.all(-1)
        hits, n = hits + expected_hits(choices, target), n + len(target)
        truth, decided = truth + choices[d, target[d]].sum(), decided + d.sum()
    return hits / max(n, 1), (float(truth / decided) if decided else None)


class CountingAgreement:
    """The fraction of scored held-out positions where a model's greedy answer is one that counting would give
    (:func:`.mad.counting_choices`), over the positions where counting rules some answer out: 1.0 for a model that
    counts, well below for one that looks its answer up; ``value`` is ``None`` where counting never decides
    (``memorize``, whose answers never occur in the input). Called with each batch ``(x, y, logits)`` (the
    ``on_batch`` of :func:`~titans.train.evaluate.evaluate_task`, so the score and this share one forward)."""

    def __init__(self, task: str):
        self.task, self.agree, self.n = task, 0, 0

    def __call__(self, x, y, logits):
        y = y.cpu()
        pred = logits.argmax(-1).cpu()[y != IGNORE].numpy() - KINDS[self.task].first_answer
        choices, _ = counting_choices(self.task, x.cpu().numpy(), y.numpy())
        decided = ~choices.all(-1)
        ok = decided & (pred >= 0) & (pred < choices.shape[1])  # an answer outside the task's never agrees
        self.agree += int(choices[ok, pred[ok]].sum())
        self.n += int(decided.sum())

    @property
    def value(self) -> float | None:
        return self.agree / self.n if self.n else None


@torch.no_grad()
def counting_agreement(model, task: str, seed: int, n_test: int) -> float | None:
    """:class:`CountingAgreement` of ``model`` on the study's held-out instances (its own forward)."""
    agreement = CountingAgreement(task)
    for x, y in held_out_batches(task, seed, n_test):
        agreement(x, y, model(x).logits)
    return agreement.value


def model_names(results: dict) -> list[str]:
    """Every model of ``results``: the variants in :data:`VARIANTS` order, each followed by its ablations."""
    order = VARIANTS.split(",")

    def key(name):
        base = split_name(name)[0]
        return (order.index(base) if base in order else len(order), base, name)
    return sorted({n for rs in results.values() for n in rs}, key=key)


def references(results: dict) -> dict:
    """``{task: (counting's accuracy, the true answers' agreement with counting)}`` on each task's held-out
    instances (:func:`counting_reference`); a folder holds one seed (checked before training), the test size is
    the task's first model's."""
    firsts = {t: next(iter(rs.values())) for t, rs in results.items()}
    return {t: counting_reference(t, r["seed"], r["test_instances"]) for t, r in firsts.items()}


def table(results: dict, refs: dict) -> str:
    """The accuracy table (with chance and counting rows) and the agreement-with-counting table, in markdown."""
    names = model_names(results)
    tasks = list(results)
    lines = ["| model | " + " | ".join(tasks) + " | mean |", "|---|" + "---|" * (len(tasks) + 1)]
    for n in names:
        accs = [results[t][n]["accuracy"] if n in results[t] else None for t in tasks]
        mean = f"{sum(accs) / len(accs):.3f}" if None not in accs else "-"
        lines.append(f"| {n} | " + " | ".join("-" if a is None else f"{a:.3f}" for a in accs) + f" | {mean} |")
    chance = [1 / KINDS[t].answers for t in tasks]  # a uniform guess among the task's possible answers
    lines.append("| chance | " + " | ".join(f"{c:.3f}" for c in chance) + f" | {sum(chance) / len(chance):.3f} |")
    floor, truth = zip(*[refs[t] for t in tasks])
    lines.append("| counting (no binding) | " + " | ".join(f"{f:.3f}" for f in floor)
                 + f" | {sum(floor) / len(floor):.3f} |")
    agreement = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for n in names:
        cells = [results[t].get(n, {}).get("counting_agreement") for t in tasks]
        agreement.append(f"| {n} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    agreement.append("| the true answers | " + " | ".join("-" if c is None else f"{c:.3f}" for c in truth) + " |")
    steps = sorted({r["steps"] for rs in results.values() for r in rs.values()})
    test = sorted({r["test_instances"] for rs in results.values() for r in rs.values()})
    lrs = sorted({r.get("lr", LR) for rs in results.values() for r in rs.values()})  # 3e-3 before --lr
    j = "/".join
    note = (f"Accuracy over every scored token of {j(map(str, test))} held-out instances per task, after "
            f"{j(map(str, steps))} steps of {STEP_TOKENS:,} tokens at lr {j(map(str, lrs))}. Chance: a uniform guess "
            "among the task's answers; counting: the answer seen most often so far in the same instances, a guess "
            "that ties no value to its key.")
    note2 = ("Agreement with counting: over the scored positions where counting rules some answer out, the fraction "
             "at which a model's greedy answer is one counting gives (1.000: the model counts; a perfect model agrees "
             "as often as the true answers do).")
    return "\n".join(lines) + "\n\n" + note + "\n\n" + "\n".join(agreement) + "\n\n" + note2


def plot(results: dict, refs: dict, path: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    names = model_names(results)
    fig, ax = plt.subplots(figsize=(3.4 + 1.4 * len(results), 3.6))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j, t in enumerate(results) if n in results[t]]
        ys = [results[t][n]["accuracy"] for t in results if n in results[t]]
        ax.bar(xs, ys, width, label=n)
    for j, t in enumerate(results):  # the floors a model passes without binding anything
        ax.hlines(1 / KINDS[t].answers, j - 0.45, j + 0.45, colors="k", linestyles=":", lw=1,
                  label="chance" if j == 0 else None)
        ax.hlines(refs[t][0], j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1,
                  label="counting (no binding)" if j == 0 else None)
    ax.set_xticks(range(len(results)), list(results), fontsize=8)
    ax.set(ylabel="accuracy (scored tokens)", ylim=(0, 1.02), title="MAD tasks")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(out: str) -> str:
    results = collect(out)
    write_json(os.path.join(out, "results.json"), results)
    refs = references(results)
    md = table(results, refs)
    write_text(os.path.join(out, "results.md"), md + "\n")
    plot(results, refs, os.path.join(out, "accuracy.png"))
    return md


def run_one(task: str, name: str, args) -> dict:
    """Train (or resume, or reuse) one model on one task and score it; its ``result.json`` is the record."""
    cfg = run_config(task, name, args.steps, args.out, args.seed, args.lr)
    batch = cfg.train.batch_size
    n_test = -(-args.test // batch) * batch  # whole batches
    path = os.path.join(cfg.train.out_dir, "result.json")
    if os.path.exists(path):
        r = json.loads(Path(path).read_text())
        if r.get("steps") == args.steps and r.get("test_instances") == n_test:
            if "counting_agreement" not in r:  # scored before the measure existed: loaded, not retrained
                r["counting_agreement"] = counting_agreement(trained(cfg)[0], task, args.seed, n_test)
                write_json(path, r)
            return r
    t0 = time.time()
    model, ckpt, summary = trained(cfg)
    agreement = CountingAgreement(task)  # scored from the same forward as the accuracy
    score = evaluate_task(model, cfg.data.task, seq_len=cfg.data.seq_len, batches=n_test // batch,
                          batch_size=batch, seed=cfg.train.seed, tokenizer=None, vocab_size=cfg.model.vocab_size,
                          on_batch=agreement)
    r = {"task": task, "model": name, "params": count_params(model), "steps": args.steps, "seq_len": cfg.data.seq_len,
         "batch": batch, "seed": args.seed, "lr": args.lr, "test_instances": n_test,
         "accuracy": score["acc"], "test_loss": score["loss"], "checkpoint": os.path.relpath(ckpt, args.out),
         "counting_agreement": agreement.value}
    if summary is not None:
        r.update(train_tokens_per_s=summary["tokens_per_s"], train_seconds=round(time.time() - t0, 1))
    write_json(path, r)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(prog="titans study mad", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per model (2,048 tokens each)")
    ap.add_argument("--tasks", default=",".join(KINDS), help=f"MAD tasks ({', '.join(KINDS)})")
    ap.add_argument("--variants", default=VARIANTS, help="models (a variant or an ablation name)")
    ap.add_argument("--test", type=int, default=1280, help="held-out instances per task (rounded up to batches)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate (MAD sweeps it per model)")
    ap.add_argument("--out", default="runs/study_mad")
    args = ap.parse_args(argv)
    tasks, names = args.tasks.split(","), args.variants.split(",")
    bad = [t for t in tasks if t not in KINDS]
    if bad:
        ap.error(f"--tasks: unknown {bad}; choose from {tuple(KINDS)}")
    if args.steps < 1 or args.test < 1:
        ap.error(f"--steps {args.steps} / --test {args.test}: must be >= 1")
    if not args.lr > 0:
        ap.error(f"--lr {args.lr}: must be > 0")
    for task in tasks:  # bad names, and folders holding another run (another --seed), fail before any training
        for name in names:
            try:
                cfg = run_config(task, name, args.steps, args.out, args.seed, args.lr)
                check_run_folder(cfg.train.out_dir, cfg.to_dict())
            except ValueError as e:
                ap.error(str(e))
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    os.makedirs(args.out, exist_ok=True)
    for task in tasks:
        for name in names:
            r = run_one(task, name, args)
            print(f"{task} / {name}: accuracy {r['accuracy']:.3f}", flush=True)
            md = summarize(args.out)
    print(md)
