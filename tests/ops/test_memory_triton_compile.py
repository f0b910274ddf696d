"""The Triton kernels compile for an H100 (sm_90) on a machine without CUDA (``titans.ops.memory.triton_compile``):
the interpreter tests run the kernels as Python, which accepts code the compiler rejects (a host function called
from a kernel passed them once and failed to compile). A few small shapes and the configurations' code paths: plain,
q and k per tile, the tile loops in passes, pass P, tf32x3 products (the phased backward's transposed tiles), and the
piece kernels (``triton_piece.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

CASES = [  # (backward, (L, BN, DK, DH, DV), config)
    (False, (2, 16, 32, 64, 32), "16,8,1,ieee"),
    (False, (2, 16, 32, 64, 32), "16,8,1,ieee,reload"),
    (False, (2, 32, 32, 64, 32), "32,8,1,tf32x3,phased"),  # 32 rows: the kernels in passes' row slices
    (False, (1, 16, 32, 32, 32), "16,8,1,ieee"),
    (True, (2, 16, 32, 64, 32), "16,8,1,ieee,pre-tf32x3"),
    (True, (2, 32, 32, 64, 32), "16,8,1,ieee,phased"),
    (True, (2, 32, 32, 64, 32), "32,8,1,tf32x3,maxreg,phased,pre-tf32x3"),
    (True, (2, 16, 128, 128, 128), "32,8,1,tf32x3,maxreg,phased"),  # head dim 128: pass 3 in column halves
    (True, (1, 16, 32, 32, 32), "16,8,1,ieee,pre"),
    # triton_piece.py's four launches (tf32x3, 32-row pieces), and as the backward's recomputation runs them
    *(("piece-" + part, (2, 32, 32, 64, 32), "32,4,1,tf32x3,piece") for part in ("keys", "errors", "tiles", "output")),
    *((f"piece-{part}+keep", (2, 32, 32, 64, 32), "32,4,1,tf32x3,piece") for part in ("errors", "tiles", "output")),
    ("piece-tiles+save", (2, 32, 32, 64, 32), "32,4,1,tf32x3,piece,save"),
    *((f"piece-wgrad{layer}", (2, 32, 32, 64, 32), "32,4,1,tf32x3,piece,wgrad") for layer in (0, 1)),
    *((f"piece-{part}", (2, 32, 32, 64, 32), "32,4,1,tf32x3,piece,v2") for part in ("zk", "errors", "output", "norm")),
]

SCRIPT = """
import json, sys
from titans.ops.memory.triton_compile import compile_kernel, compile_offline, piece_kernel
from titans.ops.memory.triton_config import KernelConfig
out = []
for backward, shape, text in json.loads(sys.argv[1]):
    try:
        cfg = KernelConfig.parse(text)
        if isinstance(backward, str):  # one of triton_piece.py's launches ("+keep": the recomputation's)
            part, _, keep = backward.removeprefix("piece-").partition("+")
            fn, consts = piece_kernel(part, tuple(shape), cfg, keep=keep in ("keep", "save"), state=keep != "keep")
            k = compile_offline(fn, consts, cfg.warps, cfg.stages)
        else:
            k = compile_kernel(backward, tuple(shape), cfg)
        out.append([backward, shape, text, None, len(k.asm["cubin"])])
    except Exception as exc:
        out.append([backward, shape, text, f"{type(exc).__name__}: {str(exc)[:300]}", 0])
print(json.dumps(out))
"""


def test_the_kernels_compile_for_sm90():
    try:  # the CUDA backend and its ptxas come with the Linux wheels; elsewhere there is nothing to check
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("Triton without its CUDA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # interpreted kernels do not compile
    # the tf32x3 loops of the kernels in passes as configured (launch runs them ieee on a device unless this is set)
    env["TITANS_TRITON_PHASED_TF32X3"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    failed = [(b, s, t, err) for b, s, t, err, _ in results if err]
    assert not failed, failed
    assert all(size > 0 for *_, size in results)
