"""Scoring of generated answers: exact match (after trimming whitespace and trailing punctuation)."""

from __future__ import annotations


def normalize_answer(text: str) -> str:
    return text.strip().rstrip(".,;:!?").strip().lower()


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Fraction of predictions equal to their answer; a prediction may run on past the answer only after a
    non-alphanumeric character (``"71432. It is"`` matches ``"71432"``, ``"offices"`` does not match ``"office"``)."""
    if len(predictions) != len(answers):
        raise ValueError(f"predictions: {len(predictions)} given for {len(answers)} answers")
    if not answers:
        return 0.0
    hits = 0
    for p, a in zip(predictions, answers):
        p, a = normalize_answer(p), normalize_answer(a)
        hits += p == a or (p.startswith(a) and not p[len(a):len(a) + 1].isalnum())
    return hits / len(answers)
