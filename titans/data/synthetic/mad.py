"""The MAD synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures"), the
paper's Table 10 ([V2]), seeded, written from the task definitions of MAD-Lab's baselines.

Five of MAD's six tasks; each instance is ``seq_len`` token ids with, per position, the next token and the target
that is scored (``-100`` elsewhere):

- ``recall`` (in-context recall): key/value token pairs (keys ``[0, 8)``, values ``[8, 16)``), a key keeps its
  value within a sequence; every value whose key appeared earlier is scored. Vocabulary 16, 128 tokens.
- ``noisy_recall``: the same with a fifth of the pair slots replaced by two noise tokens (``[16, 32)``).
  Vocabulary 32, 128 tokens.
- ``fuzzy_recall``: keys and values are spans of 1-3 distinct tokens (keys from ``[0, 7)``, values from
  ``[7, 15)``, 15 pads on the left). One probe pair is placed at a random point and repeated at the end; every
  repeated key's value is scored. At evaluation every key is 3 tokens long. Vocabulary 16, 128 tokens.
- ``selective_copy``: 16 tokens from ``[0, 14)`` scattered among blanks (14), then the copy token (15) and 16
  blanks at whose positions the 16 tokens are to be produced in order. Vocabulary 16, 256 tokens.
- ``memorize``: pairs ``key, insert`` (insert = 255) whose target at the insert position is the key's value under
  one fixed random map of 127 keys (``[0, 127)``) to values (``[127, 255)``): the map is never shown, so it must
  be learned in the weights. Vocabulary 256, 32 tokens.

MAD's sixth task, compression, needs an encoder-decoder wrapped around the model and is not built here.

Training targets (``task_loss="all"``) are, as in MAD, every next token for the recall tasks and the scored
targets for ``selective_copy`` and ``memorize``; evaluation scores the targets alone, token by token. Unlike MAD,
which trains for many epochs on a fixed set (12,800 instances; 256 for ``memorize``), training here draws fresh
instances at every step, like the other synthetic tasks; ``memorize``'s 127 facts are the same in training and
evaluation by design.

    >>> x, nxt, scored = make_mad("recall", seq_len=128, seed=0)       # three lists of 128 ints
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import permutations

import numpy as np

IGNORE = -100


@dataclass(frozen=True)
class MadKind:
    vocab: int  # ids the task uses: [0, vocab)
    seq_len: int  # MAD's baseline length
    next_token_loss: bool  # train on every next token (recall tasks) or on the scored targets only
    answers: int  # possible answers at a scored position: chance accuracy is 1 / answers
    first_answer: int  # the answers are the ids [first_answer, first_answer + answers)


KINDS = {
    "recall": MadKind(16, 128, True, 8, 8),
    "noisy_recall": MadKind(32, 128, True, 8, 8),
    "fuzzy_recall": MadKind(16, 128, True, 8, 7),
    "selective_copy": MadKind(16, 256, False, 14, 0),
    "memorize": MadKind(256, 32, False, 128, 127),
}
N_COPY = 16  # tokens to copy
NOISE_FRACTION = 0.2
MEMORIZE_MAP_SEED = 12345  # one map for every run: train and evaluation must share it


def _recall(rng, seq_len: int, noisy: bool):
    """Pairs (or, when ``noisy``, two noise tokens in a fifth of the slots) until ``seq_len + 1`` ids."""
    kv, seen, raw, scored = {}, set(), [], []
    while len(raw) < seq_len + 1:
        if noisy and rng.random() < NOISE_FRACTION:
            raw += rng.integers(16, 32, 2).tolist()
            scored += [IGNORE, IGNORE]
            continue
        k = int(rng.integers(0, 8))
        v = kv.setdefault(k, int(rng.integers(8, 16)))
        raw += [k, v]
        scored += [IGNORE, v if k in seen else IGNORE]
        seen.add(k)
    return raw[:seq_len + 1], scored[:seq_len + 1]


@cache
def _motifs(lo: int, hi: int, size: int) -> tuple[tuple[int, ...], ...]:
    return tuple(permutations(range(lo, hi), size))


def _fuzzy(rng, seq_len: int, train: bool):
    """Spans of 1-3 tokens; a probe pair at a random point, repeated at the end. Left-padded to ``seq_len + 1``."""
    pad = 15

    def key():
        m = _motifs(0, 7, int(rng.integers(1, 4)) if train else 3)
        return m[int(rng.integers(len(m)))]

    def value():
        m = _motifs(7, 15, int(rng.integers(1, 4)))
        return m[int(rng.integers(len(m)))]

    k_probe, v_probe = key(), value()
    tail = len(k_probe) + len(v_probe)
    budget = seq_len + 1 - tail  # the body; the probe's repeat is the tail
    probe_at = int(rng.integers(0, max(1, budget - 2 * tail)))
    kv, seen, raw, scored = {k_probe: v_probe}, set(), [], []
    while True:
        k = k_probe if k_probe not in seen and len(raw) >= probe_at else key()
        v = kv.setdefault(k, value())
        reserve = 0 if (k_probe in seen or k == k_probe) else tail  # room for the probe if still to come
        if len(raw) + len(k) + len(v) + reserve > budget:
            break
        raw += [*k, *v]
        scored += [IGNORE] * len(k) + ([*v] if k in seen else [IGNORE] * len(v))
        seen.add(k)
    if k_probe not in seen:  # the body filled up before the probe point: the probe goes last
        raw += [*k_probe, *v_probe]
        scored += [IGNORE] * tail
    raw += [*k_probe, *v_probe]
    scored += [IGNORE] * len(k_probe) + [*v_probe]
    n_pad = seq_len + 1 - len(raw)
    return [pad] * n_pad + raw, [IGNORE] * n_pad + scored


def _selective_copy(rng, seq_len: int):
    """16 tokens among blanks, the copy token, 16 blanks; targets at those blanks (not shifted)."""
    blank, copy = 14, 15
    if seq_len < 2 * N_COPY + 2:
        raise ValueError(f"seq_len={seq_len}: selective_copy needs at least {2 * N_COPY + 2} tokens")
    tokens = rng.integers(0, 14, N_COPY).tolist()
    body = [blank] * (seq_len - 1 - N_COPY)  # the tokens keep their order, at random positions among blanks
    slots = np.sort(rng.choice(len(body), N_COPY, replace=False))
    for s, t in zip(slots, tokens):
        body[s] = t
    x = body + [copy] + [blank] * N_COPY
    return x, [IGNORE] * (seq_len - N_COPY) + tokens


@lru_cache(maxsize=1)
def memorize_map() -> dict[int, int]:
    """The fixed map of ``memorize``: 127 keys to distinct values, from one seed."""
    rng = np.random.default_rng(MEMORIZE_MAP_SEED)
    values = rng.permutation(np.arange(127, 255))[:127]
    return {k: int(v) for k, v in zip(rng.permutation(127).tolist(), values)}


def _memorize(rng, seq_len: int):
    if seq_len % 2:
        raise ValueError(f"seq_len={seq_len}: memorize needs an even length (key, insert pairs)")
    m = memorize_map()
    keys = rng.integers(0, 127, seq_len // 2).tolist()
    x = [t for k in keys for t in (k, 255)]
    return x, [t for k in keys for t in (IGNORE, m[k])]


def make_mad(kind: str, *, seq_len: int | None = None, seed: int = 0, train: bool = True):
    """One instance: ``(x, next_token, scored)``, three lists of ``seq_len`` ints (default: MAD's length for the
    kind). ``next_token[t]`` is the training target at position ``t`` under ``task_loss="all"`` (``-100`` on the
    padding), ``scored[t]`` the target that is scored there (``-100`` where none is). ``train=False`` draws the
    evaluation form (``fuzzy_recall``: every key 3 tokens long)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: must be one of {tuple(KINDS)}")
    seq_len = KINDS[kind].seq_len if seq_len is None else seq_len
    if seq_len < 16:
        raise ValueError(f"seq_len={seq_len}: the MAD tasks need at least 16 tokens")
    rng = np.random.default_rng(seed)
    if KINDS[kind].next_token_loss:  # the recall tasks
        raw, scored = (_fuzzy(rng, seq_len, train) if kind == "fuzzy_recall"
                       else _recall(rng, seq_len, kind == "noisy_recall"))
        nxt = [IGNORE if t == 15 and kind == "fuzzy_recall" else t for t in raw[1:]]  # no loss on padding
        return raw[:-1], nxt, scored[1:]
    x, scored = _selective_copy(rng, seq_len) if kind == "selective_copy" else _memorize(rng, seq_len)
    return x, list(scored), scored


def counting_choices(kind: str, x, scored):
    """The guesses of a model that binds nothing: at each scored position, the answers seen most often in ``x``
    so far (that position included; all of them while none is seen). Recall tasks have few values, so one value
    often serves several keys, and counting alone beats chance. Returns ``(choices, target)``: bool
    ``[M, answers]`` (answer ``a`` is column ``a - first_answer``) and int ``[M]``, over the ``M`` scored positions
    in row-major order.

    ``x``, ``scored``: int arrays ``[N, T]``, as :func:`make_mad` gives them (``-100`` where nothing is scored)."""
    k = KINDS[kind]
    x, scored = np.asarray(x), np.asarray(scored)
    if x.shape != scored.shape or x.ndim != 2:
        raise ValueError(f"x {x.shape}, scored {scored.shape}: must be the same [N, T]")
    mask = scored != IGNORE
    target = scored[mask] - k.first_answer
    if ((target < 0) | (target >= k.answers)).any():
        raise ValueError(f"scored: targets outside the answers of {kind!r}")
    ids = np.arange(k.first_answer, k.first_answer + k.answers)
    counts = np.cumsum(x[..., None] == ids, axis=1)[mask]  # [M, answers]: each answer's count so far
    return counts == counts.max(-1, keepdims=True), target


def expected_hits(choices, target) -> float:
    """The expected hits of a guess uniform among ``choices`` (a tie split evenly), :func:`counting_choices`'s
    output."""
    return float((choices[np.arange(len(target)), target] / choices.sum(-1)).sum())


def frequency_guess(kind: str, x, scored) -> tuple[float, int]:
    """The expected hits of :func:`counting_choices`'s guesser (a tie split evenly) and the number of scored
    positions: the floor a model reaches by counting answers without tying them to keys."""
    choices, target = counting_choices(kind, x, scored)
    return expected_hits(choices, target), len(target)
