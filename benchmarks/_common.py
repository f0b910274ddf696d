"""Helpers shared by the CPU benchmarks: peak-memory probes, one subprocess per measurement, markdown tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def rss_kib(field: str = "VmRSS") -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    """Reset the process's peak resident set (VmHWM) to its current size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_isolated(script: str, spec: dict) -> dict:
    """Run ``script --one SPEC`` in a fresh interpreter so that no earlier configuration's memory counts."""
    out = subprocess.run([sys.executable, script, "--one", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {**spec, "error": lines[-1] if lines else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_results(path: str, result: dict) -> None:
    """Write a benchmark's JSON (creating its folder; atomically, so an interrupted run keeps the last whole file)
    and say where."""
    from titans.atomic import write_json

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_json(path, result)
    print(f"\nwrote {path}")


def failure(exc: BaseException, width: int = 120) -> str:
    """One line naming an exception: its type and the first line of its message, cut to ``width`` characters."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:width]}"


def fmt(val) -> str:
    if isinstance(val, float):
        return f"{val:,.0f}" if abs(val) >= 100 else f"{val:.3g}"
    return str(val)


def table(rows, cols) -> str:
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(fmt(r.get(c, "")) for c in cols) for r in rows]
    return "\n".join(lines)
