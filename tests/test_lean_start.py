"""A serving worker loads only what serving needs: no Alembic for a current schema or a new
(empty) database, no SQLAlchemy on a SQLite file (start, hook calls, no-nagging look-ups,
readiness, token replay checks), no console sandbox, devtools, Markdown or JSON Schema until
they are used;
with JWT checks on, PyJWT and cryptography from the first token and requests only for a JWKS
fetched over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from cds_hooks.audit.store import MIGRATIONS_DIR, AuditStore, head_revisions

from .support.load import TokenSigner

KEY = b"lean-start-test-patient-key-0123"
NOT_FOR_SERVING = (
    "alembic",
    "sqlalchemy",
    "markdown_it",
    "jsonschema",
    "cds_hooks.devtools",
    "cds_hooks.console.sandbox",
)
REQUESTS = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "requests"


def test_the_head_read_from_the_version_files_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    assert head_revisions() == frozenset(ScriptDirectory.from_config(cfg).get_heads())


def test_the_schema_is_current_only_after_migrating(db_url: str) -> None:
    store = AuditStore(db_url, KEY)
    try:
        assert not store.schema_is_current()
        store.migrate()
        assert store.schema_is_current()
        store.migrate()  # the cheap path: nothing to do, and nothing breaks
        assert store.count_decisions() == 0
    finally:
        store.dispose()


def test_a_worker_on_a_new_or_current_schema_loads_none_of_the_tools(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CDS_HOOKS_AUTH": "off",
        "CDS_HOOKS_DATA_DIR": str(tmp_path),
        "CDS_HOOKS_PATIENT_HASH_KEY": "lean-start-test-patient-hash-key-0123456789",
    }
    probe = (
        "import json, pathlib, sys\n"
        "from cds_hooks.app import create_app\n"
        "client = create_app().test_client()\n"
        "statuses = []\n"
        f"for path in sorted(pathlib.Path({str(REQUESTS)!r}).glob('*.json')):\n"
        "    hook = json.loads(path.read_text())['hook']\n"
        "    statuses.append(client.post(f'/cds-services/cryotherapy-{hook}', data=path.read_bytes(),\n"
        "        content_type='application/json').status_code)\n"
        "statuses.append(client.get('/readyz').status_code)\n"
        f"print(json.dumps([statuses, [m for m in {list(NOT_FOR_SERVING)!r} if m in sys.modules]]))\n"
    )
    # Every fixture (both hooks; order-sign calls with findings look up earlier answers), then
    # the readiness check: first on a new log, created through the driver, then on that log.
    for _start in ("new log", "current log"):
        run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        statuses, loaded = json.loads(run.stdout.splitlines()[-1])
        assert statuses == [200] * (len(list(REQUESTS.glob("*.json"))) + 1)
        assert loaded == []


def test_with_jwt_checks_on_requests_is_never_loaded_for_keys_from_a_file(tmp_path: Path) -> None:
    signer = TokenSigner(tmp_path)
    path = "/cds-services/cryotherapy-order-select"
    env = {
        **os.environ,
        **signer.server_env(),
        "CDS_HOOKS_DATA_DIR": str(tmp_path / "data"),
        "CDS_HOOKS_PATIENT_HASH_KEY": "lean-start-test-patient-hash-key-0123456789",
    }
    request = (
        Path(__file__).resolve().parents[1]
        / "fhir_fixtures"
        / "requests"
        / "03-no-findings-whole-body-order-select.json"
    )
    probe = (
        "import json, sys\n"
        "from cds_hooks.app import create_app\n"
        "app = create_app()\n"
        "loaded = lambda: [m for m in ('requests', 'jwt', 'cryptography', 'sqlalchemy') if m in sys.modules]\n"
        "at_start = loaded()\n"
        f"answer = app.test_client().post({path!r}, data=open({str(request)!r}, 'rb').read(),\n"
        f"    content_type='application/json', headers={signer.header(path)!r})\n"
        "print(json.dumps([at_start, answer.status_code, loaded()]))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    at_start, status, after_call = json.loads(run.stdout.splitlines()[-1])
    assert at_start == []
    assert status == 200  # the token was checked, with the key from the file
    assert after_call == ["jwt", "cryptography"]
