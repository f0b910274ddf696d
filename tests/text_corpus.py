"""A small deterministic English-like corpus written to a folder, so that pipeline tests need no package data."""

from __future__ import annotations

import json
import os
import random

WORDS = ["the", "memory", "learns", "at", "test", "time", "while", "model", "reads", "a", "long", "stream", "of",
         "tokens", "and", "forgets", "what", "it", "no", "longer", "needs", "so", "that", "surprise", "drives", "is",
         "stored", "momentum", "carries", "across", "chunks"]


def write_corpus(folder: str, n_docs: int = 6, words_per_doc: int = 3000, seed: int = 0) -> str:
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n_docs):
        text = " ".join(rng.choice(WORDS) for _ in range(words_per_doc))
        if i % 2:
            with open(os.path.join(folder, f"doc{i}.jsonl"), "w") as f:
                for j in range(0, len(text), 2000):
                    f.write(json.dumps({"text": text[j:j + 2000]}) + "\n")
        else:
            with open(os.path.join(folder, f"doc{i}.txt"), "w") as f:
                f.write(text)
    return folder
