"""``cryo-cds`` as a user runs it: a subprocess from an empty directory with its own data
directory. Every bad input is one line on stderr, exit status 2 and no traceback; a batch
survives a bad file; ``check`` answers as the service does, also when it must fetch the record
from ``fhirServer``; ``audit`` names the log it reads and lists decisions with filters."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.devtools.fhir_server import create_fhir_app, load_resources
from cds_hooks.hooks import parse_hook_request
from cds_hooks.service import SERVICES
from cds_hooks.state import open_audit_store

from .conftest import ROOT, RULES_DIR, card_findings, make_pipeline
from .support.cli import assert_one_line_error, cli_env, cryo, ctrl_c_enabled, strip_uuids
from .support.loopback import LoopbackServer, free_port, wait_until_up

REQUESTS = ROOT / "fhir_fixtures" / "requests"
PREGNANT = REQUESTS / "01-pregnant-whole-body-order-select.json"
PACEMAKER = REQUESTS / "02-pacemaker-whole-body-order-sign.json"
NOW = "2026-11-21T12:00:00+00:00"


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Path]:
    """An empty working directory and a data directory of its own."""
    (tmp_path / "cwd").mkdir()
    return {"cwd": tmp_path / "cwd", "data": tmp_path / "data"}


# -- bad input: one line, exit 2 -----------------------------------------------------------


def test_a_missing_file_is_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(cryo(home, "check", "nope.json"), "nope.json", "no such file")


def test_invalid_json_is_one_line_with_its_position(home: dict[str, Path]) -> None:
    (home["cwd"] / "bad.json").write_text('{"hook": "order-select",\n  oops}', encoding="utf-8")
    assert_one_line_error(cryo(home, "check", "bad.json"), "bad.json", "invalid JSON at line 2")


def test_a_json_array_is_not_a_request(home: dict[str, Path]) -> None:
    (home["cwd"] / "list.json").write_text("[1, 2]", encoding="utf-8")
    assert_one_line_error(cryo(home, "check", "list.json"), "list.json", "expected a JSON object")


def test_a_directory_is_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(cryo(home, "check", str(REQUESTS)), "is a directory")


def test_an_invalid_request_is_one_line(home: dict[str, Path]) -> None:
    (home["cwd"] / "empty.json").write_text("{}", encoding="utf-8")
    assert_one_line_error(cryo(home, "check", "empty.json"), "empty.json", "not a valid order-select request")


def test_now_yesterday_is_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(
        cryo(home, "check", str(PREGNANT), "--now", "yesterday"), "--now", "not an ISO 8601 date-time: 'yesterday'"
    )


@pytest.mark.parametrize("question", ["summary", "decisions", "silent"])
def test_since_notadate_is_one_line(home: dict[str, Path], question: str) -> None:
    assert_one_line_error(cryo(home, "audit", question, "--since", "notadate"), "--since", "'notadate'")


def test_purge_with_a_negative_age_is_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(
        cryo(home, "audit", "purge", "--older-than-days", "-1"), "--older-than-days", "must be 0 or more, got -1"
    )
    assert not home["data"].exists()  # nothing was opened, let alone purged


def test_an_unknown_rule_parameter_is_one_line(home: dict[str, Path]) -> None:
    result = cryo(home, "check", str(PREGNANT), CDS_HOOKS_RULE_PARAMS='{"anticoag_windw_days": 10}')
    assert_one_line_error(result, "configuration error", "unknown rule parameter 'anticoag_windw_days'")


def test_rule_params_that_are_not_json_are_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(
        cryo(home, "check", str(PREGNANT), CDS_HOOKS_RULE_PARAMS="{anticoag: 10}"),
        "CDS_HOOKS_RULE_PARAMS must be a JSON object",
    )


def test_an_unknown_command_and_a_missing_argument_are_one_line(home: dict[str, Path]) -> None:
    assert_one_line_error(cryo(home, "frobnicate"), "invalid choice: 'frobnicate'")
    assert_one_line_error(cryo(home, "audit", "purge"), "--older-than-days")
    assert_one_line_error(cryo(home, "serve", "--port", "http"), "--port", "'http'")


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (("serve", "--port", "70000"), {}, ("--port", "must be 65535 or less, got 70000")),
        (("audit", "decisions", "--limit", "0"), {}, ("--limit", "must be 1 or more, got 0")),
        (("check", "x.json"), {"CDS_HOOKS_PORT": "99999"}, ("CDS_HOOKS_PORT must be 65535 or less, got 99999",)),
        (("check", "x.json"), {"CDS_HOOKS_FETCH_BUDGET_S": "nan"}, ("CDS_HOOKS_FETCH_BUDGET_S must be a finite",)),
        (("check", "x.json"), {"CDS_HOOKS_MAX_BODY_BYTES": "lots"}, ("MAX_BODY_BYTES must be a whole number",)),
    ],
)
def test_numbers_are_checked_by_one_parser_on_the_command_line_and_in_settings(
    home: dict[str, Path], args: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    assert_one_line_error(cryo(home, *args, **env), *needles)


def test_a_port_in_use_is_reported_before_anything_claims_to_listen(home: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cryo(home, "serve", "--no-auth", "--port", str(port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: already in use")
    assert "listening" not in result.stderr + result.stdout


def test_a_closed_output_pipe_ends_quietly(home: dict[str, Path]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cds_hooks.cli", "check", "--now", NOW, *map(str, sorted(REQUESTS.glob("*.json")))],
            cwd=home["cwd"],
            env=cli_env(home),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_ctrl_c_stops_the_server_quietly(home: dict[str, Path]) -> None:
    port = free_port()
    log = home["cwd"] / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_hooks.cli", "serve", "--no-auth", "--port", str(port)],
            cwd=home["cwd"],
            env=cli_env(home),
            stdout=sink,
            stderr=sink,
            preexec_fn=ctrl_c_enabled,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0  # Ctrl-C is how a development server is stopped
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert f"data dir {home['data']}" in text  # the state's home is printed at start-up


def test_bad_console_options_are_one_line_before_anything_listens(home: dict[str, Path]) -> None:
    result = cryo(home, "serve", "--console-token", "short")
    assert_one_line_error(result, "--console-token must be at least 24 characters")
    assert "listening" not in result.stderr
    assert_one_line_error(cryo(home, "serve", "--console-patients", "nowhere"), "--console-patients: nowhere: no such")
    from_settings = cryo(home, "serve", CDS_HOOKS_CONSOLE_TOKEN="short-secret-value")
    assert_one_line_error(from_settings, "configuration error: CDS_HOOKS_CONSOLE_TOKEN must be at least 24 characters")
    assert "listening" not in from_settings.stderr and "short-secret-value" not in from_settings.stderr


def test_serve_takes_the_console_token_and_patient_folder_from_its_options(home: dict[str, Path]) -> None:
    token = "console-token-given-on-the-command-line"
    patients = home["cwd"] / "patients"
    patients.mkdir()
    (patients / "someone-from-the-option.json").write_text('{"resourceType": "Bundle"}', encoding="utf-8")
    port = free_port()
    log = home["cwd"].parent / "serve.log"
    command = ["serve", "--port", str(port), "--console-token", token, "--console-patients", "patients"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_hooks.cli", *command],
            cwd=home["cwd"],
            env=cli_env(home),
            stdout=sink,
            stderr=sink,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
            base = f"http://127.0.0.1:{port}/console"

            def log_in(given: str) -> tuple[requests.Session, int]:
                session = requests.Session()
                page = session.get(f"{base}/login", timeout=30).text
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
                assert csrf, page
                answer = session.post(
                    f"{base}/login", data={"token": given, "csrf_token": csrf[1]}, allow_redirects=False, timeout=30
                )
                return session, answer.status_code

            assert log_in("console-token-that-is-not-the-one-given")[1] != 302
            session, status = log_in(token)
            assert status == 302
            assert "someone-from-the-option.json" in session.get(f"{base}/sandbox", timeout=30).text
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert token not in log.read_text()  # the token is never logged


# -- check ---------------------------------------------------------------------------------


def service_cards(rulebook: Any, terminology: Any, plain_evaluator: Any, path: Path) -> list[dict[str, Any]]:
    """What the service pipeline answers for a fixture, in-process."""
    from datetime import datetime

    body = json.loads(path.read_text())
    service = SERVICES["cryotherapy-order-sign" if body["hook"] == "order-sign" else "cryotherapy-order-select"]
    pipeline = make_pipeline(rulebook, terminology, plain_evaluator, datetime.fromisoformat(NOW))
    cards: list[dict[str, Any]] = pipeline.run(service, parse_hook_request(body, service.hook)).body["cards"]
    return cards


def test_one_bad_file_does_not_stop_a_batch_and_json_lines_name_each_file(
    home: dict[str, Path], rulebook: Any, terminology: Any, plain_evaluator: Any
) -> None:
    result = cryo(
        home, "check", "--json", "--now", NOW, "--evaluator", "plain", str(PREGNANT), "missing.json", str(PACEMAKER)
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["cryo-cds: missing.json: no such file"]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(PREGNANT), "missing.json", str(PACEMAKER)]
    assert "no such file" in lines[1]["error"]
    for line, path in ((lines[0], PREGNANT), (lines[2], PACEMAKER)):
        assert line["status"] == 200
        assert strip_uuids(line["response"]["cards"]) == strip_uuids(
            service_cards(rulebook, terminology, plain_evaluator, path)
        )


def test_the_default_view_is_readable_cards(home: dict[str, Path]) -> None:
    result = cryo(home, "check", "--now", NOW, str(PREGNANT), str(PACEMAKER))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{PREGNANT}: 1 card\n" in out and f"{PACEMAKER}: 2 cards\n" in out
    assert "  CRITICAL  CI-PREG" in out and "suggestion: " in out
    assert "{" not in out  # not JSON


def test_without_prefetch_check_fetches_from_fhir_server_like_the_service(
    home: dict[str, Path], rulebook: Any, terminology: Any, plain_evaluator: Any
) -> None:
    body = json.loads(PREGNANT.read_text())
    with LoopbackServer(create_fhir_app(load_resources([PREGNANT]))) as fhir:
        bare = {**{k: v for k, v in body.items() if k != "prefetch"}, "fhirServer": fhir.url}
        (home["cwd"] / "bare.json").write_text(json.dumps(bare), encoding="utf-8")
        result = cryo(home, "check", "--json", "--now", NOW, "--evaluator", "plain", "bare.json")
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert strip_uuids(line["response"]["cards"]) == strip_uuids(
        service_cards(rulebook, terminology, plain_evaluator, PREGNANT)
    )


def test_without_prefetch_or_fhir_server_check_reports_the_412(home: dict[str, Path]) -> None:
    body = {k: v for k, v in json.loads(PREGNANT.read_text()).items() if k != "prefetch"}
    (home["cwd"] / "bare.json").write_text(json.dumps(body), encoding="utf-8")
    result = cryo(home, "check", "--now", NOW, "bare.json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "bare.json: the service would answer 412" in result.stderr


def test_check_keeps_the_call_deadline_like_the_service(home: dict[str, Path], tmp_path: Path) -> None:
    """CDS_HOOKS_CALL_DEADLINE_S reaches check: a deadline passed before the record is read gives
    the service's unfinished card, not the cards of a check that took as long as it liked."""
    deadline = "1e-9"
    result = cryo(home, "check", "--json", "--now", NOW, str(PACEMAKER), CDS_HOOKS_CALL_DEADLINE_S=deadline)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    config = Config(
        rules_dir=RULES_DIR,
        database_url=f"sqlite:///{tmp_path / 'service.db'}",
        patient_hash_key=b"k" * 32,
        auth_required=False,
        call_deadline_s=float(deadline),
    )
    app = create_app(config)
    try:
        answer = app.test_client().post("/cds-services/cryotherapy-order-sign", json=json.loads(PACEMAKER.read_text()))
    finally:
        app.extensions["cryo_cds"].store.dispose()
    assert (line["status"], answer.status_code) == (200, 200)
    assert card_findings(line["response"]["cards"]) == {("MD-UNFINISHED", "warning")}
    assert strip_uuids(line["response"]["cards"]) == strip_uuids(answer.get_json()["cards"])


# -- audit ---------------------------------------------------------------------------------


@pytest.fixture
def written_log(
    home: dict[str, Path], rulebook: Any, terminology: Any, plain_evaluator: Any
) -> Iterator[dict[str, str]]:
    """Two decisions in the home's log: fixture 01 (order-select, CI-PREG) and 02 (order-sign)."""
    from datetime import datetime

    store = open_audit_store(Config(data_dir=home["data"]))
    ids = {}
    try:
        pipeline = make_pipeline(rulebook, terminology, plain_evaluator, datetime.fromisoformat(NOW))
        for name, path in (("pregnant", PREGNANT), ("pacemaker", PACEMAKER)):
            body = json.loads(path.read_text())
            service = SERVICES["cryotherapy-order-sign" if body["hook"] == "order-sign" else "cryotherapy-order-select"]
            outcome = pipeline.run(service, parse_hook_request(body, service.hook))
            store.record_decision(outcome.decision, outcome.evaluated_rules)
            ids[name] = outcome.decision.decision_id
    finally:
        store.dispose()
    yield ids


def test_audit_decisions_filters_by_rule_service_and_limit(home: dict[str, Path], written_log: dict[str, str]) -> None:
    def listed(*args: str) -> list[str]:
        result = cryo(home, "audit", "decisions", "--json", *args)
        assert result.returncode == 0, result.stderr
        assert f"data dir {home['data']}" in result.stderr
        return sorted(row["decision_id"] for row in json.loads(result.stdout))

    assert listed() == sorted(written_log.values())
    assert listed("--rule", "CI-PREG") == [written_log["pregnant"]]
    assert listed("--service", "cryotherapy-order-sign") == [written_log["pacemaker"]]
    assert listed("--since", "2026-11-22") == []
    assert listed("--until", "2026-11-22", "--rule", "CI-DEVICE-CARDIAC") == [written_log["pacemaker"]]
    assert len(listed("--limit", "1")) == 1


def test_audit_tables_fit_the_terminal(home: dict[str, Path], written_log: dict[str, str]) -> None:
    for question in ("decisions", "summary"):
        result = cryo(home, "audit", question, COLUMNS="80")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) >= 2 and all(len(line) <= 80 for line in lines), result.stdout
    assert written_log["pregnant"][:8] in cryo(home, "audit", "decisions", COLUMNS="200").stdout


def test_a_missing_key_file_beside_a_written_log_is_refused_not_replaced(
    home: dict[str, Path], written_log: dict[str, str]
) -> None:
    key_file = home["data"] / "patient-hash.key"
    key_file.unlink()
    result = cryo(home, "audit", "summary")
    assert_one_line_error(result, "was written with a patient-hash key", "patient-hash.key is missing")
    assert not key_file.exists()


def test_another_key_for_a_written_log_is_refused(home: dict[str, Path], written_log: dict[str, str]) -> None:
    result = cryo(home, "audit", "summary", CDS_HOOKS_PATIENT_HASH_KEY="another-key-0123456789abcdef")
    assert_one_line_error(result, "was written with another patient-hash key")
    assert cryo(home, "audit", "summary").returncode == 0  # the right key still reads it


# -- documentation and progress ------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, list[str]]]:
    """Every runnable command ("audit decisions") with its long options, from the parser itself."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        yield " ".join(words), options
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*words, name))


def test_the_readme_documents_every_command_and_option() -> None:
    from cds_hooks.cli import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `cryo-cds ")]
    commands = list(_commands(build_parser()))
    assert len(commands) >= 10
    for command, options in commands:
        row = [r for r in rows if r.startswith(f"| `cryo-cds {command}") and r[len(command) + 12] in " `"]
        assert len(row) == 1, f"README has no row for cryo-cds {command}"
        assert [o for o in options if o not in row[0]] == [], f"README row of cryo-cds {command}"


def _on_a_terminal(home: dict[str, Path], *args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal and stdout on a pipe: (status, stdout, stderr)."""
    import pty

    leader, follower = pty.openpty()
    out_path = home["cwd"].parent / "stdout.txt"
    try:
        with out_path.open("wb") as sink:  # a file: a full pipe would stall the process while we read the terminal
            process = subprocess.Popen(
                [sys.executable, "-m", "cds_hooks.cli", *args],
                cwd=home["cwd"],
                env={**cli_env(home), "COLUMNS": "100"},
                stdout=sink,
                stderr=follower,
            )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        status = process.wait(timeout=120)
        out = out_path.read_text(encoding="utf-8")
    finally:
        os.close(leader)
    return status, out, b"".join(chunks).decode(errors="replace")


def test_a_batch_check_draws_a_progress_bar_only_on_a_terminal(home: dict[str, Path]) -> None:
    files = [str(PREGNANT), str(PACEMAKER)]
    status, out, err = _on_a_terminal(home, "check", "--json", "--now", NOW, "--evaluator", "plain", *files)
    assert status == 0, err
    assert "checking [" in err and "2/2" in err
    assert len(out.splitlines()) == 2  # the bar never mixes into the output
    quiet = cryo(home, "check", "--json", "--now", NOW, "--evaluator", "plain", *files)
    assert quiet.returncode == 0 and "checking" not in quiet.stderr


def test_rules_coverage_draws_a_progress_bar_only_on_a_terminal(home: dict[str, Path]) -> None:
    patients = sorted((ROOT / "fhir_fixtures" / "external").glob("*.json"))[:2]
    args = ("rules", "coverage", "--json", "--now", NOW, *map(str, patients))
    status, out, err = _on_a_terminal(home, *args)
    assert status == 0, err
    assert "patients [" in err and "2/2" in err
    assert json.loads(out)  # the rows, undisturbed by the bar
    quiet = cryo(home, *args)
    assert quiet.returncode == 0 and "patients [" not in quiet.stderr
