"""The FHIR sandbox server, queried over a real loopback HTTP server with `requests`.

Every response body is validated with the fhir.resources R4B models (not the default R5 ones).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from flask import Flask

from cds_hooks.devtools.fhir_server import FhirDataError, create_fhir_app, load_resources

from .support.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "external"
SYNTHEA_FILE = FIXTURES / "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json"
PATIENT_ID = "d78af07c-9cb9-4f31-9b11-c45a28f2eec8"
OBSERVATION_COUNT = 48  # Observations of this patient in the Synthea bundle
BP_PANEL_COUNT = 3  # LOINC 55284-4 panels, each with an 8480-6 and an 8462-4 component

# The prefetch templates the CDS service sends (with {id} = the patient id).
PREFETCH_TEMPLATES = [
    "Patient/{id}",
    "Condition?patient={id}",
    "MedicationRequest?patient={id}",
    "MedicationStatement?patient={id}",
    "MedicationAdministration?patient={id}",
    (
        "Observation?patient={id}&code=http://loinc.org|8480-6,http://loinc.org|85354-9,"
        "http://loinc.org|55284-4,http://loinc.org|8462-4,http://loinc.org|718-7,"
        "http://loinc.org|2160-0,http://loinc.org|33914-3,http://loinc.org|82810-3"
    ),
    "Device?patient={id}",
    "DeviceUseStatement?patient={id}",
    "AllergyIntolerance?patient={id}",
    "Procedure?patient={id}",
    "ServiceRequest?patient={id}",
    "Appointment?actor=Patient/{id}",
]


def fhir(resp: requests.Response, status: int = 200) -> dict[str, Any]:
    """Check status and media type, validate the body as R4B, and return it."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = resp.json()
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    return body


def outcome_text(resp: requests.Response, status: int) -> str:
    body = fhir(resp, status)
    assert body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in resp.text
    return " ".join(issue.get("diagnostics", "") for issue in body["issue"])


@contextmanager
def running(app: Flask) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yield its base URL."""
    with LoopbackServer(app) as server:
        yield server.url


@pytest.fixture(scope="module")
def synthea() -> Iterator[str]:
    with running(create_fhir_app(load_resources([SYNTHEA_FILE]))) as base:
        yield base


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """A folder like a developer's: FHIR in many shapes next to files that are not FHIR."""
    ref = {"reference": "Patient/pat-1"}
    write_json(tmp_path / "patient.json", {"resourceType": "Patient", "id": "pat-1"})
    write_json(tmp_path / "notes.json", {"hello": "world"})
    write_json(tmp_path / "manifest.json", [{"file": "x.json"}])
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "README.md").write_text("# not data\n", encoding="utf-8")
    ndjson = [
        {
            "resourceType": "MedicationRequest",
            "id": "mr-1",
            "status": "active",
            "intent": "order",
            "subject": ref,
            "authoredOn": "2024-05-01",
            "medicationCodeableConcept": {
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332"}]
            },
        },
        {"resourceType": "Device", "id": "dev-1", "status": "active", "patient": ref},
        {"resourceType": "AllergyIntolerance", "id": "al-1", "patient": ref},
        {"transactionTime": "2025-01-01T00:00:00Z", "type": "bulk export log line"},
    ]
    (tmp_path / "bulk" / "export.ndjson").parent.mkdir()
    (tmp_path / "bulk" / "export.ndjson").write_text(
        "\n".join(json.dumps(line) for line in ndjson) + "\n", encoding="utf-8"
    )
    write_json(
        tmp_path / "no-type-bundle.json",
        {
            "resourceType": "Bundle",
            "entry": [
                {
                    "fullUrl": "http://example.org/fhir/Observation/no-id",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "subject": ref,
                        "code": {"text": "an observation without an id"},
                    },
                },
            ],
        },
    )
    write_json(
        tmp_path / "cds" / "order-select.json",
        {
            "hook": "order-select",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {
                "userId": "Practitioner/1",
                "patientId": "pat-1",
                "selections": [],
                "draftOrders": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [
                        {
                            "resource": {
                                "resourceType": "ServiceRequest",
                                "id": "draft-1",
                                "status": "draft",
                                "intent": "order",
                                "subject": ref,
                            }
                        }
                    ],
                },
            },
            "prefetch": {
                "conditions": {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {
                            "resource": {
                                "resourceType": "Condition",
                                "id": "cond-1",
                                "subject": ref,
                                "onsetDateTime": "2020-03-01",
                                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
                            }
                        }
                    ],
                },
                "appointments": {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {
                            "resource": {
                                "resourceType": "Appointment",
                                "id": "appt-1",
                                "status": "booked",
                                "start": "2026-12-01T09:00:00Z",
                                "end": "2026-12-01T09:30:00Z",
                                "participant": [{"actor": ref, "status": "accepted"}],
                            }
                        }
                    ],
                },
                "procedure": {
                    "resourceType": "Procedure",
                    "id": "proc-1",
                    "status": "completed",
                    "subject": ref,
                    "performedPeriod": {"start": "2019-06-01T10:00:00Z"},
                },
                "nothing": None,
            },
        },
    )
    return tmp_path


# ---------------------------------------------------------------- metadata and read


def test_metadata_is_an_r4_capability_statement_listing_every_loaded_type(synthea: str, http: requests.Session) -> None:
    body = fhir(http.get(f"{synthea}/metadata"))
    assert body["resourceType"] == "CapabilityStatement"
    assert (body["fhirVersion"], body["kind"]) == ("4.0.1", "instance")
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert set(resources) == {
        "Patient",
        "Organization",
        "Practitioner",
        "Encounter",
        "Observation",
        "Immunization",
        "DiagnosticReport",
        "Claim",
        "ExplanationOfBenefit",
        "Condition",
        "Procedure",
    }
    for resource in resources.values():
        assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
    observation_params = {p["name"]: p["type"] for p in resources["Observation"]["searchParam"]}
    assert observation_params["patient"] == "reference"
    assert observation_params["code"] == "token"
    assert observation_params["date"] == "date"


def test_reading_a_patient_by_id_returns_that_patient(synthea: str, http: requests.Session) -> None:
    body = fhir(http.get(f"{synthea}/Patient/{PATIENT_ID}"))
    assert (body["resourceType"], body["id"]) == ("Patient", PATIENT_ID)


def test_reading_an_unknown_id_is_a_404_operation_outcome(synthea: str, http: requests.Session) -> None:
    assert "Patient/no-such-patient" in outcome_text(http.get(f"{synthea}/Patient/no-such-patient"), 404)


def test_an_unknown_resource_type_is_a_404_but_a_real_type_with_no_data_is_an_empty_bundle(
    synthea: str, http: requests.Session
) -> None:
    assert "Observations" in outcome_text(http.get(f"{synthea}/Observations"), 404)
    body = fhir(http.get(f"{synthea}/DeviceUseStatement", params={"patient": PATIENT_ID}))
    assert body["total"] == 0 and "entry" not in body


# ---------------------------------------------------------------- search


def test_searching_by_patient_finds_the_synthea_patients_resources_after_urn_uuid_rewriting(
    synthea: str, http: requests.Session
) -> None:
    body = fhir(http.get(f"{synthea}/Observation", params={"patient": PATIENT_ID, "_count": "100"}))
    assert body["type"] == "searchset"
    assert body["total"] == len(body["entry"]) == OBSERVATION_COUNT
    for entry in body["entry"]:
        assert entry["search"]["mode"] == "match"
        assert entry["fullUrl"] == f"{synthea}/Observation/{entry['resource']['id']}"
        assert entry["resource"]["subject"]["reference"] == f"Patient/{PATIENT_ID}"
        assert entry["resource"]["encounter"]["reference"].startswith("Encounter/")
    # `Patient/x` and `subject` work as well; another patient gets nothing.
    assert fhir(http.get(f"{synthea}/Condition", params={"patient": f"Patient/{PATIENT_ID}"}))["total"] == 1
    assert fhir(http.get(f"{synthea}/Encounter", params={"subject": PATIENT_ID}))["total"] == 3
    assert fhir(http.get(f"{synthea}/Observation", params={"patient": "someone-else"}))["total"] == 0


def test_observation_search_finds_the_bp_panel_by_its_systolic_component_code(
    synthea: str, http: requests.Session
) -> None:
    body = fhir(http.get(f"{synthea}/Observation", params={"patient": PATIENT_ID, "code": "http://loinc.org|8480-6"}))
    assert body["total"] == BP_PANEL_COUNT
    for entry in body["entry"]:
        assert entry["resource"]["code"]["coding"][0]["code"] == "55284-4"
    # Token forms: bare code = any system; `|code` = no system; `system|` = any code in it.
    query = {"patient": PATIENT_ID, "_count": "100"}
    assert fhir(http.get(f"{synthea}/Observation", params={**query, "code": "8480-6"}))["total"] == BP_PANEL_COUNT
    assert fhir(http.get(f"{synthea}/Observation", params={**query, "code": "|8480-6"}))["total"] == 0
    assert (
        fhir(http.get(f"{synthea}/Observation", params={**query, "code": "http://loinc.org|"}))["total"]
        == OBSERVATION_COUNT
    )


def test_paging_follows_next_links_until_done_and_yields_every_resource_exactly_once(
    synthea: str, http: requests.Session
) -> None:
    url: str | None = f"{synthea}/Observation?patient={PATIENT_ID}&_count=7"
    seen: list[str] = []
    pages = 0
    while url:
        body = fhir(http.get(url))
        pages += 1
        assert body["total"] == OBSERVATION_COUNT
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert "self" in links
        seen += [entry["resource"]["id"] for entry in body.get("entry", [])]
        url = links.get("next")
        assert url is None or "_offset=" in url
    assert pages == math.ceil(OBSERVATION_COUNT / 7)
    assert len(seen) == len(set(seen)) == OBSERVATION_COUNT
    everything = fhir(http.get(f"{synthea}/Observation", params={"_count": "500"}))
    assert set(seen) == {entry["resource"]["id"] for entry in everything["entry"]}


def test_count_above_the_maximum_is_capped_and_count_zero_gives_only_the_total(
    synthea: str, http: requests.Session
) -> None:
    capped = fhir(http.get(f"{synthea}/Observation", params={"_count": "100000"}))
    assert "_count=500" in capped["link"][0]["url"]
    only_total = fhir(http.get(f"{synthea}/Observation", params={"_count": "0"}))
    assert only_total["total"] == OBSERVATION_COUNT and "entry" not in only_total


def test_date_search_compares_prefixed_dates_with_effective_and_period_values(
    synthea: str, http: requests.Session
) -> None:
    def total(rtype: str, *dates: str) -> int:
        return int(fhir(http.get(f"{synthea}/{rtype}", params={"date": list(dates)}))["total"])

    by_year = {2012: 17, 2015: 10, 2018: 21}  # Observations per encounter year
    assert total("Observation", "ge2015") == by_year[2015] + by_year[2018]
    assert total("Observation", "lt2013-01-01") == by_year[2012]
    assert total("Observation", "2015") == by_year[2015]
    assert total("Observation", "ge2013", "le2016-12-31") == by_year[2015]  # repeated = AND
    assert total("Observation", "gt2018-09-17T15:29:24+00:00") == 0
    assert total("Encounter", "2015-09-14") == 1  # inside Encounter.period
    assert total("Procedure", "eq2018-09") == 1  # performedPeriod


def test_status_search_is_a_comma_separated_or(synthea: str, http: requests.Session) -> None:
    assert fhir(http.get(f"{synthea}/Observation", params={"status": "final"}))["total"] == OBSERVATION_COUNT
    assert fhir(http.get(f"{synthea}/Encounter", params={"status": "planned,finished"}))["total"] == 3
    assert fhir(http.get(f"{synthea}/Encounter", params={"status": "planned"}))["total"] == 0


@pytest.mark.parametrize(
    "query, name",
    [
        ("Observation?patient=x&value-quantity=gt5", "value-quantity"),
        ("Observation?code:text=blood", "code:text"),
        ("Condition?status=active", "status"),  # Condition has clinicalStatus, not status
        ("Patient?code=123", "code"),
    ],
)
def test_an_unknown_search_parameter_is_a_400_naming_it(
    synthea: str, http: requests.Session, query: str, name: str
) -> None:
    text = outcome_text(http.get(f"{synthea}/{query}"), 400)
    assert f"'{name}'" in text


@pytest.mark.parametrize(
    "query",
    [
        "Observation?date=yesterday",
        "Observation?date=sa2020",
        "Observation?_count=-1",
        "Observation?_offset=abc",
        "Observation?patient=",
    ],
)
def test_bad_search_values_are_a_400_operation_outcome(synthea: str, http: requests.Session, query: str) -> None:
    outcome_text(http.get(f"{synthea}/{query}"), 400)


def test_methods_other_than_get_are_a_405_operation_outcome(synthea: str, http: requests.Session) -> None:
    resp = http.post(f"{synthea}/Patient", json={"resourceType": "Patient"})
    outcome_text(resp, 405)
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize("template", PREFETCH_TEMPLATES)
def test_every_prefetch_template_of_the_cds_service_works(synthea: str, http: requests.Session, template: str) -> None:
    body = fhir(http.get(f"{synthea}/{template.format(id=PATIENT_ID)}"))
    expected = {"Patient/{id}": 1, "Condition?patient={id}": 1, "Procedure?patient={id}": 1}
    if template.startswith("Observation"):
        assert body["total"] == BP_PANEL_COUNT + 2  # + two haemoglobin (718-7) results
    elif template != "Patient/{id}":
        assert body["total"] == expected.get(template, 0)


# ---------------------------------------------------------------- CORS


def test_a_cors_preflight_is_answered_204_with_the_allowed_headers(synthea: str, http: requests.Session) -> None:
    resp = http.options(
        f"{synthea}/Observation?patient=x",
        headers={
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status_code == 204 and resp.content == b""
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Private-Network" not in resp.headers  # not asked for
    private = http.options(
        f"{synthea}/Patient/x",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert private.headers["Access-Control-Allow-Private-Network"] == "true"
    # Ordinary and error responses carry the header too.
    for path in ("metadata", "Patient/nobody"):
        assert http.get(f"{synthea}/{path}").headers["Access-Control-Allow-Origin"] == "*"


def test_a_list_of_cors_origins_allows_only_those_origins(http: requests.Session) -> None:
    app = create_fhir_app(load_resources([SYNTHEA_FILE]), cors_origins="https://a.example, https://b.example")
    with running(app) as base:
        allowed = http.get(f"{base}/metadata", headers={"Origin": "https://b.example"})
        fhir(allowed)
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
        assert "Origin" in allowed.headers["Vary"]
        other = http.get(f"{base}/metadata", headers={"Origin": "https://evil.example"})
        fhir(other)
        assert "Access-Control-Allow-Origin" not in other.headers


# ---------------------------------------------------------------- loading


def test_a_folder_with_non_fhir_json_still_loads_and_serves_its_fhir(
    mixed_folder: Path, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cds_hooks.devtools.fhir_server"):
        index = load_resources([mixed_folder])
    warned = " ".join(record.getMessage() for record in caplog.records)
    for name in ("notes.json", "manifest.json", "broken.json", "export.ndjson"):
        assert name in warned
    assert "README.md" not in warned
    with running(create_fhir_app(index)) as base:
        assert fhir(http.get(f"{base}/Patient/pat-1"))["id"] == "pat-1"
        for rtype in ("MedicationRequest", "Device", "AllergyIntolerance", "Condition", "Observation", "Procedure"):
            body = fhir(http.get(f"{base}/{rtype}", params={"patient": "pat-1"}))
            assert body["total"] == 1, rtype
        warfarin = fhir(
            http.get(
                f"{base}/MedicationRequest",
                params={"patient": "Patient/pat-1", "code": "http://www.nlm.nih.gov/research/umls/rxnorm|855332"},
            )
        )
        assert warfarin["total"] == 1
        for query in ({"actor": "Patient/pat-1"}, {"patient": "pat-1"}, {"date": "ge2026-12"}):
            assert fhir(http.get(f"{base}/Appointment", params=query))["total"] == 1
        assert fhir(http.get(f"{base}/Procedure", params={"date": "ge2025"}))["total"] == 1


def test_a_cds_hooks_request_file_loads_its_prefetch_but_not_its_draft_orders(
    mixed_folder: Path, http: requests.Session
) -> None:
    index = load_resources([mixed_folder / "cds" / "order-select.json"])
    assert {rtype: sorted(ids) for rtype, ids in index.by_type.items()} == {
        "Condition": ["cond-1"],
        "Appointment": ["appt-1"],
        "Procedure": ["proc-1"],
    }
    with running(create_fhir_app(index)) as base:
        outcome_text(http.get(f"{base}/ServiceRequest/draft-1"), 404)
        assert fhir(http.get(f"{base}/ServiceRequest", params={"patient": "pat-1"}))["total"] == 0


def test_a_resource_without_an_id_gets_the_same_generated_id_on_every_load(mixed_folder: Path) -> None:
    first = load_resources([mixed_folder]).of_type("Observation")
    second = load_resources([mixed_folder]).of_type("Observation")
    assert len(first) == 1 and first[0]["id"].startswith("gen-")
    assert first[0]["id"] == second[0]["id"]


def test_urn_uuid_references_are_resolved_across_files_and_unknown_ones_are_left_alone(tmp_path: Path) -> None:
    organization = {"resourceType": "Organization", "id": "org-1"}
    patient_uuid = "9e1b0b5e-0000-4000-8000-000000000001"
    patient_without_id = {
        "resourceType": "Patient",
        "managingOrganization": {"reference": "urn:uuid:org-1"},
        "generalPractitioner": [{"reference": "urn:uuid:not-loaded"}],
    }
    write_json(
        tmp_path / "a-org.json",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"fullUrl": "urn:uuid:org-1", "resource": organization}],
        },
    )
    write_json(
        tmp_path / "b-patient.json",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{patient_uuid}", "resource": patient_without_id}],
        },
    )
    index = load_resources([tmp_path])
    patient = index.get("Patient", patient_uuid)
    assert patient is not None
    assert patient["managingOrganization"]["reference"] == "Organization/org-1"
    assert patient["generalPractitioner"][0]["reference"] == "urn:uuid:not-loaded"


def test_a_missing_path_is_an_error_not_an_empty_server(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_resources([tmp_path / "nowhere"])


# ---------------------------------------------------------------- one patient per file

REQUESTS = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "requests"
PREGNANT = "01-pregnant-whole-body-order-select"


@pytest.fixture(scope="module")
def all_fixtures() -> Iterator[str]:
    with running(create_fhir_app(load_resources([REQUESTS]))) as base:
        yield base


def test_every_fixture_file_serves_its_own_patient(all_fixtures: str, http: requests.Session) -> None:
    index = load_resources([REQUESTS])
    files = sorted(REQUESTS.glob("*.json"))
    assert sorted(index.patients_by_source) == [str(f) for f in files]
    for file in files:
        assert index.patients_by_source[str(file)] == [f"{file.stem}.case-patient"]
    assert "case-patient" not in index.by_type["Patient"]


def test_fixture_01s_patient_is_the_pregnant_woman_of_fixture_01(all_fixtures: str, http: requests.Session) -> None:
    pid = f"{PREGNANT}.case-patient"
    patient = fhir(http.get(f"{all_fixtures}/Patient/{pid}"))
    original = json.loads((REQUESTS / f"{PREGNANT}.json").read_text())["prefetch"]["patient"]
    assert patient["gender"] == original["gender"] == "female"
    assert patient["birthDate"] == original["birthDate"]
    conditions = fhir(http.get(f"{all_fixtures}/Condition", params={"patient": pid}))
    assert [e["resource"]["code"]["coding"][0]["code"] for e in conditions["entry"]] == ["77386006"]
    assert conditions["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    observations = fhir(http.get(f"{all_fixtures}/Observation", params={"patient": f"Patient/{pid}"}))
    assert observations["total"] == 6
    assert fhir(http.get(f"{all_fixtures}/Condition", params={"patient": "case-patient"}))["total"] == 0


def test_identical_copies_in_several_files_keep_their_ids(tmp_path: Path) -> None:
    organization = {"resourceType": "Organization", "id": "org-1", "name": "Clinic"}
    for name in ("a.json", "b.json"):
        write_json(
            tmp_path / name,
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": organization},
                    {
                        "resource": {
                            "resourceType": "Patient",
                            "id": f"pat-{name[0]}",
                            "managingOrganization": {"reference": "Organization/org-1"},
                        }
                    },
                ],
            },
        )
    index = load_resources([tmp_path])
    assert sorted(index.by_type["Organization"]) == ["org-1"]
    assert sorted(index.by_type["Patient"]) == ["pat-a", "pat-b"]


def test_a_clash_that_file_names_cannot_separate_is_refused(tmp_path: Path) -> None:
    for folder, gender in (("x", "male"), ("y", "female")):
        write_json(tmp_path / folder / "same-name.json", {"resourceType": "Patient", "id": "p", "gender": gender})
    with pytest.raises(FhirDataError, match=r"both define Patient/same-name\.p differently"):
        load_resources([tmp_path])


# ---------------------------------------------------------------- POST [type]/_search


def test_post_search_with_a_form_body_answers_like_get(synthea: str, http: requests.Session) -> None:
    query = {"patient": PATIENT_ID, "code": "http://loinc.org|55284-4", "_count": "2"}
    by_get = fhir(http.get(f"{synthea}/Observation", params=query))
    by_post = fhir(http.post(f"{synthea}/Observation/_search", data=query))
    assert by_post["total"] == by_get["total"] == BP_PANEL_COUNT
    assert [e["fullUrl"] for e in by_post["entry"]] == [e["fullUrl"] for e in by_get["entry"]]
    assert [link["url"] for link in by_post["link"]] == [link["url"] for link in by_get["link"]]
    # URL and body parameters are combined.
    mixed = fhir(
        http.post(f"{synthea}/Observation/_search?patient={PATIENT_ID}", data={"code": "http://loinc.org|55284-4"})
    )
    assert mixed["total"] == BP_PANEL_COUNT


def test_post_search_refuses_a_json_body_and_unknown_parameters(synthea: str, http: requests.Session) -> None:
    assert "form-urlencoded" in outcome_text(
        http.post(f"{synthea}/Observation/_search", json={"patient": PATIENT_ID}), 415
    )
    assert "Unknown search parameter 'colour'" in outcome_text(
        http.post(f"{synthea}/Observation/_search", data={"colour": "red"}), 400
    )
