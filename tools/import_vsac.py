"""Turn a VSAC ValueSet expansion (FHIR JSON) into a data file under rules/valuesets/vsac/.

Keeps only the RxNorm codes (code + display, in expansion order) and records where the expansion
came from, so a reviewer can re-check every code against its source:

    python tools/import_vsac.py valueset-2.16.840.1.113762.1.4.1151.60.json \\
        --repo cqframework/ecqm-content-qicore-2024 --commit <sha> \\
        --path input/vocabulary/valueset/external/valueset-2.16.840.1.113762.1.4.1151.60.json

writes rules/valuesets/vsac/2.16.840.1.113762.1.4.1151.60.json. Codes are never edited by hand;
a code that should not count for a drug class is listed under the class's ``vsac_exclude`` in
rules/valuesets/medications.yaml, with a note saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OUT_DIR = Path(__file__).resolve().parents[1] / "rules" / "valuesets" / "vsac"


def convert(valueset: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    """The data-file form of one expanded ValueSet: its identity, its source and its RxNorm codes."""
    if valueset.get("resourceType") != "ValueSet":
        raise ValueError("not a FHIR ValueSet")
    expansion = valueset.get("expansion") or {}
    contains = expansion.get("contains") or []
    if not contains:
        raise ValueError(f"{valueset.get('id')}: the ValueSet has no expansion.contains")
    oid = str(valueset["id"])
    codes = [{"code": str(c["code"]), "display": str(c["display"])} for c in contains if c.get("system") == RXNORM]
    duplicates = [code for code, n in Counter(c["code"] for c in codes).items() if n > 1]
    if duplicates:
        raise ValueError(f"{oid}: duplicate codes {duplicates}")
    versions = sorted({str(c["version"]) for c in contains if c.get("system") == RXNORM and c.get("version")})
    other = Counter(str(c.get("system")) for c in contains if c.get("system") != RXNORM)
    return {
        "oid": oid,
        "url": valueset.get("url"),
        "name": valueset.get("name"),
        "title": valueset.get("title"),
        "version": valueset.get("version"),
        "expansion": {"identifier": expansion.get("identifier"), "timestamp": expansion.get("timestamp")},
        "source": source,
        "system": RXNORM,
        "system_version": ", ".join(versions) or None,
        "other_systems_dropped": dict(sorted(other.items())),
        "count": len(codes),
        "codes": codes,
    }


def write(data: dict[str, Any], out_dir: Path = OUT_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{data['oid']}.json"
    head = json.dumps({k: v for k, v in data.items() if k != "codes"}, indent=1, ensure_ascii=False)
    codes = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in data["codes"])  # one code a line
    path.write_text(head[: -len("\n}")] + ',\n "codes": [\n' + codes + "\n ]\n}\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("valueset", type=Path, help="expanded FHIR ValueSet JSON file")
    parser.add_argument("--repo", required=True, help="repository the file was taken from (owner/name)")
    parser.add_argument("--commit", required=True, help="commit of that repository")
    parser.add_argument("--path", required=True, help="path of the file in that repository")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    args = parser.parse_args(argv)
    valueset = json.loads(args.valueset.read_text(encoding="utf-8"))
    data = convert(valueset, {"repo": args.repo, "commit": args.commit, "path": args.path})
    path = write(data, args.out)
    print(f"{path}: {data['count']} RxNorm codes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
