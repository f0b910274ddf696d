"""The MAD study runs end to end on a tiny budget, reuses finished models, and rejects bad input up front."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from titans.data.synthetic.mad import KINDS
from titans.studies.mad import CountingAgreement, counting_agreement, counting_reference, main
from titans.train.evaluate import evaluate_task


def test_mad_study_tiny(tmp_path, capsys):
    out = str(tmp_path / "mad")
    argv = ["--steps", "2", "--test", "8", "--tasks", "memorize,selective_copy", "--variants", "swa", "--out", out]
    main(argv)
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert list(res) == ["selective_copy", "memorize"]  # the tasks' own order
    r = res["memorize"]["swa"]
    assert r["seq_len"] == 32 and r["batch"] == 64 and r["test_instances"] == 64 and 0 <= r["accuracy"] <= 1
    assert os.path.exists(os.path.join(out, "accuracy.png")) and "| swa |" in Path(out, "results.md").read_text()
    mtime = os.path.getmtime(os.path.join(out, "memorize", "swa", "result.json"))
    main(argv)  # finished: reused, not retrained or rescored
    assert os.path.getmtime(os.path.join(out, "memorize", "swa", "result.json")) == mtime
    # A second process's task in the same folder joins the table.
    main(["--steps", "2", "--test", "8", "--tasks", "recall", "--variants", "swa", "--out", out])
    assert list(json.loads(Path(os.path.join(out, "results.json")).read_text())) == ["recall", "selective_copy",
                                                                                     "memorize"]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # another seed into the same folder: an error, not the old run reused
        main(argv + ["--seed", "1"])
    assert "train.seed=1337, not 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv,err", [(["--tasks", "copy"], "--tasks: unknown ['copy']"),
                                      (["--variants", "mac-bogus"], "mac-bogus"),
                                      (["--steps", "0"], "--steps 0"), (["--lr", "0"], "--lr 0.0")])
def test_mad_study_bad_input(tmp_path, capsys, argv, err):
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path)])
    assert err in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing trained


class _Guesser(torch.nn.Module):
    """A stand-in model: ``count`` names the answer seen most often so far, else the value that followed the same
    key last time (recall solved)."""

    def __init__(self, task, count):
        super().__init__()
        self.kind, self.count = KINDS[task], count

    def forward(self, x):
        lo, n = self.kind.first_answer, self.kind.answers
        is_answer = ((x >= lo) & (x < lo + n))[..., None]
        counts = torch.cumsum(torch.nn.functional.one_hot(x.clamp(lo, lo + n - 1) - lo, n) * is_answer, 1)
        pred = counts.argmax(-1) + lo  # the first of the most counted (torch's argmax: the first maximum)
        if not self.count:
            for b, row in enumerate(x.tolist()):
                for t, key in enumerate(row):
                    prev = [j for j in range(t) if row[j] == key and j + 1 < len(row)]
                    if key < 8 and prev:
                        pred[b, t] = row[prev[-1] + 1]
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, self.kind.vocab).float())


def test_counting_agreement():
    assert counting_agreement(_Guesser("recall", True), "recall", 1337, 32) == 1.0
    oracle = _Guesser("recall", False)
    assert evaluate_task(oracle, "mad:recall", seq_len=128, batches=2, batch_size=16, seed=1337, tokenizer=None,
                         vocab_size=16)["acc"] == 1.0  # the stand-in does solve recall
    agree = counting_agreement(oracle, "recall", 1337, 32)
    floor, truth = counting_reference("recall", 1337, 32)
    assert floor < agree == truth < 0.7  # it agrees exactly where the answer is also the most counted
    assert counting_agreement(_Guesser("memorize", True), "memorize", 1337, 64) is None  # counting never decides


def test_counting_agreement_shares_the_scoring_forward():
    """``run_one`` takes the agreement from ``evaluate_task``'s own forward (``on_batch``): the same batches, so the
    same number as a forward of its own, for a model that counts and for one that does not."""
    for count in (True, False):
        model = _Guesser("recall", count)
        shared = CountingAgreement("recall")
        evaluate_task(model, "mad:recall", seq_len=128, batches=2, batch_size=16, seed=1337, tokenizer=None,
                      vocab_size=16, on_batch=shared)
        assert shared.value == counting_agreement(model, "recall", 1337, 32)
