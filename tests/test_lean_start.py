"""A serving worker loads only what serving needs: no Alembic for a current schema or a new
(empty) database, no console sandbox, devtools, Markdown or JSON Schema until they are used;
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
NOT_FOR_SERVING = ("alembic", "markdown_it", "jsonschema", "cds_hooks.devtools", "cds_hooks.console.sandbox")


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
        "import json, sys\n"
        "from cds_hooks.app import create_app\n"
        "create_app()\n"
        f"print(json.dumps([m for m in {list(NOT_FOR_SERVING)!r} if m in sys.modules]))\n"
    )
    first = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout.splitlines()[-1]) == []  # a new log: created from the models
    second = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout.splitlines()[-1]) == []


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
        "loaded = lambda: [m for m in ('requests', 'jwt', 'cryptography') if m in sys.modules]\n"
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
