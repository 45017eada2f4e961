"""Connections, transactions and value encoding under the Store.

Connection model
----------------
* A file database gets **one SQLite connection per thread (and per process)**: the Store keeps
  them in a ``threading.local`` and opens a fresh one when the pid changes (after a fork).
  SQLite connections must not be shared across threads or processes; WAL lets readers in other
  threads/processes proceed while one writer commits, and ``busy_timeout`` makes a second writer
  wait instead of failing with "database is locked".
* ``:memory:`` is different: every connection to ``:memory:`` is a *separate, empty* database,
  so a memory Store has ONE shared connection, serialised by a lock. That is what tests use; it
  cannot be seen from another process.

Connections run in autocommit mode (``isolation_level=None``); every multi-statement write
goes through ``Connections.write()``, an explicit ``BEGIN IMMEDIATE … COMMIT``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from store.errors import StoreError

BUSY_TIMEOUT_MS = 5000
MEMORY = ":memory:"


def now() -> str:
    """UTC ISO-8601 with microseconds, e.g. 2025-01-31T12:00:00.123456+00:00."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def to_time(t: Any) -> str:
    """Accept None (now), an ISO string, a datetime or epoch seconds; return UTC ISO-8601."""
    if t is None:
        return now()
    if isinstance(t, str):
        return t
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
        return t.astimezone(datetime.UTC).isoformat(timespec="microseconds")
    if isinstance(t, int | float):
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds")
    raise ValueError(f"time must be an ISO string, a datetime or epoch seconds, not {t!r}")


def _json_default(value: Any) -> Any:
    # Configs carry Paths and nested dataclasses; store them as what they mean.
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be stored as JSON")


def dump_json(value: Any, *, empty: Any) -> str:
    """Encode a JSON column; None becomes ``empty`` ({} or [])."""
    if value is None:
        value = empty
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=True)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def load_json(text: str | None, *, empty: Any) -> Any:
    if text is None or text == "":
        return type(empty)()
    return json.loads(text)


def finite_or_none(value: Any, name: str) -> float | None:
    """Metric values: numbers only; NaN becomes NULL (SQLite has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
    value = float(value)
    return None if math.isnan(value) else value


class Connections:
    """Hands each thread its own ``sqlite_utils.Database`` (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.memory = self.path == MEMORY
        self._local = threading.local()
        self._lock = threading.RLock()  # only used for the shared :memory: connection
        # Weak: a worker thread's connection closes when that thread ends (no fd leak).
        self._opened: weakref.WeakSet[Database] = weakref.WeakSet()
        self._opened_lock = threading.Lock()
        self._shared: Database | None = None
        self._memory_closed = False
        if not self.memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> Database:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                # Used by one thread only; False just lets close() tidy up from any thread.
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot open the tuneloop database {self.path}: {exc}. Check that it is a "
                "writable SQLite file (or choose another home with --home)."
            ) from None
        db = Database(conn)
        with self._opened_lock:
            self._opened.add(db)
        return db

    def get(self) -> Database:
        if self.memory:
            if self._memory_closed:
                raise StoreError("This in-memory store was closed; its data is gone.")
            if self._shared is None:
                with self._lock:
                    if self._shared is None:
                        self._shared = self._open()
            return self._shared
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            # After a fork the inherited connection belongs to the parent: leave it alone.
            db = self._open()
            self._local.db = db
            self._local.pid = os.getpid()
        return db

    @contextlib.contextmanager
    def read(self) -> Iterator[Database]:
        if self.memory:
            with self._lock:
                yield self.get()
        else:
            yield self.get()

    @contextlib.contextmanager
    def write(self, *, durable: bool = False) -> Iterator[Database]:
        """One ``BEGIN IMMEDIATE`` transaction, committed before returning.

        ``durable=True`` (label writes) switches this connection to ``synchronous=FULL`` for the
        commit, so a label survives a power cut, and back to NORMAL afterwards. Nested calls join
        the outer transaction.
        """
        lock = self._lock if self.memory else contextlib.nullcontext()
        with lock:
            db = self.get()
            conn = db.conn
            if conn.in_transaction:
                yield db
                return
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            try:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise StoreError(
                        f"The tuneloop database {self.path} stayed busy for "
                        f"{BUSY_TIMEOUT_MS / 1000:g}s ({exc}): another process is holding a long "
                        "write. Try again; if it persists, look for a stuck tuneloop process."
                    ) from None
                try:
                    yield db
                except BaseException:
                    if conn.in_transaction:  # some errors already rolled it back
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        """Close every connection this Store opened (in any thread of this process)."""
        with self._opened_lock:
            opened = list(self._opened)
            self._opened.clear()
        for db in opened:
            with contextlib.suppress(sqlite3.Error):
                db.conn.close()
        self._shared = None
        self._memory_closed = self.memory  # a file store simply reconnects on next use
        self._local = threading.local()
