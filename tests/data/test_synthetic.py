"""Synthetic long-context tasks: deterministic per seed, needle present once at the requested depth, answers
recoverable from the text, exact lengths; MQAR targets only at recall positions."""

from __future__ import annotations

import re

import pytest

from titans.data import ByteTokenizer
from titans.data.synthetic import BABI_TASKS, NIAH_KINDS, make_babi, make_mqar, make_niah

TOK = ByteTokenizer()
ESSAYS = ["First essay. It talks about startups. Then it ends.", "Second essay. Another idea here. Done now."]
PLAYS = ["ACT I. SCENE I. Enter two. They speak of many things. Exit.", "ACT II. The king speaks. All leave."]


def _count(hay, needle):
    return sum(hay[i:i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


@pytest.mark.parametrize("kind", NIAH_KINDS)
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_niah_needle_once_at_depth_exact_length(kind, depth):
    ex = make_niah(kind, length=1500, depth=depth, seed=3, tokenizer=TOK, texts=ESSAYS)
    assert len(ex.tokens) == 1500
    assert _count(ex.tokens, ex.needle_tokens) == 1
    assert ex.tokens[ex.needle_start:ex.needle_start + len(ex.needle_tokens)] == ex.needle_tokens
    text = TOK.decode(ex.tokens)
    assert text.count(ex.answer) >= 1 and ex.answer in TOK.decode(ex.needle_tokens)  # recoverable from the text
    # the needle sits at a sentence boundary (or an end) within about one sentence of the requested depth
    assert abs(ex.needle_start / ex.haystack_tokens - depth) < 0.05
    assert ex.needle_start in (0, ex.haystack_tokens) or TOK.decode(ex.tokens[:ex.needle_start]).endswith(".")


def test_niah_is_deterministic_and_seeds_differ():
    a = make_niah("uuid", length=800, depth=0.5, seed=1, tokenizer=TOK, texts=ESSAYS)
    b = make_niah("uuid", length=800, depth=0.5, seed=1, tokenizer=TOK, texts=ESSAYS)
    c = make_niah("uuid", length=800, depth=0.5, seed=2, tokenizer=TOK, texts=ESSAYS)
    assert a == b and a.answer != c.answer
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", a.answer)


def test_niah_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_niah("word", length=500, depth=0.5, seed=0, tokenizer=TOK, texts=ESSAYS)
    with pytest.raises(ValueError, match="depth"):
        make_niah("passkey", length=500, depth=1.5, seed=0, tokenizer=TOK)
    with pytest.raises(ValueError, match="too short"):
        make_niah("passkey", length=50, depth=0.5, seed=0, tokenizer=TOK)


@pytest.mark.parametrize("task", BABI_TASKS)
def test_babi_facts_in_order_answer_in_facts_exact_length(task):
    ex = make_babi(task, length=3000, seed=5, tokenizer=TOK, texts=PLAYS)
    assert len(ex.tokens) == 3000
    text = TOK.decode(ex.tokens)
    positions = [text.index(f) for f in ex.facts]
    assert positions == sorted(positions)
    assert any(ex.answer in f for f in ex.facts)
    assert text.endswith(f"{ex.question} Answer: ")
    assert make_babi(task, length=3000, seed=5, tokenizer=TOK, texts=PLAYS) == ex


def _simulate(facts, question):
    """An independent solver of the three tasks from the story sentences."""
    loc, held, trail = {}, {}, {}
    for f in facts:
        w = f.rstrip(".").split()
        if "picked" in w:
            held[w[-1]] = w[0]
            trail[w[-1]] = [loc[w[0]]]
        elif "dropped" in w:
            held.pop(w[-1])
        else:
            loc[w[0]] = w[-1]
            for o, p in held.items():
                if p == w[0] and trail[o][-1] != w[-1]:
                    trail[o].append(w[-1])
    q = question.rstrip("?").split()
    if q[:2] == ["Where", "is"] and q[2] != "the":
        return loc[q[2]]
    if q[:3] == ["Where", "is", "the"]:
        return loc[held[q[3]]]
    obj, before = q[3], q[-1]
    t = trail[obj]
    return t[t.index(before) - 1]


@pytest.mark.parametrize("task", BABI_TASKS)
def test_babi_answers_follow_from_the_story(task):
    for seed in range(30):
        ex = make_babi(task, length=2000, seed=seed, tokenizer=TOK, texts=PLAYS)
        assert _simulate(ex.facts, ex.question) == ex.answer, (seed, ex.facts, ex.question)


def test_mqar_targets_only_at_queries():
    idx, tgt = make_mqar(batch=3, n_pairs=8, n_queries=5, vocab_size=64, length=40, seed=0)
    assert idx.shape == tgt.shape == (3, 40)
    for b in range(3):
        pairs = {int(idx[b, 2 * i]): int(idx[b, 2 * i + 1]) for i in range(8)}
        pos = (tgt[b] != -100).nonzero().flatten().tolist()
        assert len(pos) == 5
        for p in pos:
            assert pairs[int(idx[b, p])] == int(tgt[b, p]) == int(idx[b, p + 1])
    assert (make_mqar(batch=3, n_pairs=8, n_queries=5, vocab_size=64, length=40, seed=0)[0] == idx).all()
