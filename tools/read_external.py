"""Run every example resource under FHIR data folders through the service's reader and say
how many were read strictly, read leniently or skipped, and why; none may vanish.

Usage: python tools/read_external.py [FOLDER ...]   (default: ../shared/external/fhir-data)
       --details  list every lenient and skipped resource

Each file is a resource, a Bundle (every entry's resource; an entry that is itself a resource,
without the ``resource`` wrapper, is read too), a bare Bundle entry, or NDJSON (one resource a
line). Anything that is not a resource (a bulk-export log line, broken JSON) is counted as
"not a resource" with the reason, so that every item of every file is accounted for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cds_hooks.lenient import read_resource

DEFAULT = ROOT.parent / "shared" / "external" / "fhir-data"


@dataclass
class Item:
    """One resource (or would-be resource) found in a file, and what became of it."""

    where: str
    ref: str
    outcome: str  # read | lenient | skipped | not a resource
    why: str = ""


@dataclass
class Survey:
    items: list[Item] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(item.outcome for item in self.items)

    def by_source(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for item in self.items:
            out.setdefault(item.where.split("/", 1)[0], Counter())[item.outcome] += 1
        return out


@dataclass(frozen=True)
class _NoResource:
    why: str


def _candidates(doc: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(location, raw resource) for every resource a parsed JSON document holds."""
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = doc.get("entry")
        if not entries:
            yield where, _NoResource("an empty Bundle")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and "resource" in entry:
                yield from _candidates(entry["resource"], f"{where}#entry{i}")
            elif isinstance(entry, dict) and "resourceType" in entry:  # put straight into entry[] (a vendor defect)
                yield f"{where}#entry{i}", entry
            else:
                yield f"{where}#entry{i}", _NoResource("a Bundle entry without a resource (e.g. a DELETE request)")
    elif isinstance(doc, dict) and "resourceType" not in doc and isinstance(doc.get("resource"), dict):
        yield f"{where}#resource", doc["resource"]  # a bare Bundle.entry saved as a file
    else:
        yield where, doc


def survey(folders: Sequence[Path]) -> Survey:
    result = Survey()
    for folder in folders:
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            name = str(path.relative_to(folder)) if path != folder else path.name
            if path.suffix == ".json":
                docs = [(name, path.read_text(encoding="utf-8", errors="replace"))]
            elif path.suffix == ".ndjson":
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                docs = [(f"{name}:{n + 1}", line) for n, line in enumerate(lines) if line.strip()]
            else:
                continue
            for where, text in docs:
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError as exc:
                    result.items.append(Item(where, "-", "not a resource", f"not JSON ({exc.msg})"))
                    continue
                for location, raw in _candidates(doc, where):
                    if isinstance(raw, _NoResource):
                        result.items.append(Item(location, "-", "not a resource", raw.why))
                        continue
                    if not (isinstance(raw, dict) and isinstance(raw.get("resourceType"), str)):
                        result.items.append(Item(location, "-", "not a resource", "no resourceType"))
                        continue
                    reading = read_resource(raw)
                    result.items.append(Item(location, reading.ref, reading.state, reading.why))
    return result


def report(result: Survey, details: bool) -> str:
    lines = ["| source | read | read leniently | skipped | not a resource |", "|---|---|---|---|---|"]
    for source, counts in sorted(result.by_source().items()):
        lines.append(
            f"| {source} | {counts['read']} | {counts['lenient']} | {counts['skipped']} | {counts['not a resource']} |"
        )
    total = result.counts()
    lines.append(
        f"| **all {len(result.items)}** | {total['read']} | {total['lenient']} | {total['skipped']} "
        f"| {total['not a resource']} |"
    )
    for outcome in ("lenient", "skipped", "not a resource"):
        chosen = [i for i in result.items if i.outcome == outcome]
        if not chosen:
            continue
        lines.append(f"\n{outcome}:")
        if details:
            lines += [f"- {i.where} {i.ref}: {i.why}" for i in chosen]
        else:
            for why, n in Counter(i.why for i in chosen).most_common():
                lines.append(f"- {n} x {why}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--details", action="store_true", help="list every lenient and skipped resource")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(report(survey(args.folders), args.details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
