"""Conformance checks: the JSON Schema, cds_hooks.devtools.conformance.validate and openapi.yaml.

The example payloads are verbatim copies under tests/data/cds-hooks-examples/ (see its
README.md for sources and known defects), so this suite does not need /work/shared.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from cds_hooks.devtools.conformance import load_schema, validate

DATA = Path(__file__).parent / "data" / "cds-hooks-examples"
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"


def load(relative: str | Path) -> Any:
    return json.loads((DATA / relative).read_text(encoding="utf-8"))


def names(*patterns: str) -> list[str]:
    found = {p.relative_to(DATA).as_posix() for pattern in patterns for p in DATA.glob(pattern)}
    return sorted(found)


DISCOVERY_FILES = names("v2-discovery-response*.json")
REQUEST_FILES = names("*request*.json", "captured-sandbox/*request*.json")
FEEDBACK_FILES = names("v2-feedback-*.json", "captured-sandbox/*feedback*.json")
LIBRARY_CONTEXT_FILES = names("library-order-*-context-*.json")

# Request files whose documented defect (spec §14, data README) makes them invalid
# for us, with the problem we expect. None today: every documented request defect is
# in FHIR content (R4 doseAndRate as an object, U+2011 in ids, patientId != subject,
# empty coding from the sandbox) or is a production-only rule (https fhirServer),
# and the validator is deliberately lenient there.
KNOWN_REQUEST_DEFECTS: dict[str, str] = {}


def only(problems: list[str], expected: str) -> None:
    assert problems == [expected]


# --------------------------------------------------------------------------- data


def test_the_copied_example_files_are_all_present() -> None:
    assert DISCOVERY_FILES == [
        "v2-discovery-response-with-extension.json",
        "v2-discovery-response.json",
    ]
    assert len(REQUEST_FILES) == 10
    assert len(FEEDBACK_FILES) == 6
    assert len(LIBRARY_CONTEXT_FILES) == 6
    assert (DATA / "README.md").is_file()


# ---------------------------------------------------------------------- discovery


@pytest.mark.parametrize("name", DISCOVERY_FILES)
def test_official_discovery_responses_are_valid(name: str) -> None:
    assert validate("discovery", load(name)) == []


def test_the_sandbox_stub_discovery_document_is_valid() -> None:
    assert validate("discovery", load("captured-sandbox/stub-discovery-used.json")) == []


def test_a_server_with_no_services_may_return_an_empty_services_list() -> None:
    assert validate("discovery", {"services": []}) == []


def test_the_quickstart_discovery_using_name_instead_of_title_is_reported() -> None:
    problems = validate("discovery", load("negative/docs-quickstart-discovery-uses-name.json"))
    only(problems, "/services/0: Additional properties are not allowed ('name' was unexpected)")


def test_an_empty_prefetch_template_and_a_null_title_are_reported_in_discovery() -> None:
    doc = load("v2-discovery-response.json")
    doc["services"][0]["prefetch"]["patientToGreet"] = ""
    doc["services"][1]["title"] = None
    assert validate("discovery", doc) == [
        ("/services/0/prefetch/patientToGreet: empty string: omit an optional attribute instead (§1)"),
        "/services/1/title: null value: omit an optional attribute instead of sending null (§1)",
    ]


# ------------------------------------------------------------------------ request


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_official_and_captured_requests_are_valid_unless_a_defect_is_documented(name: str) -> None:
    problems = validate("request", load(name))
    if name in KNOWN_REQUEST_DEFECTS:
        assert any(KNOWN_REQUEST_DEFECTS[name] in p for p in problems), problems
    else:
        assert problems == []


@pytest.mark.parametrize("name", LIBRARY_CONTEXT_FILES)
def test_library_hook_contexts_are_valid_once_wrapped_in_a_request(name: str) -> None:
    hook = "order-select" if "order-select" in name else "order-sign"
    request = {"hook": hook, "hookInstance": HOOK_INSTANCE, **load(name)}
    assert validate("request", request) == []


def test_a_request_may_carry_empty_values_inside_fhir_content_as_the_sandbox_does() -> None:
    request = load("captured-sandbox/sandbox-pama-request-order-select.json")
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    assert draft["code"]["coding"] == [{}] and draft["reasonCode"] == []
    assert validate("request", request) == []


def test_a_prefetch_that_is_empty_or_holds_null_is_accepted() -> None:
    request = load("docs-request-order-select-radiology-servicerequest.json")
    assert validate("request", {**request, "prefetch": {}}) == []
    assert validate("request", {**request, "prefetch": {"patient": None}}) == []


def test_the_legacy_opioid_request_shape_is_reported() -> None:
    problems = validate("request", load("negative/docs-legacy-request-opioid-medication-prescribe-shape.json"))
    assert problems == [
        "/context: 'draftOrders' is a required property",
        "/prefetch/medication: 'resourceType' is a required property",
    ]


def test_fhir_authorization_without_fhir_server_is_reported() -> None:
    request = load("inferno-crd-request-order-sign.json")
    del request["fhirServer"]
    only(
        validate("request", request),
        "(root): fhirServer is required when fhirAuthorization is present (cds-r-1)",
    )


def test_an_order_select_request_without_selections_is_reported() -> None:
    request = load("inferno-crd-request-order-select.json")
    del request["context"]["selections"]
    only(validate("request", request), "/context: 'selections' is a required property")


def test_an_order_sign_request_without_draft_orders_is_reported() -> None:
    request = load("captured-sandbox/sandbox-rxsign-request-order-sign.json")
    del request["context"]["draftOrders"]
    only(validate("request", request), "/context: 'draftOrders' is a required property")


def test_a_hook_instance_that_is_not_a_uuid_and_a_bare_user_id_are_reported() -> None:
    request = load("docs-request-order-select-radiology-servicerequest.json")
    request["hookInstance"] = "not-a-uuid"
    request["context"]["userId"] = "123"
    assert validate("request", request) == [
        "/context/userId: must be a relative reference 'ResourceType/id'",
        "/hookInstance: must be a UUID such as d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    ]


def test_a_token_type_other_than_bearer_is_reported() -> None:
    request = load("v2-request-patient-view.json")
    request["fhirAuthorization"]["token_type"] = "MAC"
    only(validate("request", request), "/fhirAuthorization/token_type: 'Bearer' was expected")


# ----------------------------------------------------------------------- response


def good_card() -> dict[str, Any]:
    """A card using every attribute, valid as written; bad cases mutate a copy."""
    return {
        "uuid": "0b2d8f52-3a55-4b4f-9d47-7a6a1f4c8f10",
        "summary": "Cryotherapy is contraindicated with cold urticaria",
        "detail": "The patient has **cold urticaria** on the problem list.",
        "indicator": "critical",
        "source": {
            "label": "cryo-cds",
            "url": "https://cds.example.org/about",
            "topic": {"system": "http://example.org/topics", "code": "cryo"},
        },
        "suggestions": [
            {
                "label": "Cancel the cryotherapy order",
                "uuid": "6f0c1f3e-2a4b-4bb7-8f6e-51f0c5a2e5a1",
                "isRecommended": True,
                "actions": [
                    {
                        "type": "delete",
                        "description": "Remove the draft cryotherapy order",
                        "resourceId": "ServiceRequest/cryo-1",
                    }
                ],
            },
            {
                "label": "Add a note instead",
                "actions": [
                    {
                        "type": "create",
                        "description": "Create a communication request",
                        "resource": {
                            "resourceType": "CommunicationRequest",
                            "status": "draft",
                            "note": [{"text": "Cold urticaria: avoid cryotherapy"}],
                        },
                    }
                ],
            },
        ],
        "selectionBehavior": "at-most-one",
        "overrideReasons": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                "code": "risk-benefit-ratio",
                "display": "Benefit outweighs risk",
            }
        ],
        "links": [
            {"label": "Guideline", "url": "https://example.org/guideline", "type": "absolute"},
            {
                "label": "Risk app",
                "url": "https://smart.example.org/launch",
                "type": "smart",
                "appContext": '{"view":"cryo"}',
            },
        ],
    }


def response_with(card: dict[str, Any]) -> dict[str, Any]:
    return {"cards": [card]}


@pytest.mark.parametrize("name", ["v2-response-empty.json", "v2-response-cards.json"])
def test_the_official_empty_and_cards_responses_are_valid(name: str) -> None:
    assert validate("response", load(name)) == []


@pytest.mark.parametrize("name", ["docs-response-radiology-system-action.json", "v2-response-system-actions.json"])
def test_system_action_responses_are_valid_as_system_actions_may_omit_description(
    name: str,
) -> None:
    assert validate("response", load(name)) == []


def test_the_hand_made_card_using_every_attribute_is_valid() -> None:
    assert validate("response", response_with(good_card())) == []


def test_the_autolaunchable_example_is_reported_for_its_missing_indicator() -> None:
    problems = validate("response", load("v2-response-autolaunchable.json"))
    only(problems, "/cards/0: 'indicator' is a required property")


def test_the_quickstart_success_indicator_is_reported() -> None:
    problems = validate("response", load("negative/docs-quickstart-response-indicator-success.json"))
    only(problems, "/cards/0/indicator: 'success' is not one of ['info', 'warning', 'critical']")


def test_the_quickstart_bare_card_with_a_null_url_is_reported() -> None:
    card = load("negative/docs-quickstart-card-bare-url-null.json")
    as_is = validate("response", card)
    assert "(root): 'cards' is a required property" in as_is
    assert "/source/url: null value: omit an optional attribute instead of sending null (§1)" in as_is
    only(
        validate("response", response_with(card)),
        "/cards/0/source/url: null value: omit an optional attribute instead of sending null (§1)",
    )


def test_the_legacy_bare_card_without_a_source_is_reported() -> None:
    card = load("negative/docs-legacy-bare-card-opioid.json")
    only(validate("response", response_with(card)), "/cards/0: 'source' is a required property")


def test_the_inferno_cards_are_each_valid_but_their_reused_uuids_are_reported() -> None:
    cards = load("inferno-crd-valid-cards-array.json")
    for card in cards:
        assert validate("response", response_with(card)) == []
    assert validate("response", {"cards": cards}) == [
        "/cards/1/uuid: duplicate card uuid 'jksfjuisldklsior' (first used at /cards/0)",
        "/cards/6/uuid: duplicate card uuid 'jksfghisldlrldsse' (first used at /cards/5)",
    ]


def test_a_summary_of_140_characters_is_reported_and_139_is_accepted() -> None:
    card = good_card()
    card["summary"] = "x" * 139
    assert validate("response", response_with(card)) == []
    card["summary"] = "x" * 140
    only(
        validate("response", response_with(card)),
        "/cards/0/summary: summary must be shorter than 140 characters (§card-attributes); this one has 140",
    )


def test_suggestions_without_selection_behavior_are_reported() -> None:
    card = good_card()
    del card["selectionBehavior"]
    only(
        validate("response", response_with(card)),
        "/cards/0: selectionBehavior is required when suggestions are present (cds-resp-6)",
    )


def test_two_recommended_suggestions_with_at_most_one_are_reported() -> None:
    card = good_card()
    card["suggestions"][1]["isRecommended"] = True
    only(
        validate("response", response_with(card)),
        "/cards/0/suggestions: selectionBehavior 'at-most-one' allows at most one suggestion "
        "with isRecommended: true (cds-resp-1)",
    )
    card["selectionBehavior"] = "any"
    assert validate("response", response_with(card)) == []


def test_an_override_reason_without_display_is_reported() -> None:
    card = good_card()
    del card["overrideReasons"][0]["display"]
    only(
        validate("response", response_with(card)),
        "/cards/0/overrideReasons/0: each overrideReasons Coding must have a display (cds-resp-4)",
    )


def test_app_context_on_an_absolute_link_is_reported() -> None:
    card = good_card()
    card["links"][0]["appContext"] = "x"
    only(
        validate("response", response_with(card)),
        "/cards/0/links/0/type: appContext is only allowed on links whose type is 'smart' (cds-resp-3)",
    )


def test_a_suggestion_action_without_description_is_reported() -> None:
    card = good_card()
    del card["suggestions"][0]["actions"][0]["description"]
    only(
        validate("response", response_with(card)),
        "/cards/0/suggestions/0/actions/0: an action in a suggestion must have a description (cds-resp-5)",
    )


def test_an_empty_string_deep_in_a_card_is_reported() -> None:
    card = good_card()
    card["suggestions"][1]["actions"][0]["resource"]["note"][0]["text"] = ""
    only(
        validate("response", response_with(card)),
        "/cards/0/suggestions/1/actions/0/resource/note/0/text: empty string: omit an optional attribute instead (§1)",
    )


def test_a_null_value_is_reported_once() -> None:
    card = good_card()
    card["detail"] = None
    only(
        validate("response", response_with(card)),
        "/cards/0/detail: null value: omit an optional attribute instead of sending null (§1)",
    )


def test_empty_arrays_and_objects_in_a_card_are_reported() -> None:
    card = good_card()
    card["links"] = []
    card["extension"] = {}
    assert validate("response", response_with(card)) == [
        "/cards/0/extension: empty object: omit an optional attribute instead (§1)",
        "/cards/0/links: empty array: omit an optional attribute instead (§1)",
    ]


def test_a_duplicate_card_uuid_is_reported() -> None:
    first, second = good_card(), good_card()
    second["summary"] = "Another card"
    only(
        validate("response", {"cards": [first, second]}),
        "/cards/1/uuid: duplicate card uuid '0b2d8f52-3a55-4b4f-9d47-7a6a1f4c8f10' (first used at /cards/0)",
    )


def test_a_create_action_without_a_resource_is_reported() -> None:
    card = good_card()
    del card["suggestions"][1]["actions"][0]["resource"]
    only(
        validate("response", response_with(card)),
        "/cards/0/suggestions/1/actions/0: create and update actions must carry the resource (§action)",
    )


def test_an_unknown_card_attribute_is_reported() -> None:
    card = good_card()
    card["priority"] = 1
    only(
        validate("response", response_with(card)),
        "/cards/0: Additional properties are not allowed ('priority' was unexpected)",
    )


# ----------------------------------------------------------------------- feedback


def accepted_feedback() -> dict[str, Any]:
    return copy.deepcopy(load("v2-feedback-accepted.json"))


@pytest.mark.parametrize("name", FEEDBACK_FILES)
def test_official_and_captured_feedback_is_valid(name: str) -> None:
    assert validate("feedback", load(name)) == []


def test_feedback_accepted_without_accepted_suggestions_is_reported() -> None:
    body = accepted_feedback()
    del body["feedback"][0]["acceptedSuggestions"]
    only(
        validate("feedback", body),
        "/feedback/0: acceptedSuggestions is required when outcome is 'accepted' (cds-fb-2)",
    )


def test_feedback_overridden_with_an_empty_override_reason_is_reported() -> None:
    body = load("v2-feedback-overridden-with-reason.json")
    body["feedback"][0]["overrideReason"] = {}
    only(
        validate("feedback", body),
        "/feedback/0/overrideReason: overrideReason needs a reason and/or a userComment (cds-fb-3)",
    )


@pytest.mark.parametrize(
    "timestamp",
    ["2021-12-11 10:05:31Z", "2021-12-11T10:05:31", "2021-13-11T10:05:31Z", "yesterday"],
)
def test_an_outcome_timestamp_that_is_not_rfc3339_is_reported(timestamp: str) -> None:
    body = accepted_feedback()
    body["feedback"][0]["outcomeTimestamp"] = timestamp
    only(
        validate("feedback", body),
        "/feedback/0/outcomeTimestamp: must be an RFC 3339 date-time such as 2021-12-11T10:05:31Z (§feedback)",
    )


@pytest.mark.parametrize("timestamp", ["1985-04-12T23:20:50.52Z", "2021-12-11T10:05:31+01:00", "2016-12-31T23:59:60Z"])
def test_rfc3339_timestamps_with_fractions_or_offsets_are_accepted(timestamp: str) -> None:
    body = accepted_feedback()
    body["feedback"][0]["outcomeTimestamp"] = timestamp
    assert validate("feedback", body) == []


def test_an_unknown_outcome_is_reported() -> None:
    body = load("v2-feedback-overridden-no-reason.json")
    body["feedback"][0]["outcome"] = "ignored"
    only(
        validate("feedback", body),
        "/feedback/0/outcome: 'ignored' is not one of ['accepted', 'overridden']",
    )


# --------------------------------------------------------------------- the API


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        validate("card", {})  # type: ignore[arg-type]


def test_a_document_that_is_not_an_object_is_reported_once_at_the_root() -> None:
    only(validate("response", []), "(root): [] is not of type 'object'")
    only(validate("discovery", None), "(root): None is not of type 'object'")
    only(validate("response", {}), "(root): 'cards' is a required property")


def test_the_schema_is_valid_draft_2020_12_and_exposes_the_named_definitions() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "oneOf" not in schema
    expected = {
        "discoveryResponse",
        "service",
        "serviceRequest",
        "fhirAuthorization",
        "prefetch",
        "orderSelectContext",
        "orderSignContext",
        "response",
        "card",
        "source",
        "suggestion",
        "action",
        "systemAction",
        "link",
        "coding",
        "overrideReasons",
        "feedbackRequest",
        "feedback",
    }
    assert expected <= set(schema["$defs"])


# ------------------------------------------------------------------------ OpenAPI


def openapi() -> dict[str, Any]:
    text = resources.files("cds_hooks").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local refs are expected: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_openapi_document_parses_as_yaml_and_is_openapi_3_1() -> None:
    doc = openapi()
    assert doc["openapi"].startswith("3.1.")


def test_every_ref_in_the_openapi_document_resolves() -> None:
    doc = openapi()
    found = refs(doc)
    assert found
    for ref in found:
        try:
            resolve(doc, ref)
        except (KeyError, TypeError) as error:
            pytest.fail(f"{ref} does not resolve ({error!r})")


def test_the_openapi_schemas_are_copies_of_the_json_schema_definitions() -> None:
    copied = json.loads(json.dumps(load_schema()["$defs"]).replace('"#/$defs/', '"#/components/schemas/'))
    schemas = openapi()["components"]["schemas"]
    for name, definition in copied.items():
        assert schemas.get(name) == definition, f"components/schemas/{name} drifted"


def test_the_openapi_document_describes_the_service_endpoints() -> None:
    doc = openapi()
    paths = doc["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert codes("/cds-services", "get") >= {"200"}
    assert codes("/cds-services/", "get") >= {"200"}
    assert codes("/cds-services/{id}", "post") == {"200", "400", "401", "404", "412", "413", "415", "503"}
    assert codes("/cds-services/{id}/feedback", "post") >= {
        "200",
        "400",
        "401",
        "404",
        "413",
        "415",
    }
    assert codes("/healthz", "get") == {"200"}
    service_id = doc["components"]["parameters"]["serviceId"]["schema"]["enum"]
    assert service_id == ["cryotherapy-order-select", "cryotherapy-order-sign"]
    scheme = doc["components"]["securitySchemes"]["cdsClientJwt"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    error = doc["components"]["schemas"]["error"]
    assert set(error["required"]) == {"error", "detail", "operationOutcome"}
