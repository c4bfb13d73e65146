"""What-if replay on a decision log filled by the load harness (gunicorn, real HTTP): with a
rules folder in which one threshold changes, the replay reports exactly the orders whose
stored facts lie between the old and the new threshold (computed here from the stored facts,
independently of the replay), nothing else; a rule that needs facts the log does not keep
is reported as such; the CLI and the console show the same diff."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from cds_hooks.audit.models import Decision, DecisionOrder
from cds_hooks.audit.store import AuditStore
from cds_hooks.factrecord import facts_from_record
from cds_hooks.policy import NO_POLICY, apply_section, parse_policy
from cds_hooks.rulebook import load_rulebook
from cds_hooks.whatif import replay

from .conftest import RULES_DIR
from .support import load
from .support.cli import cryo

CALLS, CLIENTS = 150, 4
OLD_LIMIT, NEW_LIMIT = 30, 60  # TD-FREEZE: freeze longer than this many seconds


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A SQLite or PostgreSQL decision log written by gunicorn under the load harness."""
    if request.param == "postgresql" and (reason := load.postgres_reachable()):
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(f"{reason}; start it, or set CI=1 to turn this skip into a failure")
    workdir = tmp_path_factory.mktemp("whatif")
    with load.throwaway_database(request.param, workdir) as db_url:
        with load.gunicorn(db_url, 1, 4, workdir) as server:
            result = load.run_load(server, CALLS, CLIENTS, kill_worker=False, seed=11)
        assert len(result.ok_calls) == CALLS
        yield db_url, workdir


@pytest.fixture(scope="module")
def store(logged: tuple[str, Path]) -> Iterator[AuditStore]:
    s = AuditStore(logged[0], load.PATIENT_HASH_KEY.encode())
    yield s
    s.dispose()


@pytest.fixture(scope="module")
def changed_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled rules with TD-FREEZE's long-freeze threshold moved from 30 s to 60 s."""
    folder = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(RULES_DIR, folder)
    path = folder / "TD-FREEZE" / "rule.yaml"
    text = path.read_text()
    old = f"freeze_s: {{gt: {OLD_LIMIT}}}"
    assert text.count(old) == 1
    path.write_text(text.replace(old, f"freeze_s: {{gt: {NEW_LIMIT}}}"))
    return folder


def _stored_orders(store: AuditStore) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(decision id, order ref) -> the facts stored for that order."""
    with store.reading() as conn:
        facts = dict(
            conn.execute(select(Decision.decision_id, Decision.facts).where(Decision.facts.is_not(None))).all()
        )
        refs: dict[str, list[str]] = {}
        for row in conn.execute(select(DecisionOrder.decision_id, DecisionOrder.order_ref).order_by(DecisionOrder.id)):
            refs.setdefault(row.decision_id, []).append(row.order_ref)
    out = {}
    for did, record in facts.items():
        for (_modality, order_facts), ref in zip(facts_from_record(record) or [], refs[did], strict=True):
            out[(did, ref)] = order_facts
    return out


def _crosses(order_facts: list[dict[str, Any]]) -> bool:
    """Fired TD-FREEZE's long-freeze test before, not after (read straight from the facts)."""
    order = next(f for f in order_facts if f["kind"] == "order")
    seconds = order.get("freeze_s")
    return (
        order.get("modality") == "local-destructive"
        and order.get("reason_alopecia") is False
        and not order.get("reason_pigment_spot")  # that variant fires above 20 s either way
        and isinstance(seconds, (int, float))
        and OLD_LIMIT < seconds <= NEW_LIMIT
    )


def test_replay_with_a_changed_threshold_reports_exactly_the_orders_that_cross_it(
    store: AuditStore, changed_rules: Path
) -> None:
    stored = _stored_orders(store)
    expected = {key for key, facts in stored.items() if _crosses(facts)}
    assert expected, "the load must include orders between the two thresholds"
    assert len(expected) < len(stored)  # and orders that do not cross

    report = replay(store, apply_section(changed_rules, NO_POLICY.site), policy_revision=NO_POLICY.revision)

    assert report.decisions == len({did for did, _ in stored})
    assert report.without_facts == 0
    assert set(report.changes) == {"TD-FREEZE"}, report.lines()
    change = report.changes["TD-FREEZE"]
    assert set(change.lost) == expected and len(change.lost) == len(expected)
    assert change.gained == [] and change.regraded == {}
    assert not report.cannot_replay


def test_replay_with_the_same_rules_changes_nothing(store: AuditStore) -> None:
    report = replay(store, apply_section(RULES_DIR, NO_POLICY.site))
    assert report.changes == {} and not report.cannot_replay and report.decisions > 0
    assert report.lines()[-1] == "no change"


def test_replay_with_a_policy_turning_a_rule_off_loses_its_findings(store: AuditStore) -> None:
    policy = parse_policy({"rules": {"TD-FREEZE": False}})
    report = replay(store, apply_section(RULES_DIR, policy.site), policy_revision=policy.revision)
    fired = {key for key, facts in _stored_orders(store).items() if _crosses(facts)}
    assert set(report.changes) == {"TD-FREEZE"} and fired <= set(report.changes["TD-FREEZE"].lost)


def test_a_rule_needing_facts_the_log_does_not_keep_is_reported_not_skipped(store: AuditStore, tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(RULES_DIR, folder)
    path = folder / "CI-RAYNAUD" / "rule.yaml"
    text = path.read_text()
    path.write_text(
        text.replace("- condition: {in_raynaud: true}", "- condition: {in_raynaud: true}\n      - order: {site: hand}")
    )
    report = replay(store, apply_section(folder, NO_POLICY.site))
    assert report.cannot_replay["CI-RAYNAUD"] == ["order.site"]
    assert "CI-RAYNAUD" not in report.changes  # its findings would "vanish", but that is not known
    assert "CI-RAYNAUD: cannot replay: needs facts order.site" in report.lines()
    # Without CI-RAYNAUD's critical finding the generic instruction cards would seem to come
    # back; they depend on it, so they are reported too, not shown as gained.
    for generic in ("LC-AFTERCARE", "PR-SYS-SAFETY"):
        assert report.cannot_replay[generic] == [
            "order.site (through CI-RAYNAUD, whose critical finding leaves this one out)"
        ]
    assert set(report.cannot_replay) == {"CI-RAYNAUD", "LC-AFTERCARE", "PR-SYS-SAFETY"}
    assert report.changes == {}


def test_replay_command_prints_json_and_text(logged: tuple[str, Path], changed_rules: Path, tmp_path: Path) -> None:
    (tmp_path / "cwd").mkdir()
    home = {"cwd": tmp_path / "cwd", "data": tmp_path / "data"}
    env = {"CDS_HOOKS_DATABASE_URL": logged[0], "CDS_HOOKS_PATIENT_HASH_KEY": load.PATIENT_HASH_KEY}
    result = cryo(home, "replay", "--rules", str(changed_rules), "--json", **env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["rule"] for r in data["rules"]] == ["TD-FREEZE"] and data["rules"][0]["lost"] > 0
    assert data["rules"][0]["gained"] == 0 and data["cannot_replay"] == []
    text = cryo(home, "replay", "--rules", str(changed_rules), "--since", "2000-01-01", **env)
    assert text.returncode == 0, text.stderr
    assert any(line.startswith("TD-FREEZE: ") and "lose the finding" in line for line in text.stdout.splitlines())
    bad = cryo(home, "replay", "--rules", str(tmp_path), **env)
    assert bad.returncode == 2 and "not a rules folder" in bad.stderr
    # The log groups by policy revision: every decision of the load ran without a policy.
    revisions = cryo(home, "audit", "revisions", "--json", **env)
    assert revisions.returncode == 0, revisions.stderr
    (row,) = json.loads(revisions.stdout)
    assert row["policy_revision"] == NO_POLICY.revision and row["decisions"] >= CALLS
    assert row["findings_left_out"] == 0 and row["cards"] > 0


def test_console_shows_the_same_diff_behind_its_login(logged: tuple[str, Path], changed_rules: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cds_hooks.app import create_app
    from cds_hooks.config import Config

    from .support.loopback import LoopbackServer

    token = "console-token-for-whatif-0123456789"
    app = create_app(
        Config(
            rules_dir=RULES_DIR,
            database_url=logged[0],
            patient_hash_key=load.PATIENT_HASH_KEY.encode(),
            audit_token=token,
            evaluator="plain",
        )
    )
    store = app.extensions["cryo_cds"].store
    try:
        with LoopbackServer(app) as server:
            today = datetime.now(UTC).date()  # the load ran today (or, near midnight, yesterday)
            query = {"rules": str(changed_rules), "from": str(today - timedelta(days=1)), "to": str(today)}
            anonymous = requests.get(f"{server.url}/console/replay", params=query, allow_redirects=False, timeout=60)
            assert anonymous.status_code == 302  # the console's own login guards it
            session = requests.Session()
            page = session.get(f"{server.url}/console/login", timeout=30)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            session.post(f"{server.url}/console/login", data={"token": token, "csrf_token": csrf.group(1)}, timeout=30)
            shown = session.get(f"{server.url}/console/replay", params=query, timeout=120)
            assert shown.status_code == 200, shown.text[:500]
            expected = replay(store, apply_section(changed_rules, NO_POLICY.site), since=None, until=None)
            lost = len(expected.changes["TD-FREEZE"].lost)
            assert re.search(rf">TD-FREEZE</a></td>\s*<td>0</td><td>{lost}</td>", shown.text), shown.text[-3000:]
            wrong = session.get(f"{server.url}/console/replay", params={"rules": "/nonexistent"}, timeout=30)
            assert wrong.status_code == 400 and "not a rules folder" in wrong.text
            # The page reads files on the host: a policy must be YAML, and no file content is echoed.
            other = session.get(
                f"{server.url}/console/replay",
                params={"rules": str(changed_rules), "policy": "/etc/passwd"},
                timeout=30,
            )
            assert other.status_code == 400 and ".yaml or .yml file" in other.text and "root:" not in other.text
    finally:
        store.dispose()


def test_facts_built_with_another_parameter_cannot_show_its_effect(store: AuditStore) -> None:
    rulebook = load_rulebook(RULES_DIR, {"medication_supply_days": 60})
    report = replay(store, rulebook)
    need = "medication built with medication_supply_days=60 (recorded with 30)"
    assert report.cannot_replay["DI-ANTICOAG"] == [need]
    assert all(any(need in n for n in needs) for needs in report.cannot_replay.values())
    assert not set(report.cannot_replay) & set(report.changes)
