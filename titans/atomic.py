"""Files written whole or not at all: each writer fills a sibling temporary file, flushes it to disk and renames it
over the target (``os.replace``, atomic within one filesystem). A run killed mid-write leaves the previous file, or
none, never half of one, so resumable commands can trust every result file they find.

The temporary name carries the process id, so two processes rebuilding the same summary (studies run as disjoint
``--tasks`` into one ``--out``) each rename their own file. Checkpoints, which are folders, have their own
write-then-rename in ``titans.train.checkpoint``.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):  # a failed write (disk full, an interrupt) leaves no stray temporary file
            os.remove(tmp)
        raise
    return path


def write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, indent: int | None = 1) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (``indent=None``: one line); returns ``path``."""
    return write_text(path, json.dumps(obj, indent=indent))
