"""Synthetic tasks as training data: deterministic, answer targets in the right places, ranks split the batch."""

from __future__ import annotations

import pytest
import torch

from titans.data import ByteTokenizer
from titans.data.synthetic.haystack import haystack_tokens
from titans.data.synthetic.tasks import answer_reserve, parse_task, task_batch

TOK = ByteTokenizer()


def test_parse_task():
    assert parse_task("niah").kinds == ("passkey", "number", "uuid")
    assert parse_task("babilong:qa1,qa3").kinds == ("qa1", "qa3")
    assert parse_task("mqar:32").n_pairs == 32 and parse_task("mqar").n_pairs is None
    for bad in ("nope", "niah:key", "mqar:x", "babilong:qa9"):
        with pytest.raises(ValueError, match="task="):
            parse_task(bad)


@pytest.mark.parametrize("task,seq_len", [("niah", 320), ("niah:passkey", 128), ("babilong:qa1", 448)])
def test_task_batch_targets(task, seq_len):
    x, y = task_batch(task, seq_len=seq_len, batch_size=4, seed=1, step=3, tokenizer=TOK)
    x2, y2 = task_batch(task, seq_len=seq_len, batch_size=4, seed=1, step=3, tokenizer=TOK)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == y.shape == (4, seq_len)
    xa, ya = task_batch(task, seq_len=seq_len, batch_size=4, seed=1, step=3, tokenizer=TOK, answer_only=True)
    assert torch.equal(xa, x)
    prompt_len = seq_len - answer_reserve(parse_task(task))
    for i in range(4):
        pos = (ya[i] != -100).nonzero()[:, 0]
        assert pos[0] == prompt_len - 1  # the last prompt token predicts the first answer token
        answer = TOK.decode(ya[i, pos].tolist())
        prompt = TOK.decode(x[i, :prompt_len].tolist())
        assert answer and answer in prompt  # recoverable from the text
        # full targets: every next token up to the end of the answer, nothing on the padding
        end = int(pos[-1]) + 1
        assert torch.equal(y[i, :end - 1], x[i, 1:end]) and (y[i, end:] == -100).all()
    other = task_batch(task, seq_len=seq_len, batch_size=4, seed=1, step=4, tokenizer=TOK)[0]
    assert not torch.equal(other, x)


def test_ranks_take_their_rows_of_the_global_batch():
    full = task_batch("niah", seq_len=320, batch_size=4, seed=0, step=0, tokenizer=TOK)
    parts = [task_batch("niah", seq_len=320, batch_size=4, seed=0, step=0, tokenizer=TOK, rank=r, world=2)
             for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), full[1])


def test_mqar_batch_targets_only_recalls():
    x, y = task_batch("mqar:8", seq_len=64, batch_size=2, seed=0, step=0, tokenizer=TOK)
    assert x.shape == (2, 64) and int((y != -100).sum()) == 16


def test_too_short_for_the_task():
    with pytest.raises(ValueError, match="data.seq_len=20"):
        task_batch("niah", seq_len=20, batch_size=1, seed=0, step=0, tokenizer=TOK)


def test_haystack_is_a_window_of_the_cyclic_corpus():
    texts = ("abc.", "defgh.")
    assert TOK.decode(haystack_tokens(texts, 1, 12, TOK)) == "defgh.\n\nabc."[:12]
    long = haystack_tokens(texts, 0, 100, TOK)  # longer than the corpus: it loops
    assert len(long) == 100 and TOK.decode(long[:14]) == TOK.decode(long[14:28]) == "abc.\n\ndefgh.\n\n"
