"""Evaluation: scoring of synthetic long-context tasks (the runners come with the long-context study)."""

from .scoring import exact_match, normalize_answer

__all__ = ["exact_match", "normalize_answer"]
