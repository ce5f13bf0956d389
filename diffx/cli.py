"""The ``diffx`` console script.

Subcommands:
    demo    run the core effects on the shipped demo audio; write audio files and plots.

The training subcommands (``fit``, ``validate``, ``test``, ``predict``) arrive with the first
task and are built on LightningCLI.
"""

from __future__ import annotations

import argparse
import sys

from diffx import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffx", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"diffx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the core effects on the shipped demo audio")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--seconds", type=float, default=6.0, help="length of each demo clip in seconds"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from diffx.demo import run_demo

        run_demo(args.out, seconds=args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
