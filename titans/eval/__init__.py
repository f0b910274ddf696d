"""Evaluation: scoring, the streamed long-context runner (``titans eval niah|babilong|mqar``) and the commonsense
benchmarks (``titans eval commonsense``, :mod:`titans.eval.commonsense`)."""

from .answers import answer_batch, answer_logprob, greedy, prompt_state, recall_accuracy
from .scoring import exact_match, normalize_answer

__all__ = ["answer_batch", "answer_logprob", "greedy", "prompt_state", "recall_accuracy", "exact_match",
           "normalize_answer"]
