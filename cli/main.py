"""`cutfx`: the project's command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import demo


def make_checkpoint(args: argparse.Namespace) -> int:
    from worker.checkpoint import ensure_random_checkpoint

    print(ensure_random_checkpoint(args.mode))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cutfx", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(subparsers)
    checkpoint = subparsers.add_parser(
        "checkpoint",
        help="make (once) a randomly initialised InSPyReNet checkpoint and print its path",
    )
    checkpoint.add_argument("--mode", default="fast", choices=("fast", "base", "base-nightly"))
    checkpoint.set_defaults(handler=make_checkpoint)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
