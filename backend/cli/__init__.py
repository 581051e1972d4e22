"""Command line: one module per subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

Thin edge: every subcommand only parses arguments and calls plain functions. Bad input (``InputError``,
``CapabilityError``, missing files) becomes one line on stderr and exit code 2.
"""

from backend.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
