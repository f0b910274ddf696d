"""Data that installs offline: tokenizers, packaged corpora, prepared token files, batches."""

from .corpus import CORPORA, load_corpus
from .loader import eval_windows, train_batch
from .prepare import PreparedData, default_data_dir, prepare
from .tokenizer import ByteTokenizer, GPT2Tokenizer, get_tokenizer

__all__ = ["CORPORA", "load_corpus", "eval_windows", "train_batch", "PreparedData", "default_data_dir", "prepare",
           "ByteTokenizer", "GPT2Tokenizer", "get_tokenizer"]
