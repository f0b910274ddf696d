"""Markdown tables of saved ``gpu_memory_op.py`` runs (``--report``) and the analytic FLOP count they use."""

from __future__ import annotations

import json
import os

from titans.ops.memory.triton_seq import block_rows


def memory_dims(D, depth) -> list[int]:
    """The benchmark's memory: widths of its layers' inputs and output (expansion 4 at depth 2)."""
    return [D] + [4 * D] * (depth - 1) + [D]


def kernel_keys(D, depth, chunk):
    """The forward's and backward's configuration keys for a benchmark size (hidden width 4 D at depth 2)."""
    dims = (depth, block_rows(chunk), D, 4 * D if depth == 2 else D, D)
    return (False, *dims), (True, *dims)


def flops_per_token(D: int, depth: int, chunk: int, backward: bool) -> float:
    """Matmul FLOPs per token per head of the chunked form (forward; about 3x with the recomputing backward)."""
    dims = memory_dims(D, depth)
    f = 0.0
    for l in range(depth):
        din, dout = dims[l], dims[l + 1]
        # keys, X W and X S (3); the end-of-chunk weights and momentum: A^T (c * delta) and A^T (m * delta), n
        # rank-one terms per chunk each (2); the intra-chunk terms; delta back through the layer (after the first)
        f += 5 * din * dout + chunk * (din + dout) + (din * dout if l > 0 else 0)
    return 2 * f * (3 if backward else 1)


def _piece_backward(fwd: str) -> str:
    """The backward of a forward in pieces: ``chunk``'s, with what the configuration changes in it."""
    extra = [text for flag, text in ((",save", "the forward's intermediates kept"),
                                     (",wgrad", "weight_grads in triton_piece_bwd.py"),
                                     (",compiled", "compiled by torch.compile")) if flag in fwd]
    return "chunk's (piece.piece_backward" + "".join(f"; {t}" for t in extra) + ")"


def _num(row, key, scale=1e3, fmt="{:,.0f}"):
    v = row.get(key)
    if v is None:
        return "OOM" if "out of memory" in row.get(key.replace("tok_s", "error"), "") else "–"
    return fmt.format(v / scale)


def report(paths) -> str:
    """Markdown table of saved runs: thousands of tokens/s per implementation, forward and forward+backward, and
    ``triton``'s ratio to ``chunk`` (with, "in turn", the median ratio of the two timed in alternation) and to
    titans-pytorch (with the batch titans-pytorch fitted in)."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append((os.path.basename(path), json.load(f)))
    lines = []
    for name, r in runs:
        c = r["ceilings"]
        lines.append(f"`{name}`: {r['device']}, torch {r['torch']}, {r['heads']} heads, "
                     f"{r['tokens']:,} tokens per call; copy {c['copy_GBps']:,.0f} GB/s, bf16 matmul "
                     f"{c['bf16_matmul_TFLOPs']:,.0f} TFLOP/s" + (f"; {r['stopped']}" if r.get("stopped") else ""))
    lines += ["", "| D | depth | chunk | T | batch | max rel err | pass | chunk | triton | triton config | "
              "titans-pytorch (batch) | fla gdn | triton/chunk | triton/titans-pytorch |", "|" + "---|" * 14]
    fractions = []  # recomputed from the configuration, so a corrected FLOP count applies to saved runs too
    for _, r in runs:
        for row in r["rows"]:
            err = f"{row['max_rel_err']:.1e}" if "max_rel_err" in row else "–"
            for name in ("fwd", "fwd+bwd"):
                tok = row.get(f"triton {name} tok_s")
                if isinstance(tok, (int, float)):
                    flops = flops_per_token(row["D"], row["depth"], row["chunk"], name == "fwd+bwd") * r["heads"] * tok
                    fractions.append(flops / (r["ceilings"]["bf16_matmul_TFLOPs"] * 1e12))
                tp = _num(row, f"titans-pytorch {name} tok_s")
                if f"titans-pytorch {name} batch" in row and tp not in ("OOM", "–"):
                    tp += f" ({row[f'titans-pytorch {name} batch']}"
                    tp += f" x {row[f'titans-pytorch {name} T']})" if f"titans-pytorch {name} T" in row else ")"
                ratios = [f"{x:.2f}" if x else "–" for x in (row.get(f"triton/{b} {name}")
                                                              for b in ("chunk", "titans-pytorch"))]
                if paired := row.get(f"triton/chunk {name} paired ratio"):  # timed in alternation: no drift
                    ratios[0] += f" (in turn {paired:.2f})"
                cfg = row.get("triton config")  # absent in runs before the configurations were tunable
                cfg = "–" if cfg is None else cfg["fwd"] if name == "fwd" else f"{cfg['fwd']} / {cfg['bwd']}"
                if row.get("triton forward split"):  # and the one-program-per-head forward's figure
                    cfg += f" (split: {row['triton forward split']}; unsplit {_num(row, f'triton-seq {name} tok_s')})"
                if name == "fwd+bwd" and row.get("triton segments", 1) > 1:  # checkpointed: one extra forward
                    cfg += f" ({row['triton segments']} segments"
                    if row.get("triton checkpointed share", 1) < 1:  # a tail kept as it is (triton_op.piece_plan)
                        cfg += f", {row['triton checkpointed share']:.0%} of the tokens checkpointed"
                    if "triton-unsegmented fwd+bwd tok_s" in row:  # and the same call keeping every chunk's state
                        peak = row.get("triton-unsegmented fwd+bwd peak_MiB", 0) / 1024
                        cfg += f"; unsegmented {_num(row, 'triton-unsegmented fwd+bwd tok_s')} at {peak:.0f} GB"
                    elif "triton-unsegmented fwd+bwd error" in row:  # OOM, or – for another error (in the JSON)
                        cfg += f"; unsegmented {_num(row, 'triton-unsegmented fwd+bwd tok_s')}"
                    cfg += ")"
                if row.get("triton fallback"):
                    cfg = "falls back to chunk"
                lines.append(
                    f"| {row['D']} | {row['depth']} | {row['chunk']} | {row['T']} | {row['B']} | {err} | {name} | "
                    f"{_num(row, f'chunk {name} tok_s')} | {_num(row, f'triton {name} tok_s')} | {cfg} | {tp} | "
                    f"{_num(row, f'fla-gdn {name} tok_s') if row['depth'] == 1 else ''} | "
                    + " | ".join(ratios) + " |")
    if fractions:
        lines += ["", f"triton's matmul FLOPs per second over the bf16 matmul ceiling: {100 * min(fractions):.2f}%"
                      f"-{100 * max(fractions):.2f}% (forward; forward+backward counted as 3x the forward)"]
    return "\n".join(lines + candidates_table(runs))


def candidates_table(runs) -> list[str]:
    """The ``--tune`` candidates of saved runs: thousands of tokens/s per launch configuration, with the registers
    and spilled 32-bit values per thread that Triton reported for each kernel (and "ran ieee" where `launch` ran a
    tf32x3 configuration ieee, :func:`titans.ops.memory.triton_config.narrow_tf32`, "loops ran ieee" where it ran a
    kernel in passes' loops ieee, ``phased_loops_ieee``, and "PTX unread" where the first check found no PTX to
    read)."""
    lines = ["", "| D | depth | chunk | T | candidate | forward config (regs / spills) | backward config (regs / "
             "spills) | max rel err | fwd | fwd+bwd |", "|" + "---|" * 10]
    for _, r in runs:
        # "ran ieee": launch found 8-wide TF32 tensor-core products in its PTX (triton_config.narrow_tf32); "loops
        # ran ieee": a kernel in passes (triton_config.phased_loops_ieee)
        regs = {}
        for k in r.get("kernels", []):
            ieee = "; ran ieee" if k.get("narrow tf32") else "; loops ran ieee" if k.get("phased loops ieee") else ""
            text = f"{k['regs']} / {k['spills']}{ieee}" + ("; PTX unread" if k.get("ptx read") is False else "")
            slot = (tuple(k["key"]), k["config"])
            if k.get("part"):  # triton_piece.py's launches, one record each: "part regs / spills, ..."
                text = ", ".join(filter(None, [regs.get(slot), f"{k['part']} {text}"]))
            regs[slot] = text
        for row in r["rows"]:
            kf, kb = kernel_keys(row["D"], row["depth"], row["chunk"])
            for name, c in row.get("candidates", {}).items():
                err = f"{c['max_rel_err']:.1e}" if "max_rel_err" in c else c.get("error", "–")[:60]
                bwd = (_piece_backward(c["fwd"]) if ",piece" in c["fwd"]  # KernelConfig.piece: a whole path
                       else f"{c['bwd']} ({regs.get((kb, c['bwd']), '?')})")
                lines.append(f"| {row['D']} | {row['depth']} | {row['chunk']} | {row['T']} | {name} | "
                             f"{c['fwd']} ({regs.get((kf, c['fwd']), '?')}) | {bwd} | {err} | "
                             f"{_num(c, 'fwd tok_s')} | {_num(c, 'fwd+bwd tok_s')} |")
    return lines if len(lines) > 3 else []


