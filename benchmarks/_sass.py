"""Reading a compiled kernel's machine code (SASS, from ``nvdisasm`` as bundled with Triton) for
``triton_resources.py``: its instructions, where they come from in the source, its innermost loops, and from those
what one chunk runs (spill instructions, instructions by class).

The tile loops are a kernel's innermost loops and run ``trips`` times per chunk (hidden width / tile width), the
rest once (the chunk loop is the outer one; what runs once per program is counted as once per chunk, a small
overcount). The counts are per thread (a warp issues each instruction once), and static: branches not taken and
predicated-off instructions count as run.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass

# Instruction classes (by opcode, the part before the first '.'), in the order they are tested.
CLASSES = [
    ("spill", r"(STL|LDL)$"),
    ("tensor core", r"(HGMMA|HMMA|WARPGROUP)$"),
    ("float", r"(FFMA|FMUL|FADD|FMNMX|FSEL|FSETP|FCHK)$"),
    ("special", r"MUFU$"),
    ("shared memory", r"(LDS|STS|LDSM|STSM)$"),
    ("global memory", r"(LDG|STG|LDGSTS|RED|ATOM|ATOMG)$"),
    ("sync", r"(BAR|WARPSYNC|DEPBAR|MEMBAR|FENCE|SYNCS|ERRBAR|CCTL)$"),
    ("shuffle", r"SHFL$"),
]


@dataclass
class Sass:
    """A kernel's instructions ``(address, text, (file, line) or None)`` without predicates, and its innermost
    loops ``(first address, last address)``."""
    code: list
    inner: list

    def trips_of(self, addr: int, trips: int) -> int:
        """How often the instruction at ``addr`` runs per chunk."""
        return trips if any(lo <= addr <= hi for lo, hi in self.inner) else 1


def disassemble(cubin: bytes) -> Sass:
    """:class:`Sass` of a cubin, with source lines (``nvdisasm -g``)."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    sass = subprocess.run([tool, "-c", "-g", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    return parse(sass)


def parse(sass: str) -> Sass:
    """:class:`Sass` of ``nvdisasm -c -g`` output."""
    code, labels, pending, src = [], {}, [], None
    for line in sass.splitlines():
        if m := re.search(r'//## File "([^"]+)", line (\d+)', line):
            src = (os.path.basename(m.group(1)), int(m.group(2)))
        if m := re.match(r"\s*\.L_x_(\d+):", line):
            pending.append(m.group(1))
        elif m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line):
            addr = int(m.group(1), 16)
            labels.update({p: addr for p in pending})
            pending = []
            code.append((addr, re.sub(r"^@!?U?P\w+\s+", "", m.group(2)), src))
    loops = [(labels[m.group(1)], addr) for addr, text, _ in code
             if (m := re.search(r"BRA.*\.L_x_(\d+)", text)) and labels.get(m.group(1), addr) < addr]
    inner = sorted(a for a in loops if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in loops))
    return Sass(code, inner)


def opcode(text: str) -> str:
    """An instruction's opcode without its modifiers: ``'HGMMA'`` of ``'HGMMA.64x16x8.F32.TF32 R32, ...'``."""
    return text.split()[0].split(".")[0]


def instruction_class(text: str) -> str:
    """The class (:data:`CLASSES`) of an instruction, ``other`` (integer, moves, branches, ...) if none."""
    op = opcode(text)
    return next((name for name, pattern in CLASSES if re.match(pattern, op)), "other")


def loop_spills(s: Sass, trips: int) -> dict:
    """Spill instructions (``STL``/``LDL``) in the code and those a chunk runs. ``spills_by_loop``: each innermost
    loop that spills, as the source lines its instructions come from (the kernel's own file and the first and last
    line there) and its spills per trip, then those outside the innermost loops (``'outside': n``), so that a change
    can be aimed at the loop that spills."""
    spills = [addr for addr, text, _ in s.code if instruction_class(text) == "spill"]
    by_loop, in_inner = [], 0
    for lo, hi in s.inner:
        n = sum(1 for addr in spills if lo <= addr <= hi)
        in_inner += n
        if n:
            # named by the kernel file most of its lines come from (not Triton's library, nor the shared blocks)
            own = [w for addr, _, w in s.code if lo <= addr <= hi and w and w[0].startswith("triton_")]
            own = [w for w in own if w[0] != "triton_blocks.py"] or own
            f = max({w[0] for w in own}, key=[w[0] for w in own].count) if own else "?"
            lines = [x for g, x in own if g == f]
            by_loop.append(f"{f}:{min(lines)}-{max(lines)}: {n}" if lines else f"?: {n}")
    by_loop.append(f"outside: {len(spills) - in_inner}")
    return {"spill_instructions": len(spills), "spills_per_chunk": len(spills) - in_inner + trips * in_inner,
            "spills_by_loop": "; ".join(by_loop)}


def instruction_mix(s: Sass, trips: int, top: int = 8) -> dict:
    """Instructions a chunk runs: in all (``instructions_per_chunk``), by class (``mix``: class -> count), by opcode
    (``ops``: its name before the first '.', e.g. ``LOP3``, ``HGMMA``, ``MEMBAR``), and the ``top`` source lines they
    come from (``top_lines``: ``'file:line share'``, where inlined helpers count at their
    own lines: a product's instructions at the ``tl.dot`` of ``triton_blocks._mm``)."""
    by_class, by_op, by_line = Counter(), Counter(), Counter()
    for addr, text, src in s.code:
        n = s.trips_of(addr, trips)
        by_class[instruction_class(text)] += n
        by_op[opcode(text)] += n
        by_line[f"{src[0]}:{src[1]}" if src else "?"] += n
    total = sum(by_class.values())
    return {"instructions_per_chunk": total, "mix": dict(by_class.most_common()), "ops": dict(by_op.most_common()),
            "top_lines": "; ".join(f"{where} {n / total:.0%}" for where, n in by_line.most_common(top))}
