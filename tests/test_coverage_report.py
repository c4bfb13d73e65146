"""`cryo-cds rules coverage`: every catalogue rule with its case counts and whether the real
patients in fhir_fixtures/external (six SMART Synthea records) ever fire it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cds_hooks import cli
from cds_hooks.cli.rules import default_coverage_paths
from cds_hooks.devtools.coverage import (
    coverage_rows,
    ndjson_patient_bundles,
    read_patient_bundles,
    record_date,
)

from .conftest import RULES_DIR, TEST_CONFIG
from .test_catalogue import CATALOGUE_IDS

FIXTURES = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "external"


def _case_counts(rule_id: str) -> tuple[int, int]:
    cases = RULES_DIR / rule_id / "cases"
    return len(list(cases.glob("fires-*.yaml"))), len(list(cases.glob("silent-*.yaml")))


def _run_json(capsys, *args: str) -> list[dict]:
    assert cli.main(["rules", "coverage", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_command_lists_every_catalogue_rule_with_its_cases(capsys, rulebook) -> None:
    rows = _run_json(capsys, str(FIXTURES))
    by_id = {row["id"]: row for row in rows}
    assert sorted(by_id) == sorted(CATALOGUE_IDS)
    assert len(rows) == len(by_id)
    for rule_id in CATALOGUE_IDS:
        row = by_id[rule_id]
        fires, silent = _case_counts(rule_id)
        assert (row["cases_fires"], row["cases_silent"]) == (fires, silent), rule_id
        assert fires >= 1 and silent >= 1, rule_id
        assert row["version"] == rulebook.by_id[rule_id].version
        assert row["source"] == rulebook.by_id[rule_id].sources[0]
        assert isinstance(row["fired_on_real_data"], bool)
        assert row["fired_on_real_data"] == (row["real_data_requests"] > 0)
    # Six patient bundles in fhir_fixtures/external, two requests (wbc, ln2) each.
    assert {(r["real_data_patients"], r["real_data_total_requests"]) for r in rows} == {(6, 12)}
    # What those six records fire (see tests/test_real_data.py for the card-by-card reading).
    fired = {r["id"]: r["real_data_requests"] for r in rows}
    assert fired["CI-ICE-TEST"] == 6  # every wbc request
    assert fired["PR-SYS-EXAM"] == 6  # every wbc request
    assert fired["CI-DMNEURO"] == 4  # Parker Casper, Morris Lockman: both orders
    assert fired["DI-ANTICOAG"] == 6  # Parker, Derek, Jerrell: both orders
    assert fired["CI-PREG"] == 2  # Nereida Rogahn: both orders
    assert fired["CI-ARR"] == 3  # AF, wbc only
    assert fired["PR-SYS-SAFETY"] == 1  # only Clemente Kreiger's wbc has no critical card
    for never in ("TD-SYS-TEMP", "TD-FREEZE", "LC-HAIR", "MD-NO-DATA", "CI-RAYNAUD", "CI-DEVICE-CARDIAC"):
        assert fired[never] == 0, never


def test_the_table_output_has_a_row_per_rule(capsys) -> None:
    assert cli.main(["rules", "coverage", str(FIXTURES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["id", "version", "fires", "silent"]
    assert sorted(line.split()[0] for line in out[1:]) == sorted(CATALOGUE_IDS)


def test_a_missing_path_is_an_error(capsys, tmp_path) -> None:
    assert cli.main(["rules", "coverage", str(tmp_path / "nope")]) == 2
    assert "no such path" in capsys.readouterr().err


def test_default_paths_are_the_fixtures_and_shared_data_if_present() -> None:
    paths = default_coverage_paths()
    assert paths[0] == FIXTURES
    shared = Path(__file__).resolve().parents[2] / "shared" / "external" / "fhir-data"
    assert paths[1:] == ([shared] if shared.is_dir() else [])


def test_reader_takes_one_patient_bundles_and_ndjson_patients(tmp_path) -> None:
    (tmp_path / "one.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "a"}},
                    {
                        "resource": {
                            "resourceType": "Encounter",
                            "id": "e",
                            "status": "finished",
                            "period": {"start": "2020-02-03T10:00:00Z"},
                        }
                    },
                ],
            }
        )
    )
    (tmp_path / "same-bytes-copy.json").write_bytes((tmp_path / "one.json").read_bytes())
    (tmp_path / "org.json").write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": {"resourceType": "Organization", "id": "o"}}],
            }
        )
    )
    (tmp_path / "patient.json").write_text(json.dumps({"resourceType": "Patient", "id": "b"}))
    (tmp_path / "broken.json").write_text("{nope")
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    (bulk / "Patient.000.ndjson").write_text("\n".join(json.dumps({"resourceType": "Patient", "id": p}) for p in "xy"))
    (bulk / "Condition.000.ndjson").write_text(
        json.dumps(
            {
                "resourceType": "Condition",
                "id": "c",
                "subject": {"reference": "Patient/y"},
                "onsetDateTime": "2019-05-01",
            }
        )
    )
    (bulk / "log.ndjson").write_text(json.dumps({"eventId": "kickoff"}))
    found = read_patient_bundles([tmp_path])
    # the byte-identical copy, the organisation bundle, the bare Patient, broken JSON and the log are skipped
    assert sorted(pb.label.rsplit("/", 1)[-1] for pb in found) == ["one.json", "x", "y"]
    by_label = {pb.label.rsplit("/", 1)[-1]: pb.bundle for pb in found}
    assert record_date(by_label["one.json"]) == datetime(2020, 2, 3, 10, tzinfo=UTC)
    assert record_date(by_label["y"]) == datetime(2019, 5, 1, tzinfo=UTC)
    assert sorted(e["resource"]["resourceType"] for e in by_label["y"]["entry"]) == ["Condition", "Patient"]
    assert len(ndjson_patient_bundles(bulk)) == 2


def test_coverage_rows_with_a_fixed_clock(rulebook, terminology) -> None:
    # In 2026 the records are years old: no BP day, HbA1c or Hb in the windows any more.
    morris = FIXTURES / "Morris_Lockman_cd9e9826-aea1-4682-adc0-c1d97633bf31.json"
    rows = {r["id"]: r for r in coverage_rows(TEST_CONFIG, [morris], now=datetime(2026, 11, 21, tzinfo=UTC))}
    assert rows["CI-HTN"]["real_data_requests"] == 1  # info: hypertension, no BP in 12 months
    assert rows["CI-DM-UNCTRL"]["real_data_requests"] == 1  # info: diabetes, no HbA1c in 6 months
    assert rows["CI-DMNEURO"]["real_data_requests"] == 2
