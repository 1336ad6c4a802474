"""Where a study lives, and how any number of processes open it at the same moment.

A study lives in an Optuna RDB storage: by default a SQLite file next to the runs, or ``--tune.storage URL``
(PostgreSQL, MySQL) shared by many machines. Opening a storage on an empty database creates Optuna's tables,
and creating a study inserts its row; neither is safe when several processes do it at once. On PostgreSQL
two concurrent ``CREATE TABLE`` of the same name collide in the catalogue (``duplicate key value violates
unique constraint "pg_type_typname_nsp_index"``, Optuna's known first-run race, optuna#1092), which used to
stop one task of a job array at once.

**The choice: a lock, not retries.** :func:`startup_lock` holds a lock that every process of this project
takes around opening the storage and creating or loading the study:

* PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a separate connection;
* MySQL: a named lock (``GET_LOCK``);
* SQLite: a lock file beside the database (``filelock``, which torch already depends on), since an
  embedded database has no server to hold a lock.

Retrying instead would have to recognise, per database and driver, every error a concurrent schema
creation can raise (unique violations in the catalogue, "already exists", deadlocks in the middle of
Optuna's migrations) and still could not tell a half-created schema from a broken one; a lock makes the
second process wait until the first has finished and then find the tables there. The lock is held for
the start-up only (a second or so), never while trials run: trials share the study through Optuna's own
row-level transactions. A lock that cannot be had within :data:`LOCK_WAIT` seconds (a process stuck
while holding it) is a one-line error, as is any other failure to open the storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnn_lightning.errors import UserInputError

LOCK_NAME = "rnn_lightning.tune.startup"
# PostgreSQL's advisory locks are keyed by a signed 64-bit integer: the first 8 bytes of the name's hash.
LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
LOCK_WAIT = 120  # seconds a process waits for another's start-up before it gives up with one line
SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite write waits for another process's transaction


def redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def cannot_open(url: str) -> Iterator[None]:
    """Any failure to reach or open the storage inside the block becomes one line naming it (no password)."""
    try:
        yield
    except UserInputError:
        raise
    except ImportError as err:
        raise UserInputError(f"tune.storage {redact(url)}: {err}; pip install -e '.[postgres]'") from None
    except Exception as err:  # sqlalchemy's OperationalError, ArgumentError, a lock wait that timed out ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = first.replace(url, redact(url))
        raise UserInputError(f"tune.storage {redact(url)} cannot be opened: {redact(first)}") from None


@contextlib.contextmanager
def startup_lock(url: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the start-up lock of the database behind ``url`` for the block (see the module docstring)."""
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path is None:  # in-memory: one process only
            yield
            return
        from filelock import FileLock, Timeout

        lock = FileLock(str(path) + ".lock", timeout=wait)
        try:
            lock.acquire()
        except Timeout:
            raise UserInputError(
                f"tune.storage {redact(url)}: the study is in use: another process has held its start-up lock "
                f"for {wait:.0f} s; if none is running, remove {path}.lock"
            ) from None
        try:
            yield
        finally:
            lock.release()
        return
    with server_lock(url, wait):
        yield


@contextlib.contextmanager
def server_lock(url: str, wait: float) -> Iterator[None]:
    """The database server's own lock: PostgreSQL's advisory lock or MySQL's named lock, on one connection."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            dialect = engine.dialect.name
            if dialect == "postgresql":
                # lock_timeout bounds the wait for the advisory lock; the lock is the session's, so it is
                # released when this connection closes, however the block ends (a killed process included).
                connection.execute(sqlalchemy.text(f"SET lock_timeout = '{int(wait * 1000)}ms'"))
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                    connection.commit()
            elif dialect in ("mysql", "mariadb"):
                got = connection.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:name, :wait)"), {"name": LOCK_NAME, "wait": int(wait)}
                ).scalar()
                if got != 1:
                    raise UserInputError(
                        f"tune.storage {redact(url)}: another process has held the start-up lock for {wait:.0f} s"
                    )
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
            else:  # a database Optuna supports that has no lock we know: opened as before
                yield
    finally:
        engine.dispose()


def open_storage(url: str, heartbeat: int) -> Any:
    """An Optuna RDB storage with heartbeats (call it under :func:`startup_lock` and :func:`cannot_open`)."""
    from optuna.storages import RDBStorage

    if url.startswith("sqlite"):
        # Several local processes write to one file: a write waits for another's transaction instead of
        # failing with "database is locked" after sqlite3's default 5 s.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    return RDBStorage(
        url,
        heartbeat_interval=heartbeat,
        grace_period=2 * heartbeat + 10,
        engine_kwargs=engine_kwargs,
    )
