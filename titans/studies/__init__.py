"""Resumable experiment commands that write their results as they go (``titans study NAME``)."""
