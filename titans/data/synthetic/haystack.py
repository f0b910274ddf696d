"""Haystack text for the long-context tasks: a window of a cyclic corpus, exactly ``budget`` tokens.

Encoding the whole corpus for every instance (5 MB of Shakespeare) would cost more than a training step, so only a
slice of characters starting at the chosen text is encoded, grown until it yields enough tokens. The corpus is read
as one cycle (``text_start, ..., text_last, text_0, ...``), so any length can be served: a haystack longer than the
corpus loops it.
"""

from __future__ import annotations

from functools import lru_cache

SEP = "\n\n"


@lru_cache(maxsize=8)
def _joined(texts: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    offsets, pos = [], 0
    for t in texts:
        offsets.append(pos)
        pos += len(t) + len(SEP)
    return SEP.join(texts) + SEP, tuple(offsets)


def haystack_tokens(texts, start: int, budget: int, tokenizer) -> list[int]:
    """``budget`` token ids of the cyclic corpus ``texts`` read from the beginning of ``texts[start]``."""
    if budget <= 0:
        return []
    joined, offsets = _joined(tuple(texts))
    off = offsets[start % len(offsets)]
    n_chars = 2 * budget + 256  # a byte is one token; BPE tokens are longer, so this usually suffices at once
    while True:
        reps = (off + n_chars) // len(joined) + 1
        chunk = (joined * (reps + 1))[off:off + n_chars] if reps > 1 else (joined + joined)[off:off + n_chars]
        ids = tokenizer.encode(chunk)
        if len(ids) > budget:  # the last token of a slice may be cut mid-word: keep strictly more, then trim
            return ids[:budget]
        n_chars *= 2
