"""``titans eval commonsense``: each choice's streamed log-likelihood equals one forward over context + choice, the
metrics count what they say, and the command writes its table and resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from titans.data import ByteTokenizer
from titans.data.commonsense import Doc
from titans.eval import commonsense as cs
from titans.models import TitansLM
from titans.models.presets import tiny
from titans.train import RunConfig
from titans.train.config import DataConfig


def _one_shot(model, tok, ctx, cont):
    ids, c = tok.encode(ctx), tok.encode(cont)
    with torch.no_grad():
        logp = model(torch.tensor([ids + c])).logits.log_softmax(-1)[0, len(ids) - 1:-1]
    return float(logp.gather(-1, torch.tensor(c)[:, None]).sum())


@pytest.mark.parametrize("variant", ["mac", "transformer"])
def test_choice_logprobs_equal_one_forward(variant):
    """Shared contexts (one batch after them) and distinct ones, streamed in pieces that cut the model's segments
    and chunks: the same log-likelihoods as one forward over each whole sequence (float64)."""
    model, tok = TitansLM(tiny(variant)).double().eval(), ByteTokenizer()
    shared = Doc(("Question: which is hot?\nAnswer:",) * 3, (" fire", " ice cubes", " snow"), 0)
    distinct = Doc(("Ann gave Bo a cup because Ann", "Ann gave Bo a cup because Bo"), (" was thirsty.",) * 2, 1)
    for doc in (shared, distinct):
        got = cs.choice_logprobs(model, tok, doc, piece=7)
        want = [_one_shot(model, tok, c, x) for c, x in zip(doc.contexts, doc.continuations)]
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-9
    hit, lp = cs.lambada_doc(model, tok, Doc(("He drank a cup of",), (" tea",), 0), piece=5)
    assert abs(lp - _one_shot(model, tok, "He drank a cup of", " tea")) < 1e-9 and isinstance(hit, bool)


def test_metrics_count_argmaxes(monkeypatch):
    # acc: highest log-likelihood; acc_norm: highest per character of the continuation
    docs = [Doc(("q",) * 2, (" a", " bbbbbbb"), 1), Doc(("q",) * 3, (" a", " b", " c"), 2)]
    lps = {docs[0]: [-1.0, -3.0], docs[1]: [-1.0, -2.0, -0.5]}
    monkeypatch.setattr(cs, "choice_logprobs", lambda model, tok, d, piece: lps[d])
    r = cs.evaluate_task(None, None, "piqa", docs, 8)
    assert (r["n"], r["acc"], r["acc_norm"]) == (2, 0.5, 1.0)
    assert r["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2) and r["acc_stderr"] == pytest.approx(0.5)
    assert r["majority"] == 0.5  # labels 1 and 2: each half the documents
    monkeypatch.setattr(cs, "lambada_doc", lambda model, tok, d, piece: (d.label == 0, -2.0))
    r = cs.evaluate_task(None, None, "lambada", [Doc(("x",), (" y",), 0)] * 2, 8)
    assert r["acc"] == 1.0 and r["ppl"] == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="piqa: no documents"):
        cs.evaluate_task(None, None, "piqa", [], 8)


def test_the_command_writes_its_table_and_resumes(tmp_path):
    pytest.importorskip("pyarrow")
    from tests.commonsense_data import write_root

    root = write_root(tmp_path / "olmo_eval")
    models = {name: TitansLM(tiny(name)).eval() for name in ("mac", "transformer")}
    loads = []

    def load(ckpt):
        loads.append(ckpt)
        return models[ckpt], RunConfig(model=tiny(ckpt), data=DataConfig(seq_len=16)), ckpt

    out = str(tmp_path / "out")
    argv = ["--ckpt", "mac", "--ckpt", "transformer", "--tasks", "piqa,boolq,lambada", "--data-root", root,
            "--out", out, "--quiet"]
    records = cs.main(argv, load=load)
    assert [(r["checkpoint"], r["task"], r["n"]) for r in records] == [
        (c, t, n) for c in ("mac", "transformer") for t, n in (("piqa", 1), ("boolq", 2), ("lambada", 2))]
    table = (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "results.png").stat().st_size > 0
    assert table.splitlines()[0] == ("| checkpoint | variant | piqa acc_norm | boolq acc | lambada ppl | lambada acc |")
    assert "| `transformer` | transformer |" in table
    # boolq's two answers differ; piqa's one document has the most common answer
    assert "Guessing: piqa 50.0%, boolq 50.0%. Always the most common answer: piqa 100.0%." in table
    # run again: every (checkpoint, task) already there, so no model is even loaded
    assert cs.main(argv, load=load) == records
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == records
    assert loads == ["mac", "transformer"]


def test_bad_arguments_fail_before_any_model_loads(tmp_path):
    def load(ckpt):
        raise AssertionError("loaded a model")

    with pytest.raises(SystemExit):
        cs.main(["--ckpt", "x", "--tasks", "piqa,copa"], load=load)
    with pytest.raises(SystemExit):
        cs.main(["--ckpt", "x", "--limit", "0"], load=load)
    with pytest.raises(SystemExit):
        cs.main(["--ckpt", "x", "--device", "gpu0"], load=load)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cs.main(["--ckpt", "x", "--device", "cuda"], load=load)
    with pytest.raises(FileNotFoundError, match="no hf_datasets folder"):
        cs.main(["--ckpt", "x", "--data-root", str(tmp_path)], load=load)
