"""The ``titans`` command line.

    titans data prepare [--corpus shakespeare] [--tokenizer byte]
    titans train --preset small --set model.variant='mag' --set train.max_steps=500 [--resume]
    torchrun --nproc_per_node=2 -m titans.cli train --preset small          (DDP; --set train.fsdp=True for FSDP2)
    titans eval --ckpt runs/small [--split test | --file notes.txt] [--length 1024] [--piece 256] [--device cuda]
    titans eval niah|babilong|mqar --ckpt runs/niah --lengths 256,1k,4k,64k   (long-context tasks, streamed)
    titans eval commonsense --ckpt runs/small [--ckpt ...] [--tasks piqa,hellaswag] [--limit 500]
    titans generate --ckpt runs/small --prompt "ROMEO:" [--max-new-tokens 200] [--temperature 0.8] [--top-k 40]
    titans demo                      (the main job; make demo)
    titans memorize                  (test-time memorization table)
    titans forecast --data vic_elec --horizon 96 --model lmm   (or --all: the whole table)
    titans genomics --model lmm      (genus of a DNA window, strains held out; --all: the whole table)
    titans study lm [--steps 1000]   (every variant, same size and tokens; resumable)
    titans study niah | mqar         (long context and ablations | memory depth on MQAR; resumable)
    titans study mad                 (every variant on the MAD synthetic tasks, the paper's Table 10; resumable)
    titans --version                 (this package's and torch's versions)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _device(name: str):
    """``--device`` as a ``torch.device``, or exit naming the flag and the value (before any work)."""
    from .device import resolve_device

    try:
        return resolve_device(name, "--device")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _load(ckpt: str, device="cpu"):
    """``titans.train.load_model``: a trained model (on ``device``), its run config and the checkpoint folder; its
    errors name the ``--ckpt`` flag."""
    from .train import CheckpointError, load_model

    try:
        return load_model(ckpt, device)
    except CheckpointError as e:
        msg = str(e)
        raise CheckpointError(f"--ckpt {msg}" if msg.startswith(f"{ckpt}:") else f"--ckpt {ckpt}: {msg}") from None


def cmd_data(args):
    from .data import prepare

    d = prepare(args.corpus, args.tokenizer, args.data_dir, force=args.force)
    print(json.dumps({"path": d.path, **d.meta}, indent=1))


def cmd_train(args):
    from .train import PRESETS, apply_overrides, train

    cfg = PRESETS[args.preset]()
    apply_overrides(cfg, args.set or [])
    if args.out_dir:
        cfg.train.out_dir = args.out_dir
    os.makedirs(cfg.train.out_dir, exist_ok=True)
    with open(os.path.join(cfg.train.out_dir, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=1))


def cmd_eval(args):
    import numpy as np

    from .data import get_tokenizer, prepare
    from .train import evaluate_split

    device = _device(args.device)
    model, cfg, path = _load(args.ckpt, device)
    length = args.length or cfg.data.seq_len
    if args.positions is not None and not 1 <= args.positions <= length:
        raise SystemExit(f"--positions {args.positions}: must be between 1 and the window length {length}")
    if args.file:
        tok = get_tokenizer(cfg.data.tokenizer)
        with open(args.file, encoding="utf-8", errors="replace") as f:
            text = f.read()
        tokens = np.asarray(tok.encode(text), dtype=np.int64)
        bpt = len(text.encode("utf-8")) / max(1, len(tokens))
    else:
        data = prepare(cfg.data.corpus, cfg.data.tokenizer, cfg.data.data_dir, cfg.data.val_fraction,
                       cfg.data.test_fraction)
        tokens, bpt = data.split(args.split), data.meta["bytes_per_token"]
    res = evaluate_split(model, tokens, length=length, max_windows=args.max_windows, bytes_per_token=bpt,
                         piece=args.piece or cfg.data.seq_len, device=device, positions=args.positions)
    print(json.dumps({"checkpoint": path, "length": length, "device": str(device), **res}, indent=1))


def cmd_generate(args):
    import torch

    from .data import get_tokenizer

    for flag, bad in (("--max-new-tokens", args.max_new_tokens < 0), ("--temperature", not args.temperature >= 0),
                      ("--top-k", args.top_k is not None and args.top_k < 1)):
        if bad:
            value = getattr(args, flag[2:].replace("-", "_"))
            raise SystemExit(f"{flag}={value}: must be >= {1 if flag == '--top-k' else 0}")
    device = _device(args.device)
    model, cfg, _ = _load(args.ckpt, device)
    tok = get_tokenizer(cfg.data.tokenizer)
    ids = tok.encode(args.prompt) or [0]
    # The sampler's generator lives where the sampling runs (a CUDA run draws different samples than a CPU one).
    g = torch.Generator(device=device).manual_seed(args.seed)
    out, _ = model.generate(torch.tensor([ids], device=device), args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, generator=g)
    print(tok.decode(out[0].tolist()))


def cmd_demo(args):
    from .demo import main as demo_main

    demo_main(args.rest)


def cmd_study(args):
    if args.name == "lm":
        from .studies.lm import main as study_main

        study_main(args.rest)
    elif args.name == "mad":
        from .studies.mad import main as mad_main

        mad_main(args.rest)
    else:
        from .studies.longctx import main as longctx_main

        longctx_main(args.rest, which=args.name)


def cmd_forecast(args):
    from .forecast.run import main as forecast_main

    forecast_main(args.rest)


def cmd_genomics(args):
    from .genomics.run import main as genomics_main

    genomics_main(args.rest)


def cmd_memorize(args):
    from .memorize import main as memorize_main

    memorize_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    import torch

    from . import __version__

    ap = argparse.ArgumentParser(prog="titans", description="Titans: learning to memorize at test time.")
    # the torch build with it: what a bug report needs to reproduce a number
    ap.add_argument("--version", action="version", version=f"titans {__version__} (torch {torch.__version__})")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="prepare token files from an offline corpus")
    dsub = p.add_subparsers(dest="action", required=True)
    pp = dsub.add_parser("prepare", help="tokenize a corpus into memory-mapped train/val/test files")
    pp.add_argument("--corpus", default="shakespeare", help="shakespeare | essays | a folder of .txt/.jsonl")
    pp.add_argument("--tokenizer", default="byte", help="byte | gpt2")
    pp.add_argument("--data-dir", default=None, help="cache folder (default: $TITANS_DATA_DIR or ~/.cache/titans)")
    pp.add_argument("--force", action="store_true", help="prepare again even if cached")
    pp.set_defaults(fn=cmd_data)

    p = sub.add_parser("train", help="train a model (resumable; works under torchrun)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "niah", "babilong", "mqar"],
                   help="starting configuration (niah / babilong / mqar: a synthetic task)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.lr=3e-4")
    p.add_argument("--out-dir", default=None, help="run folder (default: the preset's train.out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint (the same run: another model, seed, "
                        "batch or data config is an error; max_steps may grow)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="loss / perplexity / bits per byte of a checkpoint, streamed; or a long-context "
                                    "task: titans eval niah|babilong|mqar --help; or the commonsense benchmarks: "
                                    "titans eval commonsense --help")
    p.add_argument("--ckpt", required=True, help="run folder or checkpoint folder")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--file", default=None, help="evaluate on this text file instead of a split")
    p.add_argument("--length", type=int, default=None, help="context per window (default: the training length)")
    p.add_argument("--piece", type=int, default=None, help="tokens per forward call (default: training length)")
    p.add_argument("--max-windows", type=int, default=None, help="evaluate at most this many windows")
    p.add_argument("--positions", type=int, default=None, metavar="N",
                   help="also the loss of N equal spans of positions (how it moves with the context seen)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, mps, auto")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("--ckpt", required=True, help="a run folder or one of its checkpoints/step_NNNNNN folders")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample after the prompt")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 is greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens only")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, mps, auto")
    p.set_defaults(fn=cmd_generate)

    # Commands that hand their own arguments (and --help) to another module's parser.
    p = sub.add_parser("demo", help="the main job: MAC vs Transformer++ on Shakespeare (make demo)", add_help=False)
    p.set_defaults(fn=cmd_demo, passthrough=True)
    p = sub.add_parser("study", help="resumable experiments: lm (every variant, same size and tokens), niah (long "
                                     "context, ablations), mqar (memory depth), mad (the MAD tasks)",
                       add_help=False)
    p.add_argument("name", choices=["lm", "niah", "mqar", "mad"])
    p.set_defaults(fn=cmd_study, passthrough=True)
    p = sub.add_parser("forecast", help="long-term time-series forecasting (--data, --horizon, --model, --all)",
                       add_help=False)
    p.set_defaults(fn=cmd_forecast, passthrough=True)
    p = sub.add_parser("genomics", help="DNA classification: genus of a window from held-out strains (--model, --all)",
                       add_help=False)
    p.set_defaults(fn=cmd_genomics, passthrough=True)
    p = sub.add_parser("memorize", help="test-time memorization: recall vs stream length and memory depth",
                       add_help=False)
    p.set_defaults(fn=cmd_memorize, passthrough=True)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] == "commonsense":
        from .eval.commonsense import main as commonsense_main

        commonsense_main(argv[2:], load=_load)
        return 0
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] in ("niah", "babilong", "mqar"):
        from .eval.longctx import main as longctx_main

        longctx_main(argv[1:], load=_load)
        return 0
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.fn(args)
    return 0


def run() -> int:
    """The ``titans`` console script (and ``python -m titans.cli``): :func:`main`, with an input error (a bad config
    value, task, file or checkpoint, or data that is not installed: ``ValueError``, ``CheckpointError`` or
    ``FileNotFoundError``) printed as one line naming the field and the value, exit status 2, instead of a
    traceback. ``TITANS_TRACEBACK=1`` keeps the traceback."""
    try:
        return main()
    except Exception as e:
        from .train.checkpoint import CheckpointError

        if not isinstance(e, (ValueError, CheckpointError, FileNotFoundError)) or os.environ.get("TITANS_TRACEBACK"):
            raise
        print(f"titans: error: {e}\n(set TITANS_TRACEBACK=1 to see where it was raised)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
