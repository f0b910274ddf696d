"""What the Triton kernels of ``impl="triton"`` cost on chip, without a GPU: compile them for an H100 (sm_90) with
the installed Triton and its bundled ptxas, and print shared memory, registers and spills per configuration.

    python benchmarks/triton_resources.py                       # the paper's sizes, each tile width tried
    python benchmarks/triton_resources.py --configs 2,16,64,256,64 --widths 64,32
    python benchmarks/triton_resources.py --registers --jobs 2  # registers and spills with and without the cap
    python benchmarks/triton_resources.py --candidates 64,2,64 --names default,w8  # the GPU tuning candidates
    python benchmarks/triton_resources.py --layouts              # products by outputs per thread
    python benchmarks/triton_resources.py --wgmma --jobs 2       # the tf32x3 kernels the H100 runs ran, or crashed on

This is how ``triton_config.tile_width`` was chosen (an H100 allows 227 KB of shared memory per program). Figures
depend on the Triton version: the lent GPUs have had Triton 3.6, and compiled with it (a second install put first on
the path: ``pip install --target /tmp/triton36 triton==3.6.0``, then ``PYTHONPATH=/tmp/triton36 python ...``) the
kernels get the shared memory and registers those runs recorded (their JSON has the device's own), while this
machine's Triton 3.8 chooses differently; ``triton_config.launch`` halves a tile the device refuses. Each kernel
compiles with its default warps, stages and precision (``triton_config.default_config``). Writes
``benchmarks/results/triton_resources.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import failure, table, write_results  # noqa: E402
from _sass import disassemble, instruction_mix, loop_spills  # noqa: E402

H100_SHARED = 227 * 1024


def compile_report(fn, consts: dict, warps: int, stages: int, maxnreg: int | None = None, ttgir: bool = False,
                   trips: int = 1) -> dict:
    """Compile ``fn`` for sm_90 (``titans.ops.memory.triton_compile``) and read its resources (ptxas -v on the PTX
    for registers and spills; from its machine code, with ``trips`` iterations of each innermost loop, the spill
    instructions a chunk runs, ``_sass.loop_spills``, and all it runs by class and source line,
    ``_sass.instruction_mix``); ``ttgir``: also return Triton's GPU IR (where it laid out each
    product, :func:`dot_layouts`)."""
    import triton

    from titans.ops.memory import triton_config
    from titans.ops.memory.triton_compile import compile_offline

    try:
        k = compile_offline(fn, consts, warps, stages, maxnreg)
    except Exception as exc:  # a configuration the compiler rejects
        return {"error": failure(exc)}
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(k.asm["ptx"])
    out = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True)
    os.unlink(f.name)
    sass = disassemble(k.asm["cubin"])
    info = " ".join(line.split("info    :")[-1].strip() for line in out.stderr.splitlines()
                    if "registers" in line or "spill" in line)
    regs = re.search(r"Used (\d+) registers", info)
    spills = re.search(r"(\d+) bytes spill stores", info)
    return {"shared_KiB": k.metadata.shared / 1024, "fits_H100": k.metadata.shared <= H100_SHARED, "ptxas": info,
            "programs_per_SM": programs_per_sm(int(regs.group(1)) if regs else None, warps, k.metadata.shared),
            "registers": int(regs.group(1)) if regs else None, "spill_store_bytes": int(spills.group(1)) if spills
            else None, "tf32_wgmma": tf32_wgmma(k.asm["ptx"]),
            # ptxas's performance warning C7512: too few registers to keep the tensor-core products' accumulators
            # live while they run, so it waits for each product (wgmma) before issuing anything else
            "wgmma_serialized": "C7512" in out.stderr,
            "narrow_tf32": triton_config.narrow_tf32(k.asm["ptx"]), **loop_spills(sass, trips),
            **instruction_mix(sass, trips), **({"ttgir": k.asm["ttgir"]} if ttgir else {})}


def programs_per_sm(registers: int | None, warps: int, shared_bytes: float) -> int | None:
    """Programs of a kernel an H100 SM holds at once: its 64K registers (allocated per warp in units of 256, so a
    thread's count rounds up to a multiple of 8), 228 KB of shared memory (1 KB of it reserved per program) and
    2,048 threads."""
    if registers is None:
        return None
    regs = -(-registers // 8) * 8
    return min(65536 // (regs * 32 * warps), (228 * 1024) // (int(shared_bytes) + 1024), 2048 // (32 * warps))


def tf32_wgmma(ptx: str) -> str:
    """The TF32 warp-group products (Hopper's ``wgmma``) in a kernel's PTX, counted by instruction width N, e.g.
    ``'n8:1152 n32:410'`` ('' where there are none)."""
    from titans.ops.memory import triton_config

    widths = triton_config.TF32_WGMMA.findall(ptx)
    return " ".join(f"n{n}:{widths.count(n)}" for n in sorted(set(widths), key=int))


def dot_layouts(ir: str) -> list[dict]:
    """The float32 products (``tt.dot``) of a kernel's GPU IR, grouped by shape and result layout: how many, and the
    block of outputs each thread computes (``sizePerThread``). A product on the CUDA cores (``ieee``) reads, per step
    along K, a column of A and a row of B for its block from shared memory: ``a * b`` multiply-adds for ``a + b``
    loads, the arithmetic per shared-memory load (tensor-core products, ``tf32x3``, have other layouts: ``mma``)."""
    per_thread = {m.group(1): [int(x) for x in m.group(2).split(",")]
                  for m in re.finditer(r"^#(\w+) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\]", ir, re.M)}
    pat = (r"tt\.dot [^:]*: tensor<(\d+)x(\d+)xf32, [^*]*\* tensor<\d+x(\d+)xf32, [^>]*>> -> "
           r"tensor<\d+x\d+xf32, #(\w+)>")
    groups: dict[tuple, int] = {}
    for m in re.finditer(pat, ir):
        M, K, N, layout = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        key = (M, K, N, layout)
        groups[key] = groups.get(key, 0) + 1
    rows = []
    for (M, K, N, layout), n in sorted(groups.items(), key=lambda x: -x[1]):
        a, b = per_thread.get(layout, [0, 0])
        rows.append({"product": f"[{M},{K}]x[{K},{N}]", "count": n, "layout": layout,
                     "outputs per thread": f"{a}x{b}" if a else "mma",
                     "FMA per shared load": round(a * b / (a + b), 2) if a else None})
    wgmma = len(re.findall(r"= ttng\.warp_group_dot ", ir))  # Hopper's asynchronous tensor-core products
    if wgmma:
        rows.append({"product": "warp-group (wgmma)", "count": wgmma, "layout": "mma",
                     "outputs per thread": "mma", "FMA per shared load": None})
    return rows


def compile_kernel(backward: bool, shape, cfg, th: int | None = None, precision: str | None = None,
                   cap: int | None = None, ttgir: bool = False) -> dict:
    """:func:`compile_report` for the forward or backward kernel of ``shape = (L, BN, DK, DH, DV)`` under launch
    configuration ``cfg``: tile ``th`` (default the configuration's, at most the streamed width) and ``precision``
    (default as ``triton_config.launch`` passes it: ieee below ``TF32X3_MIN_TILE``); ``cap``: ``maxnreg``. The
    forward as training runs it (saving what the backward needs)."""
    from titans.ops.memory.triton_compile import kernel_constants, kernel_fn

    consts = kernel_constants(backward, shape, cfg, th, precision)
    L, DK, DH = shape[0], shape[2], shape[3]
    return compile_report(kernel_fn(backward), consts, cfg.warps, cfg.stages, cap, ttgir,
                          trips=(DH if L == 2 else DK) // consts["TH"])


def _register_row(job) -> dict:
    """One kernel of one shape at its default configuration, compiled as it is and with the register cap."""
    from titans.ops.memory import triton_config

    kind, shape = job
    cfg = triton_config.default_config(kind == "bwd", *shape)
    row = {"kernel": kind, **dict(zip(("L", "BN", "DK", "DH", "DV"), shape)), "config": str(cfg)}
    for name, cap in (("as is", None), ("maxreg", triton_config.max_registers(cfg.warps))):
        r = compile_kernel(kind == "bwd", shape, cfg, cap=cap)
        row[f"{name} shared KiB"] = round(r["shared_KiB"]) if "shared_KiB" in r else None
        row[f"{name} registers"] = r.get("registers")
        row[f"{name} spill stores"] = r.get("spill_store_bytes", r.get("error"))
    return row


def compile_configured(backward: bool, shape, cfg, ttgir: bool = False) -> dict:
    """:func:`compile_kernel` as ``cfg`` launches: with the register cap where it has ``maxreg``."""
    from titans.ops.memory import triton_config

    cap = triton_config.max_registers(cfg.warps, cfg.programs) if cfg.maxreg else None
    return compile_kernel(backward, shape, cfg, cap=cap, ttgir=ttgir)


def _candidate_row(job) -> dict:
    """One kernel of one GPU-benchmark size under one tuning candidate (``_gpu_candidates.candidates``)."""

    size, name, key, cfg = job
    r = compile_configured(key[0], key[1:], cfg)
    return {"D,depth,chunk": ",".join(map(str, size)), "candidate": name, "kernel": "bwd" if key[0] else "fwd",
            "config": str(cfg), "shared KiB": round(r["shared_KiB"]) if "shared_KiB" in r else None,
            "fits H100": r.get("fits_H100"), "registers": r.get("registers"),
            "spill stores": r.get("spill_store_bytes", r.get("error")),
            "programs per SM": r.get("programs_per_SM"), "spills run per chunk": r.get("spills_per_chunk"),
            "instructions per chunk": r.get("instructions_per_chunk"), "tf32 wgmma": r.get("tf32_wgmma"),
            "wgmma serialized": r.get("wgmma_serialized"),
            "spills by loop": r.get("spills_by_loop"), "mix": r.get("mix"), "ops": r.get("ops"),
            "top lines": r.get("top_lines")}


def _kernel_row(job) -> dict:
    """One kernel of one shape under one configuration (``--kernels``)."""
    from titans.ops.memory import triton_config

    kind, shape, text = job
    cfg = triton_config.KernelConfig.parse(text)
    if kind.startswith("piece-"):  # one of triton_piece.py's launches: its loops (errors, output) over the tiles,
        # the tiles kernel's over slices of the head dims
        from titans.ops.memory.triton_compile import piece_kernel
        from titans.ops.memory.triton_piece import slice_width

        # "+keep": as the backward recomputes, "+save": as a forward that keeps its intermediates (KernelConfig.save)
        part, _, keep = kind.removeprefix("piece-").partition("+")
        fn, consts = piece_kernel(part, shape, cfg, keep=keep in ("keep", "save"), state=keep != "keep")
        cap = triton_config.max_registers(cfg.warps, cfg.programs) if cfg.maxreg else None
        trips = (shape[2] // slice_width(consts["TH"], shape[2], shape[4]) if part == "tiles"
                 else consts["DO"] // min(consts["TH"], consts["DO"]) if part.startswith("wgrad")
                 else shape[3] // consts["TH"])
        r = compile_report(fn, consts, cfg.warps, cfg.stages, cap, trips=trips)
    else:
        r = compile_configured(kind == "bwd", shape, cfg)
    return {"kernel": kind, **dict(zip(("L", "BN", "DK", "DH", "DV"), shape)), "config": text,
            "shared KiB": round(r["shared_KiB"]) if "shared_KiB" in r else None, "registers": r.get("registers"),
            "programs per SM": r.get("programs_per_SM"),
            "spills run per chunk": r.get("spills_per_chunk", r.get("error")),
            "instructions per chunk": r.get("instructions_per_chunk"), "tf32 wgmma": r.get("tf32_wgmma"),
            "wgmma serialized": r.get("wgmma_serialized"), "mix": r.get("mix"), "ops": r.get("ops"),
            "top lines": r.get("top_lines")}


def _run(worker, work, jobs: int, out: str) -> None:
    """``worker`` over ``work`` in ``jobs`` processes; print each row, then a table, and write the rows to ``out``."""
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        for row in pool.map(worker, work):
            rows.append(row)
            print(row, flush=True)
    # the long ones are in the JSON and the rows above
    print(table(rows, [c for c in rows[0] if c not in ("spills by loop", "mix", "ops", "top lines")]))
    write_results(out, {"triton": __import__("triton").__version__, "rows": rows})


def candidates(sizes: str, names: str, out: str, jobs: int = 1) -> None:
    """The GPU benchmark's tuning candidates whose names start with one of ``names`` (comma-separated; all if empty)
    at each ``D,depth,chunk`` size, each kernel compiled once (a kernel configuration shared by two candidates is
    listed under the first): what to leave out of a lease before it spends device time on it."""
    import _gpu_candidates
    from _gpu_report import kernel_keys

    prefixes = [x for x in names.split(",") if x]
    _gpu_candidates.ONLY[:] = prefixes  # as --candidates does: 'default' by that name even where another equals it
    work, seen = [], set()
    for spec in sizes.split(";"):
        size = tuple(int(x) for x in spec.split(","))
        for name, cfgs in _gpu_candidates.candidates(*size).items():  # filtered by ONLY
            for key, cfg in zip(kernel_keys(*size), cfgs):
                if (key, cfg) not in seen:
                    seen.add((key, cfg))
                    work.append((size, name, key, cfg))
    _run(_candidate_row, work, jobs, out)


def _layout_rows(job) -> list[dict]:
    from _gpu_candidates import with_pre

    from titans.ops.memory import triton_config

    kind, shape = job
    backward = kind != "fwd"
    cfg = triton_config.default_config(backward, *shape)
    if kind.startswith("bwd-pre"):  # the GPU benchmark's "pre" and "tf32x3-pre" candidates
        cfg = with_pre(cfg, kind.removeprefix("bwd-pre-") if kind != "bwd-pre" else "ieee")
    if kind == "bwd-tf32x3":  # and its "tf32x3-bwd"
        cfg = triton_config.KernelConfig.parse(triton_config.TENSOR_CORE_BACKWARD)
    r = compile_configured(backward, shape, cfg, ttgir=True)
    head = {"kernel": kind, **dict(zip(("L", "BN", "DK", "DH", "DV"), shape)), "config": str(cfg)}
    return [{**head, **row} for row in dot_layouts(r.get("ttgir", ""))] or [{**head, "error": r.get("error")}]


def layouts(configs: str, out: str, jobs: int = 1) -> None:
    """Each kernel shape at its default configuration (and the backward with its pre-pass, ``bwd-pre``, with that
    pass's products on the tensor cores, ``bwd-pre-tf32x3``, and with all of them, ``bwd-tf32x3``):
    its products grouped by shape and by how many outputs each thread computes, hence multiply-adds per
    shared-memory load on the CUDA cores (:func:`dot_layouts`)."""
    from concurrent.futures import ProcessPoolExecutor

    shapes = [tuple(int(x) for x in spec.split(",")) for spec in configs.split(";")]
    rows = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        jobs = [(kind, shape) for shape in shapes for kind in ("fwd", "bwd", "bwd-pre", "bwd-pre-tf32x3", "bwd-tf32x3")]
        for part in pool.map(_layout_rows, jobs):
            rows += part
    print(table(rows, [c for c in rows[0] if c != "spills by loop"]))  # that one is in the JSON and the rows above
    write_results(out, {"triton": __import__("triton").__version__, "rows": rows})


# Every tf32x3 kernel the lent H100 has launched (Triton 3.6; benchmarks/results/gpu_logs/runN_bench.log), as
# (outcome, run, backward, (L, BN, DK, DH, DV), config): "crashed" ended the run in an illegal memory access, "ran"
# finished and agreed with chunk. The kernels have been rewritten since; their products' shapes have not.
TF32X3_HISTORY = [
    ("crashed", 3, True, (2, 64, 64, 256, 64), "16,8,1,tf32x3"),
    ("crashed", 6, False, (2, 64, 128, 512, 128), "16,8,1,tf32x3"),
    ("ran", 3, False, (2, 16, 64, 256, 64), "64,4,1,tf32x3"),
    ("ran", 3, True, (2, 16, 64, 256, 64), "32,4,1,tf32x3"),
    ("ran", 3, False, (2, 64, 64, 256, 64), "32,8,1,tf32x3"),
    ("ran", 3, False, (1, 16, 64, 64, 64), "64,4,1,tf32x3"),
    ("ran", 3, False, (1, 64, 64, 64, 64), "32,8,1,tf32x3"),
    ("ran", 3, False, (2, 16, 128, 512, 128), "32,4,1,tf32x3"),
    ("ran", 5, False, (1, 16, 128, 128, 128), "32,4,1,tf32x3"),
    ("ran", 5, False, (1, 64, 128, 128, 128), "16,8,1,tf32x3"),
]


def _wgmma_row(job) -> dict:
    from titans.ops.memory import triton_config

    outcome, run, backward, shape, text = job
    cfg = triton_config.KernelConfig.parse(text)
    # As those runs launched them: tf32x3 in every tile width (TF32X3_MIN_TILE came after run 6).
    r = compile_kernel(backward, shape, cfg, precision="tf32x3")
    return {"outcome": outcome, "run": run, "kernel": "bwd" if backward else "fwd",
            **dict(zip(("L", "BN", "DK", "DH", "DV"), shape)), "config": text, "tf32 wgmma": r.get("tf32_wgmma"),
            "8 wide": r.get("narrow_tf32"), "error": r.get("error")}


def wgmma(out: str, jobs: int = 1) -> None:
    """The TF32 warp-group products, by width, of the tf32x3 kernels the H100 runs crashed on or ran
    (:data:`TF32X3_HISTORY`): what ``triton_config.narrow_tf32`` keys on."""
    _run(_wgmma_row, TF32X3_HISTORY, jobs, out)


def registers(configs: str, out: str, jobs: int = 1) -> None:
    """Each kernel shape at its default configuration, compiled as it is and with ``maxnreg`` (the register cap of
    ``triton_config.KernelConfig.maxreg``): registers per thread and bytes of spill stores. ``jobs``: compiles run in
    that many processes (each takes a minute or more on one core)."""
    shapes = [tuple(int(x) for x in spec.split(",")) for spec in configs.split(";")]
    _run(_register_row, [(kind, shape) for shape in shapes for kind in ("fwd", "bwd")], jobs, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="2,16,64,256,64;2,64,64,256,64;1,16,64,64,64;1,64,128,128,128;"
                    "2,16,128,512,128", help="'L,BN,DK,DH,DV;...' (memory depth, chunk rows, dims)")
    ap.add_argument("--widths", default="64,32,16", help="tile widths to try, widest first")
    ap.add_argument("--out", default=None, help="default benchmarks/results/triton_resources.json (with --registers: "
                    "triton_registers.json, with --candidates: triton_candidates.json, with --layouts: "
                    "triton_layouts.json, with --wgmma: triton_wgmma.json)")
    ap.add_argument("--registers", action="store_true", help="instead: each shape's default configuration compiled "
                    "as it is and with the register cap (KernelConfig.maxreg)")
    ap.add_argument("--candidates", default=None, metavar="SIZES", help="instead: the GPU benchmark's tuning "
                    "candidates at these 'D,depth,chunk;...' sizes, each kernel compiled with its configuration")
    ap.add_argument("--layouts", action="store_true", help="instead: each shape's products at its default "
                    "configuration, by outputs per thread (multiply-adds per shared-memory load)")
    ap.add_argument("--wgmma", action="store_true", help="instead: the TF32 tensor-core products, by width, of the "
                    "tf32x3 kernels the H100 runs crashed on or ran")
    ap.add_argument("--kernels", default=None, metavar="KERNELS", help="instead: these kernels, "
                    "'fwd|bwd|piece-PART[+keep|+save]:L,BN,DK,DH,DV:config;...' (config as KernelConfig.parse; "
                    "PART: one of triton_compile.PIECE_PARTS), e.g. the configurations a GPU run timed")
    ap.add_argument("--names", default="", help="with --candidates: only names starting with these (comma-separated)")
    ap.add_argument("--jobs", type=int, default=1, help="with --registers or --candidates: compile in this many "
                    "processes")
    args = ap.parse_args()
    try:
        from titans.ops.memory import triton_config, triton_seq
    except ImportError as exc:
        print(f"triton_resources: {exc}")
        return
    if not triton_seq.HAS_TRITON:
        print("triton_resources: triton is not installed (pip install 'titans[triton]')")
        return
    if args.registers:
        registers(args.configs, args.out or "benchmarks/results/triton_registers.json", args.jobs)
        return
    if args.wgmma:
        wgmma(args.out or "benchmarks/results/triton_wgmma.json", args.jobs)
        return
    if args.layouts:
        layouts(args.configs, args.out or "benchmarks/results/triton_layouts.json", args.jobs)
        return
    if args.kernels:
        work = [(k, tuple(int(x) for x in shape.split(",")), cfg)
                for k, shape, cfg in (spec.strip().split(":") for spec in args.kernels.split(";") if spec.strip())]
        _run(_kernel_row, work, args.jobs, args.out or "benchmarks/results/triton_kernels.json")
        return
    if args.candidates:
        candidates(args.candidates, args.names, args.out or "benchmarks/results/triton_candidates.json", args.jobs)
        return
    rows = []
    for spec in args.configs.split(";"):
        shape = tuple(int(x) for x in spec.split(","))
        for kind in ("fwd", "bwd"):
            cfg = triton_config.default_config(kind == "bwd", *shape)
            for th in (int(x) for x in args.widths.split(",")):
                if th > (shape[3] if shape[0] == 2 else shape[2]):
                    continue
                row = {"kernel": kind, **dict(zip(("L", "BN", "DK", "DH", "DV"), shape)), "TH": th,
                       "warps": cfg.warps, "stages": cfg.stages, "precision": cfg.precision,
                       **compile_kernel(kind == "bwd", shape, cfg, th=th, precision=cfg.precision)}
                rows.append(row)
                print(row, flush=True)
                if row.get("fits_H100"):
                    break  # the widest that fits
    print(table(rows, ["kernel", "L", "BN", "DK", "DH", "DV", "TH", "warps", "stages", "precision", "shared_KiB",
                       "fits_H100", "ptxas"]))
    write_results(args.out or "benchmarks/results/triton_resources.json", {"rows": rows})


if __name__ == "__main__":
    main()
