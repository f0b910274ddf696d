"""The MAD tasks: lengths and vocabularies, and every scored target checked against the task's definition."""

from __future__ import annotations

import pytest
import torch

from titans.data.synthetic.mad import IGNORE, KINDS, N_COPY, counting_choices, frequency_guess, make_mad, memorize_map
from titans.data.synthetic.tasks import VAL_SEED_OFFSET, parse_task, task_batch


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("train", [True, False])
def test_shapes_ids_and_determinism(kind, train):
    for seed in range(5):
        x, nxt, scored = make_mad(kind, seed=seed, train=train)
        n = KINDS[kind].seq_len
        assert len(x) == len(nxt) == len(scored) == n
        assert all(0 <= t < KINDS[kind].vocab for t in x)
        assert any(t != IGNORE for t in scored)
        assert all(s in (IGNORE, t) for s, t in zip(scored, nxt))  # scored targets are training targets too
        assert (x, nxt, scored) == make_mad(kind, seed=seed, train=train)
    assert make_mad(kind, seed=1) != make_mad(kind, seed=2)


@pytest.mark.parametrize("kind", ["recall", "noisy_recall"])
def test_recall_scores_every_repeated_key(kind):
    for seed in range(5):
        x, nxt, scored = make_mad(kind, seq_len=100, seed=seed)
        assert nxt[:-1] == x[1:]
        values, seen = {}, set()
        # Pairs start at even positions except after noise (two tokens, also aligned): walk the pairs.
        for t in range(0, 100, 2):
            k = x[t]
            if k >= 16:  # noise
                assert scored[t] == scored[t + 1] == IGNORE and nxt[t] >= 16
                continue
            assert 0 <= k < 8
            v = nxt[t]
            assert 8 <= v < 16 and values.setdefault(k, v) == v  # a key keeps its value
            assert scored[t] == (v if k in seen else IGNORE)
            seen.add(k)
    assert sum(t >= 16 for t in make_mad("noisy_recall", seed=0)[0]) > 0
    assert max(make_mad("recall", seed=0)[0]) < 16


def test_fuzzy_recall_probe():
    for seed in range(10):
        x, nxt, scored = make_mad("fuzzy_recall", seed=seed, train=False)
        assert nxt[:-1] == [IGNORE if t == 15 else t for t in x[1:]]  # no loss on the left padding (15)
        full = x + [nxt[-1]]
        # The last value is scored, and its key (3 tokens at evaluation) with the value occurred earlier.
        v_len = 0
        while scored[len(scored) - 1 - v_len] != IGNORE:
            v_len += 1
        assert 1 <= v_len <= 3
        probe = full[-(v_len + 3):]
        assert all(0 <= t < 7 for t in probe[:3]) and all(7 <= t < 15 for t in probe[3:])
        body = full[:-(v_len + 3)]
        assert any(body[i:i + len(probe)] == probe for i in range(len(body)))


def test_selective_copy():
    for seed in range(5):
        x, nxt, scored = make_mad("selective_copy", seed=seed)
        n = len(x)
        assert x[n - N_COPY - 1] == 15 and x.count(15) == 1 and x[n - N_COPY:] == [14] * N_COPY
        tokens = [t for t in x[:n - N_COPY - 1] if t != 14]
        assert scored[n - N_COPY:] == tokens and len(tokens) == N_COPY  # in order, at the blanks after the copy
        assert scored[:n - N_COPY] == [IGNORE] * (n - N_COPY) and nxt == scored


def test_memorize():
    m = memorize_map()
    assert sorted(m) == list(range(127)) and len(set(m.values())) == 127
    assert all(127 <= v < 255 for v in m.values())
    x, nxt, scored = make_mad("memorize", seed=3)
    assert x[1::2] == [255] * 16 and scored[::2] == [IGNORE] * 16
    assert scored[1::2] == [m[k] for k in x[::2]]  # the value is never in the input: it must be memorized


def test_bad_input():
    with pytest.raises(ValueError, match="kind='copy'"):
        make_mad("copy")
    with pytest.raises(ValueError, match="seq_len=33"):
        make_mad("memorize", seq_len=33)
    with pytest.raises(ValueError, match="seq_len=20"):
        make_mad("selective_copy", seq_len=20)
    for bad in ("mad", "mad:copy"):
        with pytest.raises(ValueError, match="task="):
            parse_task(bad)
    with pytest.raises(ValueError, match="model.vocab_size=64"):
        task_batch("mad:memorize", seq_len=32, batch_size=2, seed=0, step=0, tokenizer=None, vocab_size=64)


def test_task_batch():
    kw = dict(seq_len=128, batch_size=4, seed=1, tokenizer=None)
    x, y = task_batch("mad:recall", step=5, **kw)
    assert x.shape == y.shape == (4, 128) and torch.equal(y[:, :-1], x[:, 1:])
    xa, ya = task_batch("mad:recall", step=5, answer_only=True, **kw)
    assert torch.equal(x, xa) and ((ya == -100) | (ya == y)).all() and (ya != -100).any()
    lo, _ = task_batch("mad:recall", step=5, rank=1, world=2, **kw)
    assert torch.equal(lo, x[2:])  # ranks split the global batch
    # Evaluation steps draw the evaluation form: fuzzy keys are 3 tokens, so the probe's key ends 4+ from the end.
    xe, ye = task_batch("mad:fuzzy_recall", step=VAL_SEED_OFFSET, answer_only=True, **kw)
    assert xe.shape == (4, 128) and (ye != -100).any(1).all()


def test_counting_guess():
    # Row 0: values 8 (twice) and 9 seen when key 1's value is asked: counting names 8, the answer. Row 1: 8 and 9
    # once each when key 0's is asked: a tie, half a hit. Answers are columns id - 8.
    x = [[0, 8, 1, 8, 2, 9, 1], [0, 8, 1, 9, 0, 0, 0]]
    scored = [[IGNORE] * 6 + [8], [IGNORE] * 4 + [8] + [IGNORE] * 2]
    choices, target = counting_choices("recall", x, scored)
    assert choices.tolist() == [[True] + [False] * 7, [True, True] + [False] * 6] and target.tolist() == [0, 0]
    assert frequency_guess("recall", x, scored) == (1.5, 2)
    assert frequency_guess("memorize", [[3, 255]], [[IGNORE, memorize_map()[3]]]) == (1 / 128, 1)  # never seen
    # On real instances counting beats chance and stays far from recall.
    rows = [make_mad("recall", seed=s) for s in range(100)]
    hits, n = frequency_guess("recall", [r[0] for r in rows], [r[2] for r in rows])
    assert 0.2 < hits / n < 0.45
    with pytest.raises(ValueError, match="must be the same"):
        frequency_guess("recall", x, scored[:1])
    with pytest.raises(ValueError, match="outside the answers of 'recall'"):
        frequency_guess("recall", [[0, 1]], [[IGNORE, 3]])
