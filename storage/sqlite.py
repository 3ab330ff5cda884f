"""Opening SQLite the one way this project does: WAL, explicit
transactions (`isolation_level=None`, BEGIN/COMMIT by hand), a chosen sync level."""
from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

IN_CHUNK = 400  # values bound per "IN (...)" query


class Connection(sqlite3.Connection):
    scratch = False


def connect(path: str | Path, *, synchronous: str = "NORMAL", readonly: bool = False,
            secure_delete: bool = False, scratch: bool = False, cache_mb: int = 64) -> sqlite3.Connection:
    """`scratch`: a throw-away database (a replay for an audit): no journal, no syncs.
    `cache_mb`: the most this connection keeps in its page cache."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, factory=Connection)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, factory=Connection)
        conn.execute("PRAGMA page_size=16384")         # takes effect on a new database
        if scratch:
            conn.execute("PRAGMA journal_mode=OFF")
            synchronous = "OFF"
        else:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_autocheckpoint=2000")  # pages: a WAL of at most ~32 MB
    conn.scratch = scratch
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA cache_size={-1000 * cache_mb}")
    conn.execute("PRAGMA temp_store=MEMORY")
    if secure_delete:
        conn.execute("PRAGMA secure_delete=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, durable: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN ... COMMIT; with `durable`, the commit is fsynced before it returns
    (synchronous=FULL), otherwise it survives a crash of the process but may be lost
    with the machine's power (synchronous=NORMAL in WAL mode)."""
    if not getattr(conn, "scratch", False):
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        # a commit that failed (a full disk, an I/O error) may leave the transaction
        # open: end it, so that the next one starts from what is on disk
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def is_disk_full(e: BaseException) -> bool:
    """Did a write fail for want of space (SQLite's SQLITE_FULL, or ENOSPC/EDQUOT)?"""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def select_in(conn: sqlite3.Connection, sql: str, values: Iterable) -> list[tuple]:
    """Rows of `sql` (whose "IN ({})" is filled with placeholders) for all `values`,
    queried in chunks so that no statement binds too many parameters."""
    vals, out = list(values), []
    for i in range(0, len(vals), IN_CHUNK):
        part = vals[i:i + IN_CHUNK]
        out += conn.execute(sql.format(",".join("?" * len(part))), part).fetchall()
    return out
