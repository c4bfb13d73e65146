"""A durable local spool for decisions the database could not take, and a failure counter
shared by every worker on the host.

One file per decision, holding the rows the store would have inserted (patient id already
replaced by its keyed hash). A file is written to a temporary name, fsynced and renamed, so
a crash leaves either a whole entry or none. Draining claims a file by renaming it (atomic:
two workers never claim the same one) and deletes it only after the database committed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("cds_hooks.audit")

_SUFFIX = ".json"
_CLAIMED = ".claimed"
_FAILURE_COUNTER = "write-failures.count"


class Spool:
    """Decision rows waiting for the database, in ``directory`` (created 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.directory / "failed").mkdir(exist_ok=True, mode=0o700)
        # (directory mtime, when) of the last listing that found the spool empty; see is_empty.
        self._empty_at: tuple[int, float] | None = None

    def put(self, name: str, rows: dict[str, Any]) -> None:
        """Store ``rows`` durably under ``name`` (a decision id); raises OSError on failure."""
        final = self.directory / f"{_safe(name)}{_SUFFIX}"
        tmp = self.directory / f".{_safe(name)}.{os.getpid()}.tmp"
        data = json.dumps(rows, default=_encode, ensure_ascii=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.directory)

    def is_empty(self) -> bool:
        """True when no entry waits; the check every successful call makes before draining.

        Listing the directory on every call cost more than the rest of the decision write
        (benchmarks/http.py, c=8), so an empty listing is trusted while the directory's
        mtime stays the same (adding, claiming or removing an entry changes it, in any
        worker) and for at most a second, in case the clock did not tick between a listing
        and a put."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return True
        now = time.monotonic()
        if self._empty_at is not None and self._empty_at[0] == mtime and now - self._empty_at[1] < 1.0:
            return True
        if self.depth():
            self._empty_at = None
            return False
        self._empty_at = (mtime, now)
        return True

    def depth(self) -> int:
        """Entries waiting (claimed ones included: they are not in the database yet)."""
        try:
            return sum(
                1
                for entry in os.scandir(self.directory)
                if entry.name.endswith(_SUFFIX) or entry.name.endswith(_CLAIMED)
            )
        except OSError:
            return 0

    def claim(self, limit: int) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Up to ``limit`` unclaimed entries, oldest first, each renamed so no one else takes it."""
        try:
            waiting = sorted(
                (e for e in os.scandir(self.directory) if e.name.endswith(_SUFFIX)), key=lambda e: e.stat().st_mtime_ns
            )
        except OSError:
            return
        taken = 0
        for entry in waiting:
            if taken >= limit:
                return
            claimed = Path(entry.path + f".{os.getpid()}{_CLAIMED}")
            try:
                os.rename(entry.path, claimed)
            except FileNotFoundError:
                continue  # another worker took it
            taken += 1
            try:
                payload = json.loads(claimed.read_bytes(), object_hook=_decode)
            except (OSError, ValueError):
                self.quarantine(claimed)
                continue
            yield claimed, payload

    def done(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def release(self, claimed: Path) -> None:
        """Give a claimed entry back (the database failed again)."""
        os.replace(claimed, _unclaimed(claimed))

    def quarantine(self, claimed: Path) -> None:
        """Move an entry the database refuses for its content aside; it is kept, not lost."""
        target = self.directory / "failed" / _unclaimed(claimed).name
        os.replace(claimed, target)
        log.error("spooled decision %s was refused by the database; kept in %s", target.stem, target.parent)

    def recover_stale_claims(self) -> None:
        """Entries claimed by a process that no longer exists go back to the queue."""
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(_CLAIMED):
                continue
            pid = entry.name[: -len(_CLAIMED)].rsplit(".", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(entry.path, _unclaimed(Path(entry.path)))

    def add_failure(self) -> int:
        """Increment the host-wide write-failure counter; returns the new value."""
        with self._counter() as handle:
            value = _read_int(handle) + 1
            handle.seek(0)
            handle.truncate()
            handle.write(str(value))
            return value

    def failures(self) -> int:
        with self._counter() as handle:
            return _read_int(handle)

    def _counter(self) -> _LockedFile:
        return _LockedFile(self.directory / _FAILURE_COUNTER)


class _LockedFile:
    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> Any:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        self._handle = os.fdopen(fd, "r+")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self._handle

    def __exit__(self, *_exc: object) -> None:
        self._handle.flush()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def _read_int(handle: Any) -> int:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else 0


def _unclaimed(claimed: Path) -> Path:
    name = claimed.name[: -len(_CLAIMED)].rsplit(".", 1)[0]
    return claimed.with_name(name)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:128]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(value: dict[str, Any]) -> Any:
    if set(value) == {"$datetime"}:
        return datetime.fromisoformat(value["$datetime"])
    return value
