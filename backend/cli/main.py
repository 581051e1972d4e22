"""The ``ani3dhuman`` entry point: one parser with a subcommand per module of ``backend.cli``."""

from __future__ import annotations

import argparse
import logging
import sys

from backend.cli import animate, batch, demo, models, refit, render, serve
from backend.core.errors import CapabilityError, InputError

# Subcommand modules, in help order (``refit`` adds the ``fit`` command).
COMMANDS = (demo, animate, batch, render, refit, serve, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ani3dhuman",
        description="Ani3DHuman: one photo + an SMPL/SMPL-X motion -> animated 3D Gaussians.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
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
