"""The plain reader (``cds_hooks.plainread``) reads exactly what the R4B models read.

For every resource of a type the rules read, in every corpus we hold (the request fixtures,
the Synthea bundles, the shared real-world data set, the robustness corpus, the CDS Hooks
examples) and in generated mutations of them, a resource the plain reader accepts must be
read by the full reader too (not skipped), with equal values in every element the plain
reader carries: the same ``Decimal``, ``date``, ``datetime`` or text. The plain reader must
also be the one actually used for most real resources, or the comparison would prove nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_hooks import plainread
from cds_hooks.devtools import plain_schema
from cds_hooks.lenient import NEEDS, read_resource
from cds_hooks.plainread import PRIMITIVE_CHECKS, forget_known_text, read_plain
from cds_hooks.plainschema import FIELDS

from .robustness_corpus import variants

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "external" / "fhir-data"
CORPORA = [
    ROOT / "fhir_fixtures" / "requests",
    ROOT / "fhir_fixtures" / "external",
    ROOT / "tests" / "data",
    SHARED_DATA,
]


def _resources(value: Any) -> Iterator[dict[str, Any]]:
    """Every object with a resourceType of a type the rules read, at any depth."""
    if isinstance(value, dict):
        if value.get("resourceType") in NEEDS:
            yield value
        for child in value.values():
            yield from _resources(child)
    elif isinstance(value, list):
        for child in value:
            yield from _resources(child)


def _documents(folder: Path) -> Iterator[Any]:
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".json":
            yield json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".ndjson":
            yield [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _corpus() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    documents: list[Any] = [v.resources for v in variants()]
    for folder in CORPORA:
        documents.extend(_documents(folder))
    for document in documents:
        for resource in _resources(document):
            seen.setdefault(json.dumps(resource, sort_keys=True), resource)
    return list(seen.values())


CORPUS = _corpus()


def _python_name(type_name: str, json_name: str) -> str:
    from fhir.resources.R4B import get_fhir_model_class

    fields = get_fhir_model_class(type_name).model_fields
    return next((name for name, info in fields.items() if (info.alias or name) == json_name), json_name)


def _differences(type_name: str, plain: Any, model: Any, path: str) -> list[str]:
    """Where the plain object and the model disagree on an element the plain reader carries.

    One difference is allowed: an element holding only elements no reader reads, and invalid
    ones, is dropped by the full reader, while the plain one keeps it with nothing in it. Every
    reader that tests such an element's presence goes on to read one of its elements, which
    is None either way."""
    out: list[str] = []
    for element, (kind, is_list) in FIELDS[type_name].items():
        here = f"{path}.{element}"
        mine, theirs = getattr(plain, element), getattr(model, _python_name(type_name, element))
        if kind == "Resource":
            if mine is not None or theirs:
                out.append(f"{here}: contained resources are the full reader's")
            continue
        pairs = list(zip(mine or [], theirs or [], strict=False)) if is_list else [(mine, theirs)]
        if is_list and len(mine or []) != len(theirs or []):
            out.append(f"{here}: {len(mine or [])} items, R4B {len(theirs or [])}")
            continue
        for index, (a, b) in enumerate(pairs):
            where = f"{here}[{index}]" if is_list else here
            if kind in PRIMITIVE_CHECKS:
                same = a == b and type(a) is type(b) if not isinstance(a, datetime) else a == b and b.tzinfo
                if not same:
                    out.append(f"{where}: {a!r} vs R4B {b!r}")
            elif b is None and a is not None and not vars(a):
                continue  # see _differences' docstring
            elif (a is None) != (b is None):
                out.append(f"{where}: {a!r} vs R4B {b!r}")
            elif a is not None:
                out.extend(_differences(kind, a, b, where))
    return out


def _agree(raw: dict[str, Any]) -> str | None:
    """None when the readers agree on ``raw`` (or the plain reader declines it), else why not."""
    plain = read_plain(copy.deepcopy(raw))
    if plain is None:
        return None
    full = read_resource(copy.deepcopy(raw))
    if full.resource is None:
        return f"plain reader read {plain.ref}, the full reader skipped it: {full.why}"
    if (plain.resource_type, plain.ref) != (full.resource_type, full.ref):
        return f"{plain.ref} vs {full.ref}"
    differences = _differences(plain.resource_type, plain.resource, full.resource, plain.resource_type)
    return "; ".join(differences) or None


def test_the_schema_is_what_the_generator_derives_from_the_readers() -> None:
    written = (ROOT / "cds_hooks" / "plainschema.py").read_text(encoding="utf-8")
    assert written == plain_schema.render(), "run: python -m cds_hooks.devtools.plain_schema > cds_hooks/plainschema.py"


def test_the_schema_holds_elements_the_facts_are_known_to_read() -> None:
    """A sample of elements read in facts/: the derivation must find them."""
    assert FIELDS["MedicationRequest"]["meta"] == ("Meta", False)  # meta.lastUpdated for supply
    assert FIELDS["Meta"]["lastUpdated"] == ("Instant", False)
    assert FIELDS["Observation"]["component"] == ("ObservationComponent", True)
    assert FIELDS["ServiceRequest"]["occurrenceTiming"] == ("Timing", False)
    assert "repeat" in FIELDS["Timing"] and "boundsDuration" in FIELDS["TimingRepeat"]


def test_the_corpus_is_large_and_mostly_read_plainly() -> None:
    by_reader = {"plain": 0, "full": 0}
    for raw in CORPUS:
        by_reader["plain" if read_plain(raw) is not None else "full"] += 1
    # ../shared's real-world data set adds about 10,000 resources where it is present
    assert len(CORPUS) > (10_000 if SHARED_DATA.is_dir() else 1_000), len(CORPUS)
    assert by_reader["plain"] > 0.85 * len(CORPUS), by_reader


@pytest.mark.parametrize("chunk", range(8))
def test_both_readers_agree_on_every_corpus_resource(chunk: int) -> None:
    problems = [f"{raw.get('resourceType')}/{raw.get('id')}: {why}" for raw in CORPUS[chunk::8] if (why := _agree(raw))]
    assert not problems, "\n".join(problems[:20])


# -- generated mutations ----------------------------------------------------------------------

ODD_VALUES = [
    None,
    "",
    " ",
    "x ",
    " x",
    "a  b",
    "a\u00a0b",
    "2026-11-10",
    "2026-11",
    "2026-11-10T10:00:00",
    "2026-11-10T10:00:00Z",
    "2026-11-10T10:00:60Z",
    "2026-11-10T10:00:00.1234567+02:00",
    "2026-02-30",
    "2026-13-01",
    "10/11/2026",
    0,
    -1,
    1.5,
    10**12,
    True,
    [],
    {},
    [{}],
    ["x"],
    {"text": "x"},
    {"coding": [{}]},
    {"coding": [{"code": " x"}]},
    {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    {"value": "1"},
    {"value": 12.5, "unit": "g/dL"},
    {"start": "2026-11-10"},
    {"reference": "Medication/x"},
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


def _mutated(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)
    return out


PLAIN_SEEDS = [raw for raw in CORPUS if read_plain(raw) is not None]
SEED_STEP = max(1, len(PLAIN_SEEDS) // 400)
SEEDS = PLAIN_SEEDS[::SEED_STEP]


@settings(
    max_examples=600, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(st.data())
def test_both_readers_agree_on_mutated_resources(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from(SEEDS))
    paths = [p for p in _paths(raw) if p != ("resourceType",)]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(st.sampled_from(ODD_VALUES))
    mutated = _mutated(raw, path, value)
    assert _agree(mutated) is None, (path, value, _agree(mutated))


# -- elements shared between resources --------------------------------------------------------


def _condition(resource_id: str, code: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": resource_id,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "code": code,
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2024-05-01",
    }


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def test_a_repeated_element_is_read_once_and_shared() -> None:
    forget_known_text()
    code = {"coding": [{"system": "http://snomed.info/sct", "code": "49436004", "display": "Atrial fibrillation"}]}
    first, second = read_plain(_condition("c1", code)), read_plain(_condition("c2", copy.deepcopy(code)))
    assert first is not None and second is not None
    assert first.resource.code is second.resource.code  # one reading, shared
    assert first.resource.clinicalStatus is second.resource.clinicalStatus
    assert first.resource.id == "c1" and second.resource.id == "c2"
    other = read_plain(_condition("c3", {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}))
    assert other is not None and other.resource.code.coding[0].code == "38341003"  # another text, another reading


def test_an_element_that_is_not_plain_is_refused_every_time() -> None:
    forget_known_text()
    odd = {"coding": [{"system": "http://snomed.info/sct", "code": " 49436004"}]}  # a code with a leading space
    for resource_id in ("c1", "c2"):
        assert read_plain(_condition(resource_id, copy.deepcopy(odd))) is None
        assert (
            read_resource(_condition(resource_id, copy.deepcopy(odd))).resource is not None
        )  # the full reader decides


def test_forgetting_known_text_forgets_shared_elements() -> None:
    code = {"coding": [{"system": "http://snomed.info/sct", "code": "49436004"}]}
    first = read_plain(_condition("c1", code))
    forget_known_text()
    second = read_plain(_condition("c2", copy.deepcopy(code)))
    assert first is not None and second is not None
    assert first.resource.code is not second.resource.code
    assert vars(first.resource.code.coding[0]) == vars(second.resource.code.coding[0])


class _EmptiedByAnotherThread(dict[Any, Any]):
    """The shared-element memo as another thread sees it: emptied (by ``forget_known_text``
    from the memory release's idle timer, or by another request of a threaded worker at the
    memo's size limit) between any two of this thread's look-ups."""

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        self.clear()
        return found

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        self.clear()
        return found


def test_a_memo_emptied_by_another_thread_mid_read_does_not_fail_the_read(monkeypatch) -> None:
    forget_known_text()
    code = {"coding": [{"system": "http://snomed.info/sct", "code": "49436004"}]}
    assert read_plain(_condition("c1", code)) is not None  # remembered
    memo = _EmptiedByAnotherThread(plainread._KNOWN_ELEMENTS)
    assert memo  # the code is in it: the next read finds it and then sees it vanish
    monkeypatch.setattr(plainread, "_KNOWN_ELEMENTS", memo)
    reading = read_plain(_condition("c2", copy.deepcopy(code)))
    assert reading is not None
    assert vars(reading.resource.code.coding[0]) == {"system": "http://snomed.info/sct", "code": "49436004"}
