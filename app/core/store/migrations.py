"""The index schema, versioned: numbered SQL files applied in order, the version kept in the database.

Each file ``schema/NNNN_<what>.sql`` takes the index from version NNNN-1 to NNNN; the database
records the last one applied in ``PRAGMA user_version``. Opening a store applies, in one
transaction, every file the database has not seen yet, so a failed upgrade leaves the index
exactly as it was, and two processes opening the same data dir never both upgrade it.

Adding a table (the next issue's way in): write ``schema/0002_<what>.sql`` with a plain
``CREATE TABLE`` (no ``IF NOT EXISTS``: the version already says whether it exists), each
statement ending with ``;`` at the end of a line, no ``BEGIN``/``COMMIT``. Nothing else
changes, and the packaging already ships ``schema/*.sql``. Never edit a file that has shipped;
write the next one. Tables are never created at open outside this sequence: the version and
the too-new check would not know them.

Version 0 with tables is an index written before versions were recorded (releases up to
4c3338c). Those created 0001's tables with ``IF NOT EXISTS`` at every open, so such an index
holds schema 1: 0001 runs over it (creating nothing that exists, touching no row, exactly what
those releases did at each open) and the version is recorded as 1.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

from app.core.store.errors import MigrationFailed, SchemaTooNew

log = logging.getLogger(__name__)

SCHEMA_PACKAGE = "app.core.store"
SCHEMA_FOLDER = "schema"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> tuple[Migration, ...]:
    """The SQL files shipped in ``schema/``, in version order."""
    folder = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FOLDER)
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    _check_sequence(found)
    return tuple(found)


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"schema migrations must be numbered 1, 2, 3, ... without gaps; found {versions}")


def latest_version(migrations: Sequence[Migration] | None = None) -> int:
    migrations = bundled_migrations() if migrations is None else migrations
    return migrations[-1].version if migrations else 0


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def statements(sql: str) -> list[str]:
    """One migration file as single statements (``sqlite3`` executes one at a time, and
    ``executescript`` would commit the transaction the upgrade runs in)."""
    found: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    leftover = [ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if leftover:
        raise ValueError(f"SQL does not end with ';': {leftover[0][:80]!r}")
    return found


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] | None = None) -> int:
    """Bring the index to the newest schema in ``migrations`` (default: the bundled files);
    returns the version. ``conn`` must be in autocommit mode (``isolation_level=None``)."""
    migrations = bundled_migrations() if migrations is None else tuple(migrations)
    _check_sequence(migrations)
    latest = latest_version(migrations)
    conn.execute("BEGIN IMMEDIATE")  # read the version under the write lock: one upgrader at a time
    current = 0
    try:
        current = schema_version(conn)
        if current > latest:
            raise SchemaTooNew(
                f"the index {_db_name(conn)} was written by a newer FirstLook (schema version {current}; "
                f"this version knows up to {latest}): open it with that release or a newer one")
        if current == 0 and _has_tables(conn):
            log.info("index predates schema versions (release 4c3338c or older): recorded as version 1")
        for migration in migrations[current:]:
            for statement in statements(migration.sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        if isinstance(exc, (sqlite3.Error, ValueError)):
            raise MigrationFailed(f"upgrading the index {_db_name(conn)} from schema version {current} to {latest} "
                                  f"failed ({exc}); it is unchanged") from exc
        raise
    if latest > current:
        log.info("index schema upgraded from version %d to %d", current, latest)
    return latest


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                        ).fetchone()[0] > 0


def _db_name(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] or "(in memory)"
