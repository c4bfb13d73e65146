"""Read-only FHIR R4 sandbox server over local JSON files.

Why: the CDS service prefetches from FHIR; developers and tests need a server with real data
(Synthea bundles, HL7/vendor examples, saved CDS Hooks requests) and no database, and a strict
one, so that mistakes in our prefetch templates show up as errors instead of empty results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource as ResourceModel
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

logger = logging.getLogger(__name__)

Resource = dict[str, Any]
Filter = Callable[[Resource], bool]
Range = tuple[datetime, datetime]
FHIR_JSON = "application/fhir+json"
MAX_COUNT = 500
_PAGING = ("_count", "_offset")
_INCLUDE = "_include"
# `_include` targets supported: "Type:param" -> the path of the reference it follows.
_INCLUDES = {
    f"{t}:medication": "medicationReference"
    for t in ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
}
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
# "Patient/x", "http://base/Patient/x", "Patient/x/_history/2" -> (Patient, x)
_REF_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?"
    r"(Z|[+-]\d\d:\d\d)?)?)?)?"
)
_MIN, _MAX = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)

# Search tables, explicit so that the CapabilityStatement and the 400s say exactly what works.
_NO_PATIENT = frozenset(
    {
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Location",
        "Group",
        "Medication",
        "Substance",
        "HealthcareService",
        "Endpoint",
        "ValueSet",
        "CodeSystem",
        "Questionnaire",
        "Bundle",
        "Binary",
        "Parameters",
    }
)
_NO_SUBJECT = _NO_PATIENT | {
    "Patient",
    "Device",
    "AllergyIntolerance",
    "Immunization",
    "Claim",
    "ExplanationOfBenefit",
    "Coverage",
    "Appointment",
}
_NO_STATUS = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Group",
        "Condition",
        "AllergyIntolerance",
        "RelatedPerson",
        "Person",
        "Binary",
        "Parameters",
        "Bundle",
    }
)
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")  # Device, AllergyIntolerance: patient
_CODE_PATHS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("Condition", "Procedure", "ServiceRequest", "AllergyIntolerance", "DiagnosticReport", "Medication"), ("code",)
    ),
    **dict.fromkeys(
        ("MedicationRequest", "MedicationStatement", "MedicationAdministration"), ("medicationCodeableConcept",)
    ),
    "Observation": ("code", "component.code"),  # so BP panels are found by 8480-6 / 8462-4
}
_CATEGORY_PATHS: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("Observation", "Condition", "AllergyIntolerance", "ServiceRequest", "Procedure"), ("category",)
)
# `date` is one simplified parameter per type (FHIR has e.g. Condition onset-date instead).
_EFFECTIVE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
_DATE_PATHS: dict[str, tuple[str, ...]] = {
    "Observation": _EFFECTIVE,
    "DiagnosticReport": _EFFECTIVE,
    "MedicationStatement": _EFFECTIVE,
    "MedicationAdministration": _EFFECTIVE,
    "Procedure": ("performedDateTime", "performedPeriod"),
    "Condition": ("onsetDateTime", "onsetPeriod"),
    "MedicationRequest": ("authoredOn",),
    "ServiceRequest": ("authoredOn",),
    "Encounter": ("period",),
    "Appointment": ("start",),
    "Immunization": ("occurrenceDateTime",),
    "AllergyIntolerance": ("recordedDate",),
    "DeviceUseStatement": ("timingDateTime", "timingPeriod"),
}
# r = the resource's range, q = the query's range, both [lo, hi). eq means "overlaps".
_DATE_CMP: dict[str, Callable[[Range, Range], bool]] = {
    "eq": lambda r, q: r[0] < q[1] and r[1] > q[0],
    "lt": lambda r, q: r[0] < q[0],
    "le": lambda r, q: r[0] < q[1],
    "gt": lambda r, q: r[1] > q[1],
    "ge": lambda r, q: r[1] > q[0],
}


@dataclass
class ResourceIndex:
    """Resources by type, then id. Insertion order is load order, so paging is stable.
    ``patients_by_source`` names the Patient ids each file contributed (printed at start-up)."""

    by_type: dict[str, dict[str, Resource]] = field(default_factory=dict)
    patients_by_source: dict[str, list[str]] = field(default_factory=dict)

    def add(self, resource: Resource) -> None:
        self.by_type.setdefault(resource["resourceType"], {})[resource["id"]] = resource

    def get(self, rtype: str, rid: str) -> Resource | None:
        return self.by_type.get(rtype, {}).get(rid)

    def of_type(self, rtype: str) -> list[Resource]:
        return list(self.by_type.get(rtype, {}).values())

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_type.values())


class FhirError(Exception):
    """An error answered as an OperationOutcome; args are (status, issue code, diagnostics)."""


class FhirDataError(ValueError):
    """The files cannot be served as one server (e.g. two files claim one id); says which."""


def _documents(paths: Sequence[Path]) -> Iterator[tuple[Any, Path]]:
    """JSON documents (one a line in NDJSON) in named files and *.json/*.ndjson under folders."""
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"FHIR data path not found: {path}")
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_dir() or (file != path and file.suffix.lower() not in (".json", ".ndjson")):
                continue
            try:
                text = file.read_text(encoding="utf-8-sig")
                lines = text.splitlines() if file.suffix.lower() == ".ndjson" else [text]
                docs = [json.loads(line) for line in lines if line.strip()]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                logger.warning("Skipping %s: not readable JSON (%s)", file, exc)
                continue
            yield from ((doc, file) for doc in docs)


def _extract(doc: Any, source: Path) -> Iterator[tuple[Resource, str | None]]:
    """(resource, fullUrl) pairs from a resource, a Bundle of any type or a CDS Hooks request."""
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        for entry in doc.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                logger.warning("Skipping a Bundle entry without a resource in %s", source)
            elif (entry.get("search") or {}).get("mode") != "outcome":
                yield from (_extract(res, source) if res["resourceType"] == "Bundle" else [(res, entry.get("fullUrl"))])
    elif isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
        yield doc, None
    elif isinstance(doc, dict) and "hook" in doc and "context" in doc:
        # A saved CDS Hooks request: its prefetch is the record; its draftOrders are not.
        for value in (doc.get("prefetch") or {}).values():
            if isinstance(value, dict) and "resourceType" in value:
                yield from _extract(value, source)
    else:
        logger.warning("Skipping non-FHIR JSON in %s (no resourceType)", source)


def _rewrite_refs(node: Any, urn_map: dict[str, str]) -> None:
    """Replace urn:uuid references in place, so searches see plain Type/id references."""
    if isinstance(node, dict):
        if isinstance(ref := node.get("reference"), str) and ref in urn_map:
            node["reference"] = urn_map[ref]
        node = list(node.values())
    for item in node if isinstance(node, list) else []:
        _rewrite_refs(item, urn_map)


def _namespace(file: Path) -> str:
    """The id prefix of one file's resources: its name, in FHIR id characters."""
    return re.sub(r"[^A-Za-z0-9\-.]", "-", file.stem).strip("-.") or "file"


def _namespaced(namespace: str, rid: str) -> str:
    """``<namespace>.<id>``, shortened with a digest where it would pass FHIR's 64 characters."""
    new = f"{namespace}.{rid}"
    if len(new) <= 64:
        return new
    digest = hashlib.sha256(new.encode()).hexdigest()
    room = 64 - len(rid) - 12
    return f"{namespace[:room]}-{digest[:10]}.{rid}" if room >= 1 else f"gen-{digest[:40]}"


def _colliding_files(triples: Sequence[tuple[Resource, str | None, Path]]) -> set[Path]:
    """Files holding a (type, id) that another file holds with different content."""
    first: dict[str, tuple[Path, str]] = {}
    clashing: set[Path] = set()
    for res, _url, file in triples:
        key = f"{res['resourceType']}/{res['id']}"
        content = json.dumps(res, sort_keys=True)
        seen = first.setdefault(key, (file, content))
        if seen[0] != file and seen[1] != content:
            clashing |= {file, seen[0]}
    return clashing


def load_resources(paths: Sequence[Path]) -> ResourceIndex:
    """Index every resource under `paths`. Each file serves its own patient: files whose ids
    clash with another file's (every saved CDS Hooks fixture calls its patient
    ``case-patient``) get their ids, and the references between their own resources, prefixed
    with the file name (``01-pregnant-whole-body-order-select.case-patient``); identical
    copies of one resource in several files are served once; a clash that remains is refused."""
    triples = [
        (res, url, path) for doc, path in _documents([Path(p) for p in paths]) for res, url in _extract(doc, path)
    ]
    for res, full_url, _file in triples:
        urn = (full_url or "").removeprefix("urn:uuid:")
        if not isinstance(res.get("id"), str) or not res["id"]:
            # A urn:uuid fullUrl names the resource; else hash the content so reloads agree.
            digest = hashlib.sha256(json.dumps(res, sort_keys=True).encode()).hexdigest()
            res["id"] = urn if urn != full_url and _ID_RE.fullmatch(urn) else f"gen-{digest[:32]}"
    clashing = _colliding_files(triples)
    renames: dict[Path, dict[str, str]] = {}
    for res, _url, file in triples:
        if file in clashing:
            old, new = res["id"], _namespaced(_namespace(file), res["id"])
            rtype = res["resourceType"]
            renames.setdefault(file, {}).update(
                {f"{rtype}/{old}": f"{rtype}/{new}", f"urn:uuid:{old}": f"{rtype}/{new}"}
            )
            res["id"] = new
    for res, _url, file in triples:
        if file in renames:
            _rewrite_refs(res, renames[file])
    urn_map: dict[str, str] = {}
    for res, full_url, _file in triples:
        key = f"{res['resourceType']}/{res['id']}"
        urn = (full_url or "").removeprefix("urn:uuid:")
        if full_url and urn != full_url:
            urn_map[full_url] = key  # the fullUrl wins over an id that happens to match
        urn_map.setdefault(f"urn:uuid:{res['id']}", key)  # X is a loaded resource's id
    index = ResourceIndex()
    owner: dict[str, Path] = {}
    for res, _url, file in triples:
        _rewrite_refs(res, urn_map)
        key = f"{res['resourceType']}/{res['id']}"
        if (other := owner.setdefault(key, file)) != file and index.get(res["resourceType"], res["id"]) != res:
            raise FhirDataError(
                f"{file} and {other} both define {key} differently, even with ids "
                "prefixed by file name; rename one of the files"
            )
        index.add(res)
        if res["resourceType"] == "Patient" and res["id"] not in index.patients_by_source.get(str(file), []):
            index.patients_by_source.setdefault(str(file), []).append(res["id"])
    if clashing:
        logger.info(
            "Ids prefixed with the file name in %d file(s) whose ids clash: %s",
            len(clashing),
            ", ".join(sorted(p.name for p in clashing)),
        )
    logger.info("Loaded %d FHIR resources of %d types", len(index), len(index.by_type))
    return index


def search_params(rtype: str) -> dict[str, str]:
    """The search parameters (name -> FHIR search type) supported for one resource type."""
    params = {"_id": "token"}
    if rtype == "Appointment":
        params |= {"patient": "reference", "actor": "reference"}
    elif rtype not in _NO_PATIENT:
        params["patient"] = "reference"  # on Patient itself an alias of _id
    params |= {"subject": "reference"} if rtype not in _NO_SUBJECT else {}
    params |= {"code": "token"} if rtype in _CODE_PATHS else {}
    params |= {"category": "token"} if rtype in _CATEGORY_PATHS else {}
    params |= {"status": "token"} if rtype not in _NO_STATUS else {}
    params |= {"date": "date"} if rtype in _DATE_PATHS else {}
    return params


def _at(node: Any, path: str) -> list[Any]:
    """The values at a dotted path, flattening lists on the way."""
    items = [node]
    for part in path.split("."):
        items = [
            v
            for it in items
            if isinstance(it, dict) and part in it
            for v in (it[part] if isinstance(it[part], list) else [it[part]])
        ]
    return items


def _ref_key(ref: str, default_type: str | None) -> tuple[str | None, str]:
    """(type, id) of a reference; a bare id (or unresolved urn:uuid) gets `default_type`."""
    if match := _REF_RE.search(ref):
        return match.group(1), match.group(2)
    return default_type, ref.removeprefix("urn:uuid:")


def _range(value: Any) -> Range | None:
    """[lo, hi) of a date/dateTime/instant/Period: 2020 is all of 2020, no zone means UTC."""
    if isinstance(value, dict):
        start, end = (_range(value.get(k)) for k in ("start", "end"))
        return ((start[0] if start else _MIN), (end[1] if end else _MAX)) if start or end else None
    if not isinstance(value, str) or not (m := _DATE_RE.fullmatch(value.strip())):
        return None
    try:
        if m[3] is None:  # a year or a month
            lo = datetime(int(m[1]), int(m[2] or 1), 1, tzinfo=UTC)
            return lo, (lo.replace(year=lo.year + 1) if m[2] is None else (lo + timedelta(days=32)).replace(day=1))
        lo = datetime.fromisoformat(m[0])
        lo = lo if lo.tzinfo else lo.replace(tzinfo=UTC)
        step = timedelta(days=1) if m[4] is None else timedelta(seconds=1 if m[6] else 60)
        return lo, lo + step
    except (ValueError, OverflowError):
        return None


def _make_filter(rtype: str, name: str, value: str) -> Filter:
    """One `name=value` as a predicate; comma-separated values are OR-ed."""
    values = value.split(",")
    if name == "_id" or (name == "patient" and rtype == "Patient"):
        ids = {_ref_key(v, None)[1] for v in values}
        return lambda res: res.get("id") in ids
    if name in ("patient", "subject", "actor"):
        paths = (
            ("participant.actor",) if rtype == "Appointment" else _PATIENT_FIELDS if name == "patient" else ("subject",)
        )
        # `Type/id` must match exactly; a bare id is a Patient for `patient`, any type otherwise
        wants = [_ref_key(v, "Patient" if name == "patient" else None) for v in values]
        return lambda res: any(
            rid == wid and (wtype is None or t in (None, wtype))
            for t, rid in (
                _ref_key(r["reference"], None)
                for p in paths
                for r in _at(res, p)
                if isinstance(r, dict) and isinstance(r.get("reference"), str)
            )
            for wtype, wid in wants
        )
    if name in ("code", "category"):  # `system|code`, `code` (any system), `|code` (no system), `system|`
        tokens = [(s if bar else None, c or None) for s, bar, c in (v.rpartition("|") for v in values)]
        token_paths = _CODE_PATHS[rtype] if name == "code" else _CATEGORY_PATHS[rtype]
        return lambda res: any(
            isinstance(c, dict) and (s is None or c.get("system", "") == s) and (k is None or c.get("code") == k)
            for p in token_paths
            for cc in _at(res, p)
            for c in _at(cc, "coding")
            for s, k in tokens
        )
    if name == "status":
        return lambda res: res.get("status") in values
    queries = []
    for v in values:
        prefix, rest = (v[:2], v[2:]) if v[:2].isalpha() else ("eq", v)
        query = _range(rest.replace(" ", "+"))  # an unescaped '+' of a zone arrives as ' '
        if prefix not in _DATE_CMP or query is None:
            raise FhirError(400, "invalid", f"Bad date '{v}': use [eq|lt|gt|ge|le]YYYY[-MM[-DD..]]")
        queries.append((_DATE_CMP[prefix], query))
    return lambda res: any(
        r is not None and cmp(r, q) for p in _DATE_PATHS[rtype] for r in map(_range, _at(res, p)) for cmp, q in queries
    )


def search(index: ResourceIndex, rtype: str, args: dict[str, list[str]]) -> list[Resource]:
    """Every match (params AND-ed, comma values OR-ed; no paging); 400 FhirError if unknown."""
    allowed = search_params(rtype)
    filters: list[Filter] = []
    for name, values in args.items():
        if name == _INCLUDE:
            bad = [v for v in values if v not in _INCLUDES or not v.startswith(f"{rtype}:")]
            if bad:
                raise FhirError(
                    400, "not-supported", f"Unsupported _include '{bad[0]}'; supported: {', '.join(sorted(_INCLUDES))}"
                )
            continue
        if name not in allowed:
            raise FhirError(
                400,
                "not-supported",
                f"Unknown search parameter '{name}' for {rtype}; supported: {', '.join(sorted([*allowed, *_PAGING]))}",
            )
        if not all(v.strip() for v in values):
            raise FhirError(400, "invalid", f"Search parameter '{name}' has an empty value")
        filters.extend(_make_filter(rtype, name, value) for value in values)
    return [res for res in index.of_type(rtype) if all(f(res) for f in filters)]


def _included(index: ResourceIndex, matches: Sequence[Resource], includes: Sequence[str]) -> list[Resource]:
    """The resources a page's matches reference through the `_include` paths, each once."""
    found: dict[str, Resource] = {}
    for include in includes:
        for res in matches:
            for ref in _at(res, _INCLUDES[include]):
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    rtype, rid = _ref_key(ref["reference"], None)
                    target = index.get(rtype, rid) if rtype else None
                    if target is not None:
                        found.setdefault(f"{rtype}/{rid}", target)
    return list(found.values())


@cache
def _is_resource_type(rtype: str) -> bool:
    """A real resource type (R4B models), so a search on an absent type gives an empty Bundle."""
    try:
        return issubclass(get_fhir_model_class(rtype), ResourceModel)
    except ValueError:
        return False


def _fhir(body: Resource, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type=f"{FHIR_JSON}; charset=utf-8")


def _outcome(status: int, code: str, diagnostics: str) -> Response:
    issue = {"severity": "fatal" if status >= 500 else "error", "code": code, "diagnostics": diagnostics}
    return _fhir({"resourceType": "OperationOutcome", "issue": [issue]}, status)


def _int_arg(params: dict[str, list[str]], name: str, default: int) -> int:
    values = params.get(name) or []
    raw = values[-1] if values else None
    if raw is not None and not raw.isdigit():
        raise FhirError(400, "invalid", f"'{name}' must be a non-negative integer, got '{raw}'")
    return default if raw is None else int(raw)


def _capability(index: ResourceIndex, base: str) -> Resource:
    resources = [
        {
            "type": rtype,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": n, "type": t} for n, t in search_params(rtype).items()],
        }
        for rtype in sorted(index.by_type)
    ]
    doc = (
        f"Read-only. Paging: _count (max {MAX_COUNT}), _offset. date: prefixes eq/lt/gt/ge/le;"
        " a partial date covers its whole period and eq means that the ranges overlap."
    )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fhirVersion": "4.0.1",
        "software": {"name": "cryo-cds FHIR sandbox"},
        "format": [FHIR_JSON, "json"],
        "implementation": {"description": "FHIR R4 sandbox over local files", "url": base},
        "rest": [{"mode": "server", "documentation": doc, "resource": resources}],
    }


def create_fhir_app(index: ResourceIndex, *, page_size: int = 50, cors_origins: str = "*") -> Flask:
    """A Flask app serving `index` as FHIR R4 JSON; cors_origins is '*' or a comma list."""
    app = Flask(__name__)
    origins = {o.strip() for o in cors_origins.split(",") if o.strip()}
    default_count = max(0, min(page_size, MAX_COUNT))

    @app.before_request
    def preflight() -> Response | None:
        return Response(status=204) if request.method == "OPTIONS" else None

    @app.after_request
    def cors(resp: Response) -> Response:
        origin = "*" if "*" in origins else request.headers.get("Origin")
        if origin in origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.vary.add("Origin")
            # Chrome's Private Network Access: lets a public web app (the CDS Hooks Sandbox) read
            # from this loopback server.
            if request.headers.get("Access-Control-Request-Private-Network") == "true":
                resp.headers["Access-Control-Allow-Private-Network"] = "true"
        resp.headers.update(
            {
                "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
        return resp

    @app.errorhandler(Exception)
    def error(exc: Exception) -> Response:
        """Every error, ours or werkzeug's (404, 405...), as an OperationOutcome; no traceback."""
        if isinstance(exc, FhirError):
            return _outcome(*exc.args)
        if not isinstance(exc, HTTPException):
            logger.exception("Unhandled error in the FHIR sandbox")
            return _outcome(500, "exception", "Internal server error")
        status = exc.code or 500
        code = {404: "not-found", 405: "not-supported"}.get(status, "processing")
        resp = _outcome(status, code, exc.description or exc.name)
        if allow := dict(exc.get_headers()).get("Allow"):  # keep a 405's Allow header
            resp.headers["Allow"] = allow
        return resp

    def check_type(rtype: str) -> None:
        if not (_TYPE_RE.fullmatch(rtype) and (rtype in index.by_type or _is_resource_type(rtype))):
            raise FhirError(404, "not-supported", f"Unknown resource type '{rtype}'")

    @app.get("/metadata")
    def metadata() -> Response:
        return _fhir(_capability(index, request.url_root.rstrip("/")))

    @app.get("/<rtype>/<rid>")
    def read(rtype: str, rid: str) -> Response:
        """A resource by id."""
        check_type(rtype)
        if (res := index.get(rtype, rid)) is None:
            raise FhirError(404, "not-found", f"Resource {rtype}/{rid} is not known")
        return _fhir(res)

    def search_response(rtype: str, params: dict[str, list[str]]) -> Response:
        check_type(rtype)
        count = min(_int_arg(params, "_count", default_count), MAX_COUNT)
        offset = _int_arg(params, "_offset", 0)
        kept = {k: vs for k, vs in params.items() if k not in _PAGING}
        matches = search(index, rtype, kept)
        base = request.url_root.rstrip("/")

        def page(off: int) -> str:
            return f"{base}/{rtype}?" + urlencode(
                [*((k, v) for k, vs in kept.items() for v in vs), ("_count", count), ("_offset", off)]
            )

        links = [{"relation": "self", "url": page(offset)}]
        if count and offset + count < len(matches):
            links.append({"relation": "next", "url": page(offset + count)})
        bundle: Resource = {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links}
        shown = matches[offset : offset + count]
        entries = [{"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in shown]
        entries += [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
            for r in _included(index, shown, request.args.getlist(_INCLUDE))
        ]
        if entries:
            bundle["entry"] = entries
        return _fhir(bundle)

    @app.get("/<rtype>")
    def search_type(rtype: str) -> Response:
        return search_response(rtype, dict(request.args.lists()))

    @app.post("/<rtype>/_search")
    def search_type_post(rtype: str) -> Response:
        """FHIR's POST search: parameters in a form-encoded body (and/or the URL), as GET."""
        mimetype = request.mimetype or ""
        if request.content_length and mimetype != "application/x-www-form-urlencoded":
            raise FhirError(415, "not-supported", "POST _search takes an application/x-www-form-urlencoded body")
        params: dict[str, list[str]] = {}
        for source in (request.args, request.form):
            for name, values in source.lists():
                params.setdefault(name, []).extend(values)
        return search_response(rtype, params)

    return app


def serve(
    paths: Sequence[Path | str],
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    page_size: int = 50,
    cors_origins: str = "*",
) -> None:
    """Load `paths` and serve them until interrupted (threaded werkzeug server)."""
    index = load_resources([Path(p) for p in paths])
    app = create_fhir_app(index, page_size=page_size, cors_origins=cors_origins)
    with make_server(host, port, app, threaded=True) as server:
        logger.info("FHIR sandbox on http://%s:%d/ (%d resources)", host, port, len(index))
        server.serve_forever()
