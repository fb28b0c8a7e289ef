"""The wrapper: connecting, transactions, retries, error translation, health, tracing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from catbird_db import (
    Database,
    DatabaseUnavailable,
    DbConfig,
    InvalidCursor,
    InvalidInput,
    IsolationLevel,
    NewMember,
    RetryableError,
    SchemaNotMigrated,
    SqlRegistryError,
    Transaction,
    TransactionClosed,
    conversations,
    devices,
    key_packages,
    members,
    messages,
    welcomes,
)
from catbird_db.sql import Query, Statement, registry

from support import ALICE, BOB, CAROL, fake_key_package, snapshot


async def test_connect_fails_fast_on_an_unreachable_server() -> None:
    config = DbConfig(database_url="postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=1)
    with pytest.raises(DatabaseUnavailable):
        async with Database.connect(config):
            pass


@pytest.fixture
def empty_database_url(raw: psycopg.Connection[Any], database_url: str) -> Iterator[str]:
    name = f"catbird_empty_{uuid4().hex[:12]}"
    raw.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        raw.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.fresh_database  # its server is asked to create a database
async def test_connect_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    with pytest.raises(SchemaNotMigrated):
        async with Database.connect(DbConfig(database_url=empty_database_url, min_size=1)):
            pass


@pytest.mark.fresh_database  # it deletes a migration's record
async def test_connect_refuses_a_database_missing_a_migration(
    raw: psycopg.Connection[Any], config: DbConfig
) -> None:
    raw.execute("DELETE FROM _yoyo_migration WHERE migration_id = '0007_key_package_rows'")
    with pytest.raises(SchemaNotMigrated, match="0007_key_package_rows"):
        async with Database.connect(config):
            pass


async def test_a_transaction_commits_together(db: Database) -> None:
    async with db.transaction() as tx:
        convo = await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
        await members.add_member(tx, convo.id, BOB, actor_did=ALICE)
    assert await members.is_member(db, convo.id, BOB)


async def test_an_exception_rolls_the_transaction_back(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
            raise RuntimeError("boom")
    assert snapshot(raw) == before


async def test_a_nested_transaction_is_a_savepoint(db: Database) -> None:
    async with db.transaction() as tx:
        convo = await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
        with pytest.raises(RuntimeError):
            async with tx.transaction() as inner:
                await members.add_member(inner, convo.id, BOB, actor_did=ALICE)
                raise RuntimeError("undo the add only")
    assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) is not None
    assert not await members.is_member(db, convo.id, BOB)


async def test_savepoint_in_a_transaction_rolls_back_to_it_and_the_transaction_goes_on(
    db: Database,
) -> None:
    async with db.transaction() as tx:
        convo = await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
        with pytest.raises(RuntimeError):
            async with tx.savepoint() as inner:
                assert inner is tx
                await members.add_member(inner, convo.id, BOB, actor_did=ALICE)
                raise RuntimeError("undo the add only")
        assert not await members.is_member(tx, convo.id, BOB)
    assert await conversations.get_conversation(db, convo.id, actor_did=ALICE) is not None


async def test_savepoint_on_the_database_undoes_nothing(db: Database) -> None:
    # Each statement on the Database commits as it returns: there is nothing to roll back.
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    with pytest.raises(RuntimeError):
        async with db.savepoint() as same:
            assert same is db
            await members.add_member(same, convo.id, BOB, actor_did=ALICE)
            raise RuntimeError("the add stays committed")
    assert await members.is_member(db, convo.id, BOB)


async def test_run_transaction_reruns_the_body_after_a_serialization_failure(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    read_done, other_committed = asyncio.Event(), asyncio.Event()
    attempts = 0

    async def bump(tx: Transaction) -> int:
        nonlocal attempts
        attempts += 1
        epoch = await conversations.get_current_epoch(tx, convo.id, actor_did=ALICE)
        read_done.set()
        await other_committed.wait()
        commit = await messages.submit_commit(
            tx, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=epoch, ciphertext=b"c"
        )
        return commit.epoch + 1

    task = asyncio.create_task(
        db.run_transaction(bump, isolation=IsolationLevel.SERIALIZABLE, retries=2)
    )
    await read_done.wait()
    await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    other_committed.set()
    assert await task == 2
    assert attempts == 2


async def test_run_transaction_gives_up_after_its_retries(db: Database) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    read_done, other_committed = asyncio.Event(), asyncio.Event()

    async def bump(tx: Transaction) -> int:
        epoch = await conversations.get_current_epoch(tx, convo.id, actor_did=ALICE)
        read_done.set()
        await other_committed.wait()
        commit = await messages.submit_commit(
            tx, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=epoch, ciphertext=b"c"
        )
        return commit.epoch + 1

    task = asyncio.create_task(
        db.run_transaction(bump, isolation=IsolationLevel.SERIALIZABLE, retries=0)
    )
    await read_done.wait()
    await messages.submit_commit(
        db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
    )
    other_committed.set()
    with pytest.raises(RetryableError) as info:
        await task
    assert isinstance(info.value.__cause__, psycopg.errors.SerializationFailure)


async def test_a_lock_wait_past_lock_timeout_is_retryable_not_a_psycopg_error(
    config: DbConfig, database_url: str
) -> None:
    short = DbConfig(database_url=database_url, min_size=1, lock_timeout_ms=100)
    async with Database.connect(short) as db:
        convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
        with psycopg.connect(database_url) as holder:
            holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,))
            with pytest.raises(RetryableError) as info:
                await messages.submit_commit(
                    db, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"c"
                )
            assert isinstance(info.value.__cause__, psycopg.errors.LockNotAvailable)


async def test_an_exhausted_pool_is_database_unavailable(database_url: str) -> None:
    tiny = DbConfig(database_url=database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    async with Database.connect(tiny) as db, db.transaction():
        with pytest.raises(DatabaseUnavailable):
            await conversations.list_conversations(db, actor_did=ALICE)


async def test_health_check_reports_the_server_and_the_pool(db: Database) -> None:
    report = await db.health_check()
    assert report.server_version >= 140000
    assert report.in_recovery is False
    assert report.latency_s > 0
    assert report.pool_size >= 1


async def test_sessions_carry_the_configured_name_and_timeouts(database_url: str) -> None:
    config = DbConfig(
        database_url=database_url,
        min_size=1,
        application_name="catbird-test",
        statement_timeout_ms=1234,
    )
    async with Database.connect(config) as db, db.transaction() as tx:
        conn = tx._conn
        assert conn is not None
        cur = await conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')"
        )
        assert await cur.fetchone() == ("catbird-test", "1234ms")


@dataclass(frozen=True, slots=True)
class _NotHealth:
    server_version: int
    replica: bool


async def test_a_query_whose_columns_are_not_its_dataclass_fields_fails_on_its_first_rows(
    db: Database,
) -> None:
    mismatched = Query(registry()["health_check"], _NotHealth)
    with pytest.raises(SqlRegistryError, match=r"columns \('server_version', 'in_recovery'\)"):
        await db.fetch_one(mismatched, {})
    assert (await db.health_check()).server_version > 0  # the pool is none the worse


async def test_the_tracer_sees_every_statement_by_name(config: DbConfig) -> None:
    seen: list[str] = []

    def tracer(stmt: Statement, params: Any, seconds: float) -> None:
        seen.append(stmt.qualified_name)

    async with Database.connect(config, tracer=tracer) as db:
        convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
        await conversations.get_conversation(db, convo.id, actor_did=ALICE)
    assert seen[-2:] == [
        "conversations.create_conversation_with_members",
        "conversations.get_conversation",
    ]


async def test_cursors_are_accepted_by_another_instance_with_the_same_secret_only(
    database_url: str,
) -> None:
    secret = b"s" * 32
    first = DbConfig(database_url=database_url, min_size=1, cursor_secret=secret)
    async with Database.connect(first) as db:
        for _ in range(2):
            await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
        page = await conversations.list_conversations(db, actor_did=ALICE, limit=1)
    assert page.next_cursor is not None
    async with Database.connect(first) as same:
        rest = await conversations.list_conversations(
            same, actor_did=ALICE, cursor=page.next_cursor
        )
        assert len(rest.items) == 1
    other = DbConfig(database_url=database_url, min_size=1, cursor_secret=b"t" * 32)
    async with Database.connect(other) as db:
        with pytest.raises(InvalidCursor):
            await conversations.list_conversations(db, actor_did=ALICE, cursor=page.next_cursor)


def test_config_reads_the_environment() -> None:
    config = DbConfig.from_env(
        {
            "DATABASE_URL": "postgresql://x@h/db",
            "CATBIRD_DB_MAX_SIZE": "7",
            "CATBIRD_DB_PREPARE_THRESHOLD": "none",
            "CATBIRD_DB_ACQUIRE_TIMEOUT": "1.5",
            "CATBIRD_DB_CURSOR_SECRET": "x" * 20,
        },
        min_size=0,
    )
    assert config.database_url == "postgresql://x@h/db"
    assert (config.max_size, config.prepare_threshold, config.acquire_timeout) == (7, None, 1.5)
    assert (config.cursor_secret, config.min_size) == (b"x" * 20, 0)


@pytest.mark.parametrize(
    "setting",
    [
        {"max_size": 0},
        {"min_size": 5, "max_size": 2},
        {"max_page_size": 0},
        {"epoch_window": -1},
        {"cursor_secret": b"short"},
        {"acquire_timeout": 0},
        {"user_quota_bytes": -1},
        {"prepare_threshold": -1},
        {"max_title_chars": 257},
        {"max_blob_bytes": 256 * 1024 * 1024 + 1},
        {"max_batch_size": 0},
        {"max_publish_batch": 0},
        {"max_initial_members": 0},
        {"max_new_members": 0},
    ],
)
def test_config_refuses_settings_that_would_break_every_call(setting: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        DbConfig(**setting)


async def test_every_limit_the_checks_enforce_is_the_configs(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    lowered = replace(
        config,
        max_title_chars=3,
        max_initial_members=1,
        max_publish_batch=1,
        max_new_members=1,
        max_batch_size=5,
    )
    async with Database.connect(lowered) as db:
        convo = await conversations.create_conversation_with_members(
            db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], title="abc"
        )
        before = snapshot(raw)
        with pytest.raises(InvalidInput, match="title"):
            await conversations.create_conversation(
                db, actor_did=ALICE, cipher_suite=1, title="abcd"
            )
        with pytest.raises(InvalidInput, match="at most 1 initial members"):
            await conversations.create_conversation_with_members(
                db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB, CAROL]
            )
        with pytest.raises(InvalidInput, match="at most 1 key packages"):
            await key_packages.publish_key_packages(
                db,
                actor_did=BOB,
                device_id=devices.legacy_device_id(BOB),  # refused before it is looked up
                cipher_suite=1,
                key_packages=[fake_key_package(), fake_key_package()],
            )
        with pytest.raises(InvalidInput, match="1 to 1 devices"):
            await welcomes.add_members_with_commit(
                db,
                convo.id,
                actor_did=ALICE,
                expected_epoch=0,
                commit_id=uuid4(),
                commit=b"commit",
                new_members=[NewMember(d, b"\x01" * 32, b"welcome") for d in (BOB, CAROL)],
            )
        with pytest.raises(InvalidInput, match="batch_size must be between 1 and 5"):
            await messages.delete_expired_messages(db, batch_size=6)
        assert await messages.delete_expired_messages(db, batch_size=5) == 0
        assert snapshot(raw) == before


async def test_a_transaction_refuses_every_call_once_its_block_has_ended(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    async with db.transaction() as stale:
        await members.add_member(stale, convo.id, BOB, actor_did=ALICE)
    assert stale.closed
    before = snapshot(raw)
    # Another caller's transaction now holds the connection the stale one had.
    async with db.transaction() as other:
        for call in (
            lambda: messages.create_message(
                stale, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"x"
            ),
            lambda: conversations.get_conversation(stale, convo.id, actor_did=ALICE),
        ):
            with pytest.raises(TransactionClosed):
                await call()
        with pytest.raises(TransactionClosed):
            async with stale.transaction():
                pass
        await conversations.get_conversation(other, convo.id, actor_did=ALICE)
    assert snapshot(raw) == before


async def test_a_transaction_ended_by_an_error_is_closed_too(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction() as tx:
            raise ZeroDivisionError
    with pytest.raises(TransactionClosed):
        await conversations.list_conversations(tx, actor_did=ALICE)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("postgres@127.0.0.1:5432/catbird_no_such_db", 'database "catbird_no_such_db"'),
        ("catbird_no_such_role@127.0.0.1:5432/postgres", 'role "catbird_no_such_role"'),
    ],
    ids=["missing-database", "unknown-role"],
)
async def test_connect_names_a_permanent_failure_at_once(path: str, reason: str) -> None:
    # connect_timeout is long: a permanent failure must not wait it out. The hang guard
    # is far below it, so a call that waited would fail the test.
    config = DbConfig(database_url=f"postgresql://{path}", connect_timeout=120)
    with pytest.raises(DatabaseUnavailable, match=reason):
        await asyncio.wait_for(_open_and_close(config), timeout=30)


async def test_connect_to_a_refused_port_says_so() -> None:
    config = DbConfig(database_url="postgresql://postgres@127.0.0.1:1/x", connect_timeout=1)
    with pytest.raises(DatabaseUnavailable, match="refused"):
        await _open_and_close(config)


async def _open_and_close(config: DbConfig) -> None:
    async with Database.connect(config):
        pass


def test_config_repr_hides_the_password() -> None:
    config = DbConfig(database_url="postgresql://app:hunter2-secret@db.internal:5432/catbird")
    shown = repr(config)
    assert "hunter2" not in shown
    assert "postgresql://app:***@db.internal:5432/catbird" in shown
    assert "hunter2" not in repr(DbConfig(database_url="host=db password=hunter2 user=app"))


def test_config_refuses_a_misspelt_variable_and_names_a_bad_value() -> None:
    with pytest.raises(ValueError, match="CATBIRD_DB_MAX_SIZ"):
        DbConfig.from_env({"CATBIRD_DB_MAX_SIZ": "7"})
    with pytest.raises(ValueError, match="CATBIRD_DB_MAX_SIZE"):
        DbConfig.from_env({"CATBIRD_DB_MAX_SIZE": "seven"})
    with pytest.raises(ValueError, match="CATBIRD_DB_MAX_SIZE"):
        DbConfig.from_env({"CATBIRD_DB_MAX_SIZE": "0"})


async def test_a_request_scoped_connection_runs_every_call_on_one_checkout(
    config: DbConfig, raw: psycopg.Connection[Any]
) -> None:
    """`db.connection()`: the calls of one request share one pooled connection, each in
    autocommit (committed as it returns), with one checkout for all of them."""
    async with Database.connect(config) as db:
        requests_before = db._pool.get_stats().get("requests_num", 0)
        async with db.connection() as conn:
            convo = await conversations.create_conversation(conn, actor_did=ALICE, cipher_suite=1)
            sent = await messages.create_message(
                conn, convo.id, actor_did=ALICE, message_id=uuid4(), epoch=0, ciphertext=b"hi"
            )
            # Committed already: another session sees it before the block ends.
            seen = raw.execute("SELECT count(*) FROM messages WHERE id = %s", [sent.id])
            assert seen.fetchone() == (1,)
            assert await messages.get_message(conn, convo.id, sent.id, actor_did=ALICE) == sent
            page = await conversations.list_conversations(conn, actor_did=ALICE)
            assert [c.id for c in page.items] == [convo.id]
            assert not conn.closed
        assert db._pool.get_stats().get("requests_num", 0) - requests_before == 1
        assert conn.closed
        with pytest.raises(TransactionClosed):
            await conversations.get_conversation(conn, convo.id, actor_did=ALICE)


async def test_a_transaction_on_a_request_scoped_connection_commits_or_rolls_back(
    db: Database, raw: psycopg.Connection[Any]
) -> None:
    async with db.connection() as conn:
        async with conn.transaction() as tx:
            kept = await conversations.create_conversation(tx, actor_did=ALICE, cipher_suite=1)
        before = snapshot(raw)
        with pytest.raises(RuntimeError):
            async with conn.transaction(isolation=IsolationLevel.SERIALIZABLE) as tx:
                await conversations.create_conversation(tx, actor_did=BOB, cipher_suite=1)
                raise RuntimeError("undo")
        assert snapshot(raw) == before
        # The connection goes on, back at the default isolation level, in autocommit.
        assert await conversations.get_conversation(conn, kept.id, actor_did=ALICE) == kept
        async with conn.savepoint() as same:
            assert same is conn
        with pytest.raises(InvalidInput):
            async with conn.transaction(isolation=3):  # type: ignore[arg-type]
                pass
