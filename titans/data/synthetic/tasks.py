"""The synthetic tasks as training data: seeded, infinite sources of short instances, batched like ``train_batch``.

A task is named by a string:

- ``"niah"`` (S-NIAH-1/2/3 mixed) or ``"niah:passkey"``, ``"niah:number"``, ``"niah:uuid"``
- ``"babilong"`` (qa1-qa3 mixed) or ``"babilong:qa1"`` ...
- ``"mqar"`` (key/value pairs filling the row) or ``"mqar:N"`` (N pairs)
- ``"mad:recall"``, ``"mad:noisy_recall"``, ``"mad:fuzzy_recall"``, ``"mad:selective_copy"``, ``"mad:memorize"``
  (one MAD task each, :mod:`.mad`; ids below the task's small vocabulary, any length)

Each row of a batch is one instance drawn by its own seed ``(seed, step, micro, row)``: the kind and the needle depth
are drawn uniformly, the prompt fills the row up to a reserve for the longest answer of the task, the answer follows
and the rest is padding (id 0). Training targets are every next token but the padding: the haystack is ordinary
language modeling and, for S-NIAH-1, repeated noise plus a needle that states its key twice, which is where a small
model first learns to copy from context (with the answer alone as target, a 0.8M model had learned nothing after
150 steps). Validation (``answer_only=True``) scores the answer tokens alone. Batches are a pure function of
``(seed, step, micro)``, so resumed runs see the same data (as with the corpus loader).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..loader import batch_rows
from .babi import PLACES, make_babi
from .babi import TASKS as BABI_TASKS
from .mad import KINDS as MAD_KINDS
from .mad import make_mad
from .mqar import make_mqar
from .niah import KINDS as NIAH_KINDS
from .niah import make_niah

FAMILIES = ("niah", "babilong", "mqar", "mad")
VAL_SEED_OFFSET = 1_000_003  # validation instances use seeds no training step uses


@dataclass(frozen=True)
class TaskSpec:
    family: str  # niah | babilong | mqar | mad
    kinds: tuple[str, ...]  # niah kinds, babi tasks or the one MAD task; empty for mqar
    n_pairs: int | None = None  # mqar only (None: as many as fit)

    @property
    def name(self) -> str:
        return self.family if not self.kinds else f"{self.family}:{','.join(self.kinds)}"


def parse_task(task: str) -> TaskSpec:
    """``"niah"`` / ``"niah:passkey"`` / ``"babilong:qa1,qa2"`` / ``"mqar:32"`` -> :class:`TaskSpec`."""
    family, _, rest = task.partition(":")
    if family not in FAMILIES:
        raise ValueError(f"task={task!r}: the family must be one of {FAMILIES}")
    if family == "mqar":
        if rest and not (rest.isdigit() and int(rest) >= 1):
            raise ValueError(f"task={task!r}: mqar takes a number of pairs, e.g. 'mqar:32'")
        return TaskSpec("mqar", (), int(rest) if rest else None)
    if family == "mad":
        if rest not in MAD_KINDS:
            raise ValueError(f"task={task!r}: name one MAD task, 'mad:KIND' with KIND one of {tuple(MAD_KINDS)}")
        return TaskSpec("mad", (rest,))
    allowed = NIAH_KINDS if family == "niah" else BABI_TASKS
    kinds = tuple(rest.split(",")) if rest else allowed
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"task={task!r}: unknown {family} kind(s) {bad}; choose from {allowed}")
    return TaskSpec(family, kinds)


def scored_per_token(task: str) -> bool:
    """Whether a task's accuracy counts every scored token (MQAR's recalls, MAD's targets) rather than whole
    answers."""
    return task.startswith(("mqar", "mad"))


def answer_reserve(spec: TaskSpec) -> int:
    """Upper bound on an answer's tokens for any tokenizer whose tokens are at least one byte (bytes, BPE)."""
    if spec.family == "babilong":
        return max(len(p) for p in PLACES)
    return max({"passkey": 5, "number": 7, "uuid": 36}[k] for k in spec.kinds)


def make_instance(spec: TaskSpec, kind: str, *, length: int, seed: int, tokenizer, depth: float = 0.5):
    """One prompt of exactly ``length`` tokens with its answer (a ``NeedleExample`` or ``BabiExample``)."""
    if spec.family == "niah":
        return make_niah(kind, length=length, depth=depth, seed=seed, tokenizer=tokenizer)
    return make_babi(kind, length=length, seed=seed, tokenizer=tokenizer)


def task_batch(task: str | TaskSpec, *, seq_len: int, batch_size: int, seed: int, step: int, tokenizer,
               micro: int = 0, micros: int = 1, rank: int = 0, world: int = 1, vocab_size: int = 256,
               answer_only: bool = False):
    """Rows :func:`~titans.data.loader.batch_rows` of the global batch of ``batch_size`` for ``step``: ``(x, y)``
    int64 ``[batch_size / (micros * world), seq_len]``. ``y`` is the next token of every prompt and answer position
    (``-100`` on the padding), or with ``answer_only`` only at the positions whose next token is part of the answer.
    MQAR targets are always the recalled values only; MAD's are as :func:`.mad.make_mad` gives them
    (``answer_only``: the scored ones)."""
    spec = parse_task(task) if isinstance(task, str) else task
    rows = batch_rows(batch_size, micro, micros, rank, world)
    per = len(rows)
    base = hash((seed, step, 0)) & 0x7FFF_FFFF_FFFF_FFFF  # 0: as train_batch's
    if spec.family == "mad":  # evaluation steps (VAL_SEED_OFFSET on) draw the evaluation form
        if MAD_KINDS[spec.kinds[0]].vocab > vocab_size:
            raise ValueError(f"model.vocab_size={vocab_size}: task {spec.name!r} uses "
                             f"{MAD_KINDS[spec.kinds[0]].vocab} ids")
        rows_xy = [make_mad(spec.kinds[0], seq_len=seq_len, seed=hash((base, r)) & 0xFFFF_FFFF_FFFF,
                            train=step < VAL_SEED_OFFSET) for r in rows]
        x = torch.tensor([r[0] for r in rows_xy], dtype=torch.long).reshape(per, seq_len)
        y = torch.tensor([r[2] if answer_only else r[1] for r in rows_xy], dtype=torch.long).reshape(per, seq_len)
        return x, y
    if spec.family == "mqar":
        n_pairs = spec.n_pairs or min(seq_len // 4, vocab_size // 2 - 1)
        idx, tgt = make_mqar(batch=batch_size, n_pairs=n_pairs, vocab_size=vocab_size, length=seq_len + 1, seed=base)
        return idx[rows.start:rows.stop, :-1], tgt[rows.start:rows.stop, :-1]
    prompt_len = seq_len - answer_reserve(spec)
    if prompt_len < 16:
        raise ValueError(f"data.seq_len={seq_len}: too short for task {spec.name!r}")
    x = torch.zeros(per, seq_len + 1, dtype=torch.long)
    y = torch.full((per, seq_len), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        rng = random.Random(hash((base, r)))
        kind = rng.choice(spec.kinds)
        try:
            ex = make_instance(spec, kind, length=prompt_len, seed=rng.getrandbits(48), tokenizer=tokenizer,
                               depth=rng.random())
        except ValueError as e:  # e.g. a UUID needle and its question alone take ~230 bytes
            raise ValueError(f"data.seq_len={seq_len}: too short for task {spec.name!r} ({e})") from None
        a = ex.answer_tokens
        x[i, :prompt_len] = torch.tensor(ex.tokens)
        x[i, prompt_len:prompt_len + len(a)] = torch.tensor(a)
        if answer_only:
            y[i, prompt_len - 1:prompt_len - 1 + len(a)] = torch.tensor(a)  # position t predicts token t + 1
        else:
            y[i, :prompt_len - 1 + len(a)] = x[i, 1:prompt_len + len(a)]
    return x[:, :-1], y
