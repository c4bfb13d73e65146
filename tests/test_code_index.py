"""What a fact family derives from a code alone is computed once per concept object in a
call (cds_hooks/facts/context.py, CodeIndex.derived): the reader hands resources with the same
code one shared concept, so a record's repeated problems and procedures cost one look-up each."""

from __future__ import annotations

from cds_hooks.facts.context import CodeIndex
from cds_hooks.plainread import read_plain
from cds_hooks.terminology import Terminology


def _condition(resource_id: str) -> dict[str, object]:
    return {
        "resourceType": "Condition",
        "id": resource_id,
        "subject": {"reference": "Patient/p"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195295006", "display": "Raynaud's disease"}]},
    }


def test_one_computation_per_concept_and_name(terminology: Terminology) -> None:
    index = CodeIndex(terminology)
    calls: list[object] = []

    def flags(concept: object) -> dict[str, bool]:
        calls.append(concept)
        return {"seen": True}

    first, second = (read_plain(_condition(f"c{n}")) for n in range(2))
    assert first is not None and second is not None
    code = first.resource.code
    assert second.resource.code is code  # the reader shares the concept of equal JSON

    assert index.derived("flags", code, flags) is index.derived("flags", second.resource.code, flags)
    assert calls == [code]
    index.derived("other", code, flags)  # another family's question is its own
    assert len(calls) == 2


def test_an_equal_concept_of_another_object_is_computed_again(terminology: Terminology) -> None:
    index = CodeIndex(terminology)
    calls: list[object] = []
    one, other = object(), object()
    index.derived("flags", one, calls.append)
    index.derived("flags", other, calls.append)
    assert calls == [one, other]
