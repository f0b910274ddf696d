"""``titans data prepare``: tokenize a corpus once into memory-mapped token files with fixed splits and a checksum.

Layout of a prepared dataset (``<data_dir>/<corpus-key>-<tokenizer>/``)::

    train.bin  val.bin  test.bin     token ids, little-endian uint8 / uint16 / uint32 (by vocabulary size)
    meta.json                         tokenizer, vocab size, dtype, token and byte counts per split, sha256

The documents are concatenated in order (separated by a blank line) and the token stream is cut into three
contiguous, non-overlapping spans: train first, then validation, then test. Preparation is deterministic: the same
corpus and tokenizer give the same files and checksum. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..atomic import write_bytes, write_json
from .corpus import CORPORA, load_corpus
from .tokenizer import get_tokenizer

SPLITS = ("train", "val", "test")


def default_data_dir() -> str:
    return os.environ.get("TITANS_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "titans", "data")


def _dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


def _key(corpus: str) -> str:
    if corpus in CORPORA:
        return corpus
    # a folder: its name plus a short hash of its absolute path, so that two folders never share a cache
    path = os.path.abspath(corpus)
    return f"{os.path.basename(path.rstrip(os.sep)) or 'corpus'}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


@dataclass
class PreparedData:
    path: str
    meta: dict

    def split(self, name: str) -> np.ndarray:
        """The token ids of a split as a read-only memory map."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r}: must be one of {SPLITS}")
        return np.memmap(os.path.join(self.path, f"{name}.bin"), dtype=np.dtype(self.meta["dtype"]), mode="r")


def prepare(corpus: str = "shakespeare", tokenizer: str = "byte", data_dir: str | None = None,
            val_fraction: float = 0.05, test_fraction: float = 0.05, force: bool = False) -> PreparedData:
    """Prepare (or reuse) the token files of ``corpus`` with ``tokenizer``; returns where they are and their meta."""
    root = os.path.join(data_dir or default_data_dir(), f"{_key(corpus)}-{tokenizer}")
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path) and not force:
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("val_fraction") == val_fraction and meta.get("test_fraction") == test_fraction:
            return PreparedData(root, meta)
    tok = get_tokenizer(tokenizer)
    docs = load_corpus(corpus)
    text = "\n\n".join(t.strip("\n") for _, t in docs) + "\n"
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    dtype = _dtype(tok.vocab_size)
    n = len(ids)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(f"corpus={corpus!r}: {n} tokens are too few for train/val/test splits")
    spans = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    os.makedirs(root, exist_ok=True)
    sha = hashlib.sha256()
    for name in SPLITS:
        data = spans[name].astype(dtype).tobytes()
        sha.update(data)
        write_bytes(os.path.join(root, f"{name}.bin"), data)
    n_bytes = len(text.encode("utf-8"))
    meta = {"corpus": corpus, "tokenizer": tokenizer, "vocab_size": tok.vocab_size, "dtype": np.dtype(dtype).name,
            "documents": len(docs), "tokens": {k: int(len(v)) for k, v in spans.items()},
            "bytes_per_token": n_bytes / n, "val_fraction": val_fraction, "test_fraction": test_fraction,
            "sha256": sha.hexdigest()}
    write_json(meta_path, meta)
    return PreparedData(root, meta)
