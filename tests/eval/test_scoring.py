from __future__ import annotations

from titans.data import ByteTokenizer
from titans.data.synthetic import make_babi
from titans.eval import exact_match

PLAYS = ["ACT I. SCENE I. Enter two. They speak of many things. Exit.", "ACT II. The king speaks. All leave."]


def test_oracle_scores_one_and_constant_scores_chance():
    exs = [make_babi("qa1", length=600, seed=s, tokenizer=ByteTokenizer(), texts=PLAYS) for s in range(600)]
    answers = [e.answer for e in exs]
    assert exact_match(answers, answers) == 1.0
    const = exact_match(["kitchen"] * len(answers), answers)
    assert abs(const - 1 / 6) < 0.05  # six places


def test_prediction_may_run_on_after_punctuation_only():
    assert exact_match(["71432. It is the key", "offices", " Office."], ["71432", "office", "office"]) == 2 / 3
