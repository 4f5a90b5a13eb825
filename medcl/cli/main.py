"""Entry point of the ``medcl`` command.

Every subcommand lives in its own module under :mod:`medcl.cli` and registers itself through
``add_parser(subparsers)``, one module per stage (:mod:`.data`, :mod:`.pretrain`, :mod:`.evaluate`,
:mod:`.demo`, :mod:`.dashboard`); heavy libraries are imported inside the handlers so that
``--help`` stays fast. A :class:`~medcl.errors.MedclError` ends the program with a one-line message
(exit status 2); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from medcl import __version__
from medcl.errors import MedclError

# the command modules; each exposes add_parser(subparsers) -> None
COMMAND_MODULES: tuple[str, ...] = (
    "medcl.cli.data",
    "medcl.cli.pretrain",
    "medcl.cli.evaluate",
    "medcl.cli.export",
    "medcl.cli.demo",
    "medcl.cli.dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="medcl",
        description="Semi-supervised contrastive learning for medical imaging with scarce labels.",
    )
    parser.add_argument("--version", action="version", version=f"medcl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from medcl._quiet import quiet_third_party

    quiet_third_party()
    try:
        rc = args.handler(args)
    except MedclError as exc:
        if args.debug or os.environ.get("MEDCL_DEBUG"):
            raise
        print(f"medcl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medcl {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
