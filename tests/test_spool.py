"""The spool's emptiness check, made on every successful call: it must see an entry put by
any worker, and see the spool empty again once the entries are written back."""

from __future__ import annotations

from pathlib import Path

from cds_hooks.audit.spool import Spool


def test_an_entry_put_by_another_worker_is_seen(tmp_path: Path) -> None:
    ours, theirs = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")  # two processes' views
    assert ours.is_empty()
    assert ours.is_empty()  # trusted from the unchanged directory
    theirs.put("d-1", {"decision": {"decision_id": "d-1"}})
    assert not ours.is_empty()
    claimed = [path for path, _rows in ours.claim(10)]
    assert len(claimed) == 1
    assert not ours.is_empty()  # claimed, not yet in the database
    ours.done(claimed[0])
    assert ours.is_empty()


def test_a_stale_empty_listing_is_not_trusted_beyond_a_second(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.is_empty()
    # An entry that appeared without the directory's mtime moving (a coarse clock): the
    # listing is redone once the remembered one is a second old.
    (spool.directory / "d-2.json").write_text("{}")
    mtime = spool.directory.stat().st_mtime_ns
    assert spool._empty_at is not None
    spool._empty_at = (mtime, spool._empty_at[1])
    assert spool.is_empty()  # within the second: trusted
    spool._empty_at = (mtime, spool._empty_at[1] - 1.5)
    assert not spool.is_empty()
    assert spool.depth() == 1
