"""The training loop: ``train(cfg) -> dict``, one function top to bottom (nanoGPT order).

setup (device, seed, processes) -> data -> model -> optimizer -> resume? -> loop: lr, accumulate micro-batches,
clip, step, log, validate, checkpoint -> plot. Batches depend only on ``(seed, step)`` and everything else that
changes is in the checkpoint, so ``--resume`` continues bit-identically on the CPU (tested, including a SIGKILL).
"""

from __future__ import annotations

import csv
import math
import os
import time

import torch

from ..data import get_tokenizer, prepare, train_batch
from ..data.loader import batch_rows
from ..data.synthetic.tasks import task_batch
from ..device import resolve_device
from ..models import TitansLM, count_params
from .checkpoint import check_same_run, latest_checkpoint, load_checkpoint, load_model_weights, save_checkpoint
from .config import RunConfig
from .evaluate import evaluate_split, evaluate_task
from .parallel import all_reduce_mean, cleanup, full_states, init_distributed, load_optimizer_state, wrap
from .plots import plot_runs


def lr_at(step: int, cfg) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine down to ``lr * min_lr_ratio`` at ``max_steps``."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    floor = t.lr * t.min_lr_ratio
    return floor + 0.5 * (t.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) only; norms, biases and gains are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2))


def train_step(model, opt, batches, cfg, lr: float, autocast) -> tuple[float, float]:
    """One optimizer step over ``batches`` (micro-batches of ``(x, y)``). Returns ``(mean loss, grad norm)``."""
    for group in opt.param_groups:
        group["lr"] = lr
    total = 0.0
    for x, y in batches:
        with autocast():
            loss = model(x, targets=y).loss / len(batches)
        loss.backward()
        total += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, float(norm)


FIELDS = ["step", "split", "loss", "ppl", "bpb", "acc", "lr", "tokens", "seconds"]  # acc: synthetic tasks


class _Log:
    """CSV log (appending on resume, dropping rows past the resumed step) and optional TensorBoard."""

    def __init__(self, out_dir: str, start_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(out_dir, "log.csv")
        self.tb = None
        if not enabled:
            return
        rows = []
        if start_step > 0 and os.path.exists(self.path):
            with open(self.path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, **row):
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)
        if self.tb is not None:
            self.tb.add_scalar(f"loss/{row['split']}", row["loss"], row["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()


def train(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` into ``cfg.train.out_dir``; returns a summary (final losses, tokens/s, paths)."""
    t = cfg.train
    device = resolve_device(t.device, "train.device")
    info = init_distributed(device)
    batch_rows(t.batch_size, 0, t.grad_accum, info.rank, info.world)  # a batch that does not split: an error now
    torch.manual_seed(t.seed)
    if cfg.data.task is None:
        data = prepare(cfg.data.corpus, cfg.data.tokenizer, cfg.data.data_dir, cfg.data.val_fraction,
                       cfg.data.test_fraction)
        vocab, bytes_per_token = data.meta["vocab_size"], data.meta["bytes_per_token"]
        train_tokens, val_tokens = data.split("train"), data.split("val")
    else:  # a synthetic task: an infinite seeded source, loss on the answers only
        tokenizer = get_tokenizer(cfg.data.tokenizer)
        vocab, bytes_per_token = tokenizer.vocab_size, 1.0
    if vocab != cfg.model.vocab_size and not (cfg.data.task or "").startswith(("mqar", "mad")):
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size}: the {cfg.data.tokenizer!r} tokenizer has "
                         f"{vocab} ids")

    def get_batch(step, m):  # micro-batch m of the step's global batch: the same sequences however it is split
        if cfg.data.task is None:
            return train_batch(train_tokens, seq_len=cfg.data.seq_len, batch_size=t.batch_size, seed=t.seed,
                               step=step, micro=m, micros=t.grad_accum, rank=info.rank, world=info.world)
        return task_batch(cfg.data.task, seq_len=cfg.data.seq_len, batch_size=t.batch_size, seed=t.seed, step=step,
                          micro=m, micros=t.grad_accum, rank=info.rank, world=info.world, tokenizer=tokenizer,
                          vocab_size=cfg.model.vocab_size, answer_only=cfg.data.task_loss == "answer")

    def validate():
        if cfg.data.task is None:
            return evaluate_split(model, val_tokens, length=cfg.data.seq_len,
                                  max_windows=t.eval_batches * t.batch_size, bytes_per_token=bytes_per_token,
                                  device=device)
        ev = evaluate_task(model, cfg.data.task, seq_len=cfg.data.seq_len, batches=t.eval_batches,
                           batch_size=t.batch_size, seed=t.seed, tokenizer=tokenizer,
                           vocab_size=cfg.model.vocab_size, device=device)
        return {**ev, "bpb": ev["loss"] / math.log(2) / bytes_per_token}
    model = TitansLM(cfg.model).to(device)
    start, state = 0, None
    if resume:
        ckpt = latest_checkpoint(t.out_dir)
        if ckpt is not None:
            weights, state, saved_cfg = load_checkpoint(ckpt)
            check_same_run(saved_cfg, cfg.to_dict(), f"--resume: {ckpt}")
            load_model_weights(model, weights, ckpt)  # every rank, whole, before any sharding
            torch.set_rng_state(state["rng_cpu"])
            start = int(state["step"])
    net = wrap(torch.compile(model) if t.compile else model, info, device, t.fsdp)
    opt = make_optimizer(model, cfg)  # after the wrap: FSDP2 replaces the parameters with their shards
    if state is not None:
        load_optimizer_state(model, opt, state["optimizer"], info, t.fsdp)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else torch.autocast("cpu", enabled=False)

    os.makedirs(t.out_dir, exist_ok=True)
    log = _Log(t.out_dir, start, info.is_main)
    bar = None
    if progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.max_steps, initial=start, desc=f"train {cfg.model.variant}", unit="step")
    tokens_per_step = t.batch_size * cfg.data.seq_len
    t0, last = time.time(), {}
    end = min(t.max_steps, t.stop_at) if t.stop_at is not None else t.max_steps
    for step in range(start, end):
        lr = lr_at(step, cfg)
        batches = [tuple(b.to(device) for b in get_batch(step, m)) for m in range(t.grad_accum)]
        net.train()
        loss, gnorm = train_step(net, opt, batches, cfg, lr, autocast)
        loss = all_reduce_mean(loss, info)
        done = step + 1
        if done % t.log_every == 0 or done == t.max_steps:
            log.write(step=done, split="train", loss=loss, ppl=math.exp(min(loss, 50)),
                      bpb=loss / math.log(2) / bytes_per_token,
                      lr=lr, tokens=done * tokens_per_step, seconds=round(time.time() - t0, 3))
        if bar is not None:
            bar.update(1)
            rate = (done - start) * tokens_per_step / max(1e-9, time.time() - t0)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}")
        last["train_loss"] = loss
        if done % t.eval_every == 0 or done == t.max_steps:
            ev = {k: all_reduce_mean(v, info) for k, v in validate().items()}
            last.update(val_loss=ev["loss"], val_ppl=ev["ppl"], val_bpb=ev["bpb"])
            if "acc" in ev:
                last["val_acc"] = ev["acc"]
            log.write(step=done, split="val", loss=ev["loss"], ppl=ev["ppl"], bpb=ev["bpb"], acc=ev.get("acc", ""),
                      lr=lr, tokens=done * tokens_per_step, seconds=round(time.time() - t0, 3))
        if done % t.ckpt_every == 0 or done == end:
            weights, opt_state = full_states(model, opt, info, t.fsdp)  # sharded: a collective, every rank
            if info.is_main:
                save_checkpoint(t.out_dir, done, weights, {"optimizer": opt_state, "step": done,
                                                           "rng_cpu": torch.get_rng_state()}, cfg.to_dict(),
                                t.keep_last)
    if bar is not None:
        bar.close()
    log.close()
    elapsed = time.time() - t0
    if info.is_main:
        plot_losses(os.path.join(t.out_dir, "log.csv"), os.path.join(t.out_dir, "loss.png"))
    cleanup(info)
    return {**last, "steps": end, "params": count_params(model),
            "tokens_per_s": (end - start) * tokens_per_step / max(elapsed, 1e-9), "out_dir": t.out_dir}


def plot_losses(csv_path: str, png_path: str, title: str | None = None) -> str | None:
    """The loss curves of one run (see :func:`titans.train.plots.plot_runs`)."""
    return plot_runs({"": csv_path}, png_path, title or os.path.basename(os.path.dirname(png_path)))
