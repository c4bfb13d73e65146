"""The ``cryo-cds`` command: run the service, check request files (the rule author's
sandbox), serve FHIR fixtures, report rule coverage and query the decision log.

Each subcommand lives in its own module with a ``register(subparsers)`` function; add a
command by writing such a module and listing it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..config import ConfigError
from ..policy import PolicyError
from ..rulebook import RuleError
from ..terminology import ValueSetError
from . import audit, check, fhir, policy, replay, rules, serve
from .common import USAGE_ERROR, CliError, Parser

Register = Callable[["argparse._SubParsersAction[Parser]"], None]
COMMANDS: list[Register] = [
    serve.register,
    check.register,
    fhir.register,
    audit.register,
    rules.register,
    policy.register,
    replay.register,
]


def build_parser() -> Parser:
    parser = Parser(prog="cryo-cds", description=(__doc__ or "").split("\n\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe, send what is left to /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; input mistakes are one line on stderr and exit status 2, a closed
    output pipe (141) and Ctrl-C (130) end quietly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        status: int = args.func(args)
        sys.stdout.flush()
        return status
    except CliError as exc:
        print(f"cryo-cds: {exc}" if not str(exc).startswith("cryo-cds") else str(exc), file=sys.stderr)
        return USAGE_ERROR
    except (ConfigError, RuleError, ValueSetError, PolicyError) as exc:
        print(f"cryo-cds: configuration error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
