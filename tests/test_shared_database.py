"""The database tests share (tests/shared_database.py): after a reset the next test finds
none of the rows, sessions or sequences of the one before, and a change beyond rows
gets it a new clone. Run on a shared database of their own, not the session's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from shared_database import GROWN_BYTES, SharedDatabase
from support import ALICE, snapshot

_NAME = f"catbird_shared_check_{os.getpid()}"


@pytest.fixture
def shared(postgresql_server: Any) -> Iterator[SharedDatabase]:
    server = postgresql_server
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=_NAME,
        template_dbname=server.template_dbname,
        maintenance_dbname=server.maintenance_dbname,
        password=server.password,
    )
    auth = f"{server.user}:{server.password}@" if server.password else f"{server.user}@"
    database = SharedDatabase(janitor, f"postgresql://{auth}{server.host}:{server.port}/{_NAME}")
    try:
        database.checkout()
        yield database
    finally:
        database.drop()


def _oid(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        return int(row.fetchall()[0][0])


def _convo(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO conversations (id, creator_did, cipher_suite)"
        " VALUES (gen_random_uuid(), %s, 1)",
        (ALICE,),
    )


def test_a_reset_leaves_no_row_sequence_or_session_of_the_test_before(
    shared: SharedDatabase,
) -> None:
    with psycopg.connect(shared.url, autocommit=True) as conn:
        empty = snapshot(conn)
        first_id = conn.execute("SELECT nextval('key_packages_id_seq')").fetchall()
    clone = _oid(shared.url)

    conn = psycopg.connect(shared.url, autocommit=True)
    _convo(conn)
    conn.execute("SELECT nextval('key_packages_id_seq')")
    conn.execute("LISTEN anything")
    left_open = psycopg.connect(shared.url)  # a transaction holding a lock, never ended
    left_open.execute("SELECT 1 FROM conversations FOR UPDATE")
    left_open.execute("SET work_mem = '7MB'")
    shared.reset()
    shared.checkout()

    assert _oid(shared.url) == clone  # emptied, not cloned anew
    for ended in (conn, left_open):  # every session of it was ended
        with pytest.raises(psycopg.OperationalError):
            ended.execute("SELECT 1")
    with psycopg.connect(shared.url, autocommit=True) as fresh:
        assert snapshot(fresh) == empty
        assert fresh.execute("SELECT nextval('key_packages_id_seq')").fetchall() == first_id
        others = fresh.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        assert others == [(0,)]
        assert fresh.execute("SHOW work_mem").fetchall() != [("7MB",)]
    conn.close()
    left_open.close()


CHANGES = {
    "an index": "CREATE INDEX ON conversations (title)",
    "a column": "ALTER TABLE members ADD COLUMN nickname text",
    "a function": "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "a grant": "GRANT SELECT ON conversations TO PUBLIC",
    "a schema grant": "REVOKE USAGE ON SCHEMA public FROM PUBLIC",
    "a database setting": "ALTER DATABASE {db} SET work_mem = '7MB'",
    "a comment": "COMMENT ON TABLE messages IS 'x'",
    "statistics": "ANALYZE conversations",
    "a vacuum's counts": "VACUUM messages",
    "a truncate": "TRUNCATE blob_usage",
    "a migration's record": "DELETE FROM _yoyo_migration WHERE migration_id = '0006_blobs'",
    "a large object": "SELECT lo_create(0)",
    "a grown table": "INSERT INTO conversations (id, creator_did, cipher_suite)"
    " SELECT gen_random_uuid(), 'did:plc:' || g, 1 FROM generate_series(1, {rows}) AS g",
}


def test_a_change_beyond_rows_gets_the_next_test_a_new_clone(shared: SharedDatabase) -> None:
    rows = GROWN_BYTES // 50  # well past GROWN_BYTES of heap and indexes
    missed = []
    for name, change in CHANGES.items():
        clone = _oid(shared.url)
        with psycopg.connect(shared.url, autocommit=True) as conn:
            conn.execute(change.format(db=f'"{_NAME}"', rows=rows))
        shared.reset()
        shared.checkout()
        if _oid(shared.url) == clone:
            missed.append(name)
    assert missed == []
