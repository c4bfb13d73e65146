"""The app sets the cyclic collector for serving, and the gunicorn hook freezes start-up objects."""

from __future__ import annotations

import gc
from pathlib import Path

from cds_hooks.app import create_app
from cds_hooks.config import Config
from cds_hooks.gc_tuning import THRESHOLDS
from cds_hooks.gunicorn_conf import when_ready

ROOT = Path(__file__).resolve().parents[1]


def test_the_app_raises_the_collector_thresholds(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        create_app(
            Config(
                rules_dir=ROOT / "rules",
                database_url=f"sqlite:///{tmp_path / 'd.db'}",
                auth_required=False,
                patient_hash_key=b"gc-tuning-test-key-0123456789abcdef",
            )
        )
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*before)


def test_the_gunicorn_hook_freezes_what_start_up_built() -> None:
    try:
        when_ready(None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
