"""The ``titans`` command line. Subcommands so far: ``demo`` (test-time memorization table)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="titans", description="Titans: learning to memorize at test time.")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="test-time memorization: recall vs stream length and memory depth",
                   add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
