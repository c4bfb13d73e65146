"""``cryo-cds fhir-server``: serve FHIR bundles, NDJSON or saved CDS Hooks requests as a
read-only FHIR R4 server (the CDS Hooks Sandbox's fhirServiceUrl, or ``fhirServer`` of a
request checked with ``cryo-cds check``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CliError, Parser, add_listen_options, warn
from .serve import bind


def run(args: argparse.Namespace) -> int:
    from ..devtools.fhir_server import FhirDataError, create_fhir_app, load_resources

    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file or directory")
    try:
        index = load_resources(paths)
    except FhirDataError as exc:
        raise CliError(str(exc)) from None
    server = bind(args.host, args.port, create_fhir_app(index, cors_origins=args.cors_origins))
    try:
        for source, patient_ids in index.patients_by_source.items():
            warn(f"  {source}: " + ", ".join(f"Patient/{pid}" for pid in patient_ids))
        warn(f"cryo-cds FHIR sandbox ({len(index)} resources) listening on http://{args.host}:{server.port}/")
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    fhir = sub.add_parser("fhir-server", help="serve FHIR bundles or fixtures as a read-only FHIR R4 server")
    fhir.add_argument("paths", nargs="+", metavar="PATH", help="JSON/NDJSON files or folders")
    add_listen_options(fhir, host="127.0.0.1", port=8090)
    fhir.add_argument("--cors-origins", default="*", help="'*' or a comma-separated list of origins")
    fhir.set_defaults(func=run)


__all__ = ["register", "run"]
