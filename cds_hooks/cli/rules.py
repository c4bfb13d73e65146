"""``cryo-cds rules``: information about the rule set (``coverage``: each rule's cases and
whether real patient data fires it)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..config import PACKAGE_DIR, from_env
from .common import CliError, Parser, iso_datetime, print_json, print_table, progress, warn


def default_coverage_paths() -> list[Path]:
    """In a source checkout: fhir_fixtures/external and, if present, ../shared/external/fhir-data.
    An installed package has no patient data of its own."""
    root = PACKAGE_DIR.parent
    candidates = [root / "fhir_fixtures" / "external", root.parent / "shared" / "external" / "fhir-data"]
    return [p for p in candidates if p.is_dir()]


def _coverage(args: argparse.Namespace) -> int:
    from ..devtools.coverage import COLUMNS, PatientBundle, coverage_rows

    config = from_env()
    paths = [Path(p) for p in args.paths] or default_coverage_paths()
    if not paths:
        raise CliError("rules coverage: no patient data here; name FHIR Bundle files or folders")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CliError(f"rules coverage: no such path: {', '.join(missing)}")

    def bar(patients: Iterable[PatientBundle]) -> Iterator[PatientBundle]:
        return progress(list(patients), "patients")

    rows = coverage_rows(config, paths, now=args.now, progress=bar)
    if args.json:
        print_json(rows)
    else:
        print_table(
            rows,
            COLUMNS,
            {
                "cases_fires": "fires",
                "cases_silent": "silent",
                "fired_on_real_data": "real data",
                "real_data_requests": "requests",
            },
        )
        if rows:
            warn(
                f"{rows[0]['real_data_patients']} patient(s), {rows[0]['real_data_total_requests']} "
                f"request(s) from {', '.join(map(str, paths))}"
            )
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    rules = sub.add_parser("rules", help="information about the rule set")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="QUESTION")
    coverage = rules_sub.add_parser("coverage", help="per rule: its cases and whether real patient data fires it")
    coverage.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="patient Bundles or folders (default, in a source checkout: fhir_fixtures/external "
        "and ../shared/external/fhir-data)",
    )
    coverage.add_argument(
        "--now", type=iso_datetime, help="evaluate every patient as of this ISO date-time (default: its last encounter)"
    )
    coverage.add_argument("--json", action="store_true")
    coverage.set_defaults(func=_coverage)


__all__ = ["default_coverage_paths", "register"]
