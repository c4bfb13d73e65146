"""What every ``cryo-cds`` subcommand shares: one-line errors with exit status 2, argument
types that explain what they expected, request-file reading, progress bars and tables that
fit the terminal.

Why: a command-line user should never see a Python traceback for a mistake in their input;
they get one line saying what is wrong, and a status a script can test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..config import MAX_PORT, N, parse_number

T = TypeVar("T")
USAGE_ERROR = 2


class CliError(Exception):
    """A mistake in the command's input or environment; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


def iso_datetime(raw: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date-time: {raw!r} (e.g. 2026-11-21 or 2026-11-21T12:00:00+00:00)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _number_type(kind: type[N], *, allow_zero: bool = False, maximum: N | None = None) -> Callable[[str], N]:
    """An argparse ``type`` over the settings' own number parser (``config.parse_number``)."""

    def parse(raw: str) -> N:
        try:
            return parse_number(raw, kind, allow_zero=allow_zero, maximum=maximum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


non_negative_int = _number_type(int, allow_zero=True)
positive_int = _number_type(int)
port_number = _number_type(int, maximum=MAX_PORT)


def add_listen_options(parser: Parser, *, host: str, port: int, from_settings: bool = False) -> None:
    """``--host`` and ``--port`` of a command that serves HTTP. With ``from_settings`` an option
    left out is None, so the command falls back to CDS_HOOKS_HOST/CDS_HOOKS_PORT, then to these."""
    if from_settings:
        parser.add_argument("--host", help=f"address to listen on (default CDS_HOOKS_HOST or {host})")
        parser.add_argument("--port", type=port_number, help=f"port (default CDS_HOOKS_PORT or {port})")
    else:
        parser.add_argument("--host", default=host, help=f"address to listen on (default {host})")
        parser.add_argument("--port", type=port_number, default=port, help=f"port (default {port})")


def add_json_option(parser: Parser, what: str = "JSON instead of a table") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def print_rows(
    rows: Sequence[dict[str, Any]], *, as_json: bool, columns: Sequence[str], headers: dict[str, str]
) -> None:
    """Rows as JSON (``--json``) or as a table fitted to the terminal."""
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns, headers)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file; CliError naming the file and what is wrong with it."""
    if path.is_dir():
        raise CliError(f"{path}: is a directory, not a JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    return data


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(items: Sequence[T], label: str) -> Iterator[T]:
    """Yield ``items``, drawing a bar on stderr when it is a terminal and there are several."""
    if len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - len(label) - 20))
    try:
        for done, item in enumerate(items):
            filled = width * done // len(items)
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{len(items)}")
            sys.stderr.flush()
            yield item
        sys.stderr.write(f"\r{label} [{'#' * width}] {len(items)}/{len(items)}\n")
    finally:
        sys.stderr.flush()


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "; ".join(
            f"{v.get('display') or v.get('code')} ({v.get('count')})" if isinstance(v, dict) else str(v) for v in value
        )
    return " ".join(str(value).split())


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: dict[str, str] | None = None) -> None:
    """Rows as aligned columns fitted to the terminal: long cells are shortened (with …), the
    first column (the row's name) never; where even that cannot fit, one wrapped block per row."""
    headers = headers or {}
    titles = [headers.get(c, c) for c in columns]
    table = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [min(60, max([len(t), *(len(r[i]) for r in table)])) for i, t in enumerate(titles)]
    widths[0] = max([len(titles[0]), *(len(r[0]) for r in table)])
    room = shutil.get_terminal_size((160, 20)).columns
    floor = [
        widths[0],
        *(max(len(t), 8) if widths[i + 1] > len(t) else widths[i + 1] for i, t in enumerate(titles[1:])),
    ]

    def total() -> int:
        return sum(widths) + 2 * (len(widths) - 1)

    while total() > room and any(w > f for w, f in zip(widths, floor, strict=True)):
        widest = max(range(len(widths)), key=lambda i: widths[i] - floor[i])
        widths[widest] -= 1
    if total() > room:
        for r in table:
            pairs = [f"{t}: {v}" for t, v in zip(titles[1:], r[1:], strict=True)]
            print(r[0])
            print(
                textwrap.fill(
                    "  ".join(pairs),
                    width=max(20, room - 1),
                    initial_indent="  ",
                    subsequent_indent="  ",
                    break_on_hyphens=False,
                )
            )
        return

    def fit(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    print("  ".join(fit(t, w).ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(fit(v, w).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
