"""bAbI-like reasoning tasks hidden in long background text (BABILong-style), seeded.

No package ships bAbI or BABILong (``../shared/DATA.md``), so the three tasks the issue asks for are generated from
templates in the style of bAbI (Weston et al. 2015):

- ``qa1`` single supporting fact: ``Mary moved to the bathroom. ... Where is Mary?`` -> ``bathroom``
- ``qa2`` two supporting facts: ``John picked up the football. John went to the garden. ... Where is the
  football?`` -> ``garden``
- ``qa3`` three supporting facts: ``... Where was the apple before the kitchen?`` -> ``office``

The facts (with distractor facts about other people) are spread, in order, over background text (the PG19 stand-in:
Shakespeare, or any texts passed in) so that the instance is ``length`` tokens, question last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from .haystack import haystack_tokens

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
PLACES = ("bathroom", "hallway", "garden", "office", "kitchen", "bedroom")
OBJECTS = ("football", "apple", "milk")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
TASKS = ("qa1", "qa2", "qa3")


@dataclass
class BabiExample:
    tokens: list[int]
    answer: str
    answer_tokens: list[int]
    facts: list[str]  # the story sentences, in order (supporting and distracting)
    question: str
    task: str


def _story(task: str, rng: random.Random, n_facts: int):
    """Sentences and (question, answer) simulated on a small world."""
    loc = {p: rng.choice(PLACES) for p in PEOPLE}
    holder: dict[str, str | None] = {o: None for o in OBJECTS}
    obj_trail: dict[str, list[str]] = {o: [] for o in OBJECTS}
    facts = []

    def move(p, avoid=()):
        new = rng.choice([x for x in PLACES if x != loc[p] and x not in avoid])
        loc[p] = new
        facts.append(f"{p} {rng.choice(MOVES)} the {new}.")
        for o, h in holder.items():
            if h == p and (not obj_trail[o] or obj_trail[o][-1] != new):
                obj_trail[o].append(new)

    for p in PEOPLE:  # everyone starts somewhere
        facts.append(f"{p} {rng.choice(MOVES)} the {loc[p]}.")
    if task == "qa1":
        for _ in range(n_facts):
            move(rng.choice(PEOPLE))
        who = rng.choice(PEOPLE)
        return facts, f"Where is {who}?", loc[who]
    obj, carrier = rng.choice(OBJECTS), rng.choice(PEOPLE)
    for _ in range(n_facts // 2):
        move(rng.choice(PEOPLE))
    facts.append(f"{carrier} picked up the {obj}.")
    holder[obj] = carrier
    obj_trail[obj] = [loc[carrier]]
    if task == "qa2":
        for _ in range(n_facts - n_facts // 2):
            move(rng.choice(PEOPLE))
        move(carrier)  # the carrier moves at least once after picking it up
        return facts, f"Where is the {obj}?", loc[carrier]
    # qa3: the object visits at least two more places, then is dropped; ask where it was before the last place
    for _ in range(2):
        for _ in range(max(1, (n_facts - n_facts // 2) // 2)):
            other = rng.choice([p for p in PEOPLE if p != carrier])
            move(other)
        move(carrier, avoid=obj_trail[obj])  # never revisit: "before the X" stays unambiguous
    facts.append(f"{carrier} dropped the {obj}.")
    holder[obj] = None
    trail = obj_trail[obj]
    return facts, f"Where was the {obj} before the {trail[-1]}?", trail[-2]


@lru_cache(maxsize=1)
def background_texts() -> tuple[str, ...]:
    """The Shakespeare plays of the ``shakespeare`` package (the PG19 stand-in), read once."""
    from ..corpus import load_corpus

    return tuple(t for _, t in load_corpus("shakespeare"))


def make_babi(task: str, *, length: int, seed: int, tokenizer, n_facts: int = 6, texts: list[str] | None = None):
    """One instance of exactly ``length`` tokens: background text with the story's sentences spread through it in
    order (at random sentence boundaries), then ``question`` and ``" Answer:"``."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: must be one of {TASKS}")
    rng = random.Random(f"{task}-{seed}-{length}")
    facts, question, answer = _story(task, rng, n_facts)
    fact_toks = [tokenizer.encode(" " + f + " ") for f in facts]
    q_tok = tokenizer.encode(f"\n{question} Answer: ")
    budget = length - sum(len(f) for f in fact_toks) - len(q_tok)
    if budget < 0:
        raise ValueError(f"length={length}: too short for the story ({length - budget} tokens)")
    texts = texts if texts is not None else background_texts()
    hay = haystack_tokens(texts, rng.randrange(len(texts)), budget, tokenizer)
    period = tokenizer.encode(".")
    ends = [i + len(period) for i in range(len(hay) - len(period) + 1) if hay[i:i + len(period)] == period] or [budget]
    cuts = sorted(rng.choice(ends) for _ in facts)
    tokens, prev = [], 0
    for cut, ft in zip(cuts, fact_toks):
        tokens += hay[prev:cut] + ft
        prev = cut
    tokens += hay[prev:] + q_tok
    return BabiExample(tokens, answer, tokenizer.encode(answer), facts, question, task)
