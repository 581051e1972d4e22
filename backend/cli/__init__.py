"""Command line: one module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

Thin edge: every subcommand only parses arguments and calls plain functions. Bad input (``InputError``,
``CapabilityError``, missing files) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from backend.errors import CapabilityError, InputError

# Subcommand modules under backend.cli, in help order.
COMMANDS = ("demo", "animate", "render", "fit", "serve", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ani3dhuman",
        description="Ani3DHuman: one photo + an SMPL/SMPL-X motion -> animated 3D Gaussians.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"backend.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"backend.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except (InputError, CapabilityError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"ani3dhuman {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ani3dhuman {args.command}: interrupted", file=sys.stderr)
        return 130
