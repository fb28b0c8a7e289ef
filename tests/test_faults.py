"""Faults on a real server: backends terminated mid-operation and mid-transaction, a
connection killed during COMMIT, a server stopped and restarted under an open Database,
an idle-in-transaction timeout and a cancelled statement.

The timing is forced, never slept for: a side connection holds a lock the operation
needs, the test waits until the operation's backend is seen waiting on it in
pg_stat_activity, and only then terminates (or cancels) that backend and releases the
lock. Every fault is followed by the same checks: the error is one of the layer's, no
table holds anything of the failed operation, the same Database serves the next call,
and a retry with the same ids stores exactly once.

What each fault raises:

- a backend terminated in a statement, between two statements of a transaction, or
  during COMMIT (before or after the commit record): ConnectionLost (57P01, or no
  SQLSTATE when the socket closed first), the same whichever way it died;
- the server down: DatabaseUnavailable within acquire_timeout (the pool's timeout);
  connecting to it: DatabaseUnavailable naming libpq's reason;
- idle_in_transaction_session_timeout: TransactionTimeout, a ConnectionLost;
- pg_cancel_backend: StatementCancelled, not StatementTimeout; the next statement of the
  same transaction: TransactionAborted, unless the cancelled one ran in a savepoint
  (sends do), which leaves the transaction usable;
- a Transaction used after its block: TransactionClosed, nothing run.

A COMMIT cut off is ambiguous: the caller cannot tell the two COMMIT tests apart, and
only an idempotent retry (a send or commit by its id) is safe either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import psycopg
import pytest

from catbird_db import (
    CatbirdDbError,
    ConnectionLost,
    Conversation,
    Database,
    DatabaseUnavailable,
    DbConfig,
    Listener,
    Message,
    MessageEvent,
    NewMember,
    StatementCancelled,
    Transaction,
    TransactionAborted,
    TransactionClosed,
    TransactionTimeout,
    blobs,
    conversations,
    key_packages,
    messages,
    migrate,
    welcomes,
)
from catbird_db.mls import key_package_ref

from support import ALICE, BOB, CAROL, device_of, fake_key_package, fake_welcome, snapshot

# Backends killed mid-statement, servers stopped: each test gets a database of its own
# (tests/conftest.py).
pytestmark = pytest.mark.fresh_database

T = TypeVar("T")

# The application_name of the Database under test, so that its backends are told apart
# from the test's own sessions in pg_stat_activity.
APP = "catbird-faults"
HOLDER = "catbird-faults-holder"
# A guard against a hang, not a measurement: every awaited outcome is due at once.
PATIENCE_S = 30


def faulty_config(database_url: str, **overrides: Any) -> DbConfig:
    settings: dict[str, Any] = {
        "database_url": database_url,
        "min_size": 1,
        "max_size": 4,
        "acquire_timeout": 5,
        "connect_timeout": 5,
        "application_name": APP,
        "listen_retry_min_s": 0.05,
        "listen_retry_max_s": 0.2,
    }
    settings.update(overrides)
    return DbConfig(**settings)


@pytest.fixture
async def fdb(database_url: str) -> AsyncIterator[Database]:
    """A Database on this test's database whose sessions carry APP."""
    async with Database.connect(faulty_config(database_url)) as database:
        yield database


# -- finding, holding up and killing backends ---------------------------------------------


async def until_backend(raw: psycopg.Connection[Any], condition: str, app: str = APP) -> int:
    """The pid of the one session named `app` that meets `condition` (SQL over
    pg_stat_activity), polled until there is one (bounded). `raw` must be autocommit."""
    for _ in range(2000):
        rows = raw.execute(
            "SELECT pid FROM pg_stat_activity"
            f" WHERE datname = current_database() AND application_name = %s AND {condition}",
            (app,),
        ).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
        assert len(rows) < 2, f"several {app} sessions meet {condition}"
        await asyncio.sleep(0.005)  # let the operation's task run up to its wait
    raise AssertionError(f"no {app} session ever met {condition}")


def terminate(raw: psycopg.Connection[Any], pid: int) -> None:
    assert raw.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def cancel(raw: psycopg.Connection[Any], pid: int) -> None:
    assert raw.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)


@contextlib.contextmanager
def holding(
    database_url: str, sql: str, params: Any = None, *, replica: bool = False
) -> Iterator[psycopg.Connection[Any]]:
    """Run `sql` in an open transaction of a side session and keep it open (its locks,
    its uncommitted rows) until the block ends, then roll it back. `replica` turns the
    session's foreign-key triggers off, so it can hold a row the schema would refuse."""
    with psycopg.connect(database_url, application_name=HOLDER) as conn:
        if replica:
            conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql, params)
        try:
            yield conn
        finally:
            conn.rollback()


async def killed_while_blocked(
    raw: psycopg.Connection[Any],
    hold: contextlib.AbstractContextManager[Any],
    call: Awaitable[T],
    *,
    kill: Any = terminate,
) -> CatbirdDbError:
    """Run `call` while `hold` holds a lock it needs; once its backend waits on that
    lock, kill the backend, release the lock, and return the error the call raised."""
    with hold:
        task = asyncio.ensure_future(call)
        try:
            pid = await until_backend(raw, "wait_event_type = 'Lock'")
            kill(raw, pid)
        except BaseException:
            task.cancel()
            raise
    with pytest.raises(CatbirdDbError) as info:
        await asyncio.wait_for(task, PATIENCE_S)
    return info.value


def assert_connection_lost(exc: CatbirdDbError) -> None:
    """The error of a call whose connection died under it, however it died: a
    DatabaseUnavailable of its own kind, not the plain one that says no connection
    could be had at all, and never RetryableError, which promises nothing happened."""
    assert type(exc) is ConnectionLost, f"{type(exc).__name__}: {exc}"


def seqs(raw: psycopg.Connection[Any], convo_id: UUID) -> tuple[int, list[int]]:
    """The conversation's last_seq and the seqs of its stored messages, in order."""
    row = raw.execute("SELECT last_seq FROM conversations WHERE id = %s", (convo_id,)).fetchone()
    assert row is not None
    stored = raw.execute(
        "SELECT seq FROM messages WHERE convo_id = %s ORDER BY seq", (convo_id,)
    ).fetchall()
    return int(row[0]), [int(s) for (s,) in stored]


def assert_gapless(raw: psycopg.Connection[Any], convo_id: UUID, count: int) -> None:
    last_seq, stored = seqs(raw, convo_id)
    assert (last_seq, stored) == (count, list(range(1, count + 1)))


def count_rows(raw: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = raw.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


async def group(db: Database | Transaction, convo_id: UUID | None = None) -> Conversation:
    return await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB], convo_id=convo_id
    )


async def send(db: Database | Transaction, convo_id: UUID, msg_id: UUID) -> Message:
    return await messages.create_message(
        db, convo_id, actor_did=ALICE, message_id=msg_id, epoch=0, ciphertext=b"hello"
    )


async def still_serves(db: Database, convo_id: UUID) -> None:
    """The same Database answers reads and writes after the fault."""
    assert await conversations.get_conversation(db, convo_id, actor_did=ALICE) is not None
    assert (await db.health_check()).server_version >= 140000


# -- 1. a backend terminated in the middle of one operation -------------------------------


async def test_create_message_terminated_after_its_seq_bump(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # The side session holds an uncommitted row at seq 1: the send has locked the
    # sender's row and bumped last_seq when its own insert waits on that row.
    convo = await group(fdb)
    msg_id = uuid4()
    before = snapshot(raw)
    hold = holding(
        database_url,
        "INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)"
        " VALUES (%s, 1, gen_random_uuid(), %s, 'app', 0, '\\x00')",
        (convo.id, BOB),
        replica=True,
    )
    exc = await killed_while_blocked(raw, hold, send(fdb, convo.id, msg_id))
    assert snapshot(raw) == before
    await still_serves(fdb, convo.id)
    sent = await send(fdb, convo.id, msg_id)
    assert await send(fdb, convo.id, msg_id) == sent
    assert sent.seq == 1
    assert_gapless(raw, convo.id, 1)
    assert_connection_lost(exc)


async def test_submit_commit_terminated_after_its_epoch_swap(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await group(fdb)
    commit_id = uuid4()
    before = snapshot(raw)

    async def commit() -> Message:
        return await messages.submit_commit(
            fdb, convo.id, actor_did=BOB, message_id=commit_id, epoch=0, ciphertext=b"commit"
        )

    hold = holding(
        database_url,
        "INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)"
        " VALUES (%s, 1, gen_random_uuid(), %s, 'commit', 0, '\\x00')",
        (convo.id, ALICE),
        replica=True,
    )
    exc = await killed_while_blocked(raw, hold, commit())
    assert snapshot(raw) == before
    await still_serves(fdb, convo.id)
    stored = await commit()
    assert await commit() == stored
    assert (stored.seq, stored.epoch) == (1, 0)
    epoch = await conversations.get_current_epoch(fdb, convo.id, actor_did=ALICE)
    assert epoch == 1
    assert_gapless(raw, convo.id, 1)
    assert_connection_lost(exc)


async def test_add_members_with_commit_terminated_while_marking_its_key_package(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # The side session locks Carol's key package: the add has swapped the epoch and
    # inserted its commit, member and welcome when marking the package waits.
    convo = await group(fdb)
    kp = fake_key_package()
    await key_packages.store_key_package(
        fdb, actor_did=CAROL, device_id=await device_of(fdb, CAROL), cipher_suite=1, key_data=kp
    )
    await key_packages.claim_key_package(fdb, CAROL, 1, actor_did=ALICE)
    ref, commit_id = key_package_ref(kp), uuid4()
    carol = NewMember(CAROL, ref, fake_welcome([kp]))

    async def add() -> Any:
        return await welcomes.add_members_with_commit(
            fdb,
            convo.id,
            actor_did=ALICE,
            expected_epoch=0,
            commit_id=commit_id,
            commit=b"add carol",
            new_members=[carol],
        )

    before = snapshot(raw)
    hold = holding(
        database_url, "SELECT 1 FROM key_packages WHERE key_package_ref = %s FOR UPDATE", (ref,)
    )
    exc = await killed_while_blocked(raw, hold, add())
    assert snapshot(raw) == before
    await still_serves(fdb, convo.id)
    added = await add()
    assert (added.seq, added.epoch, added.members_added) == (1, 1, 1)
    # Idempotent by commit_id: the client that never saw its answer retries and gets the
    # stored result; nothing is written twice.
    stored = snapshot(raw)
    assert await add() == added
    assert snapshot(raw) == stored
    found = await messages.get_message(fdb, convo.id, commit_id, actor_did=ALICE)
    assert found is not None
    assert found.seq == added.seq
    assert_gapless(raw, convo.id, 1)
    assert count_rows(raw, "SELECT count(*) FROM welcomes WHERE convo_id = %s", convo.id) == 1
    assert (
        count_rows(raw, "SELECT use_count FROM key_packages WHERE key_package_ref = %s", ref) == 1
    )
    assert_connection_lost(exc)


async def test_store_blob_terminated_while_charging_the_quota(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # The uploader's usage row is locked: the blob row is inserted when the charge waits.
    convo = await group(fdb)
    await blobs.store_blob(fdb, b"first", actor_did=ALICE, mime_type="text/plain")
    data = os.urandom(1000)
    before = snapshot(raw)

    async def store() -> Any:
        return await blobs.store_blob(
            fdb, data, actor_did=ALICE, mime_type="image/png", convo_id=convo.id
        )

    hold = holding(
        database_url, "SELECT 1 FROM blob_usage WHERE owner_did = %s FOR UPDATE", (ALICE,)
    )
    exc = await killed_while_blocked(raw, hold, store())
    assert snapshot(raw) == before
    await still_serves(fdb, convo.id)
    stored = await store()
    assert await store() == stored
    assert count_rows(raw, "SELECT count(*) FROM blobs WHERE uploader_did = %s", ALICE) == 2
    used = count_rows(raw, "SELECT used_bytes FROM blob_usage WHERE owner_did = %s", ALICE)
    assert used == len(b"first") + len(data)
    assert_connection_lost(exc)


async def test_create_conversation_with_members_terminated_between_its_inserts(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # The side session holds an uncommitted members row of the new id: the conversation
    # row is inserted when the members insert waits on it.
    convo_id = uuid4()
    before = snapshot(raw)
    hold = holding(
        database_url,
        "INSERT INTO members (convo_id, member_did) VALUES (%s, %s)",
        (convo_id, BOB),
        replica=True,
    )
    exc = await killed_while_blocked(raw, hold, group(fdb, convo_id))
    assert snapshot(raw) == before
    created = await group(fdb, convo_id)
    await still_serves(fdb, created.id)
    assert count_rows(raw, "SELECT count(*) FROM conversations WHERE id = %s", convo_id) == 1
    assert count_rows(raw, "SELECT count(*) FROM members WHERE convo_id = %s", convo_id) == 2
    assert_connection_lost(exc)


# -- 1. a backend terminated in the middle of a caller's transaction ----------------------


async def chat(tx: Transaction, convo_id: UUID, first: UUID, second: UUID, data: bytes) -> None:
    """Several operations of one caller's transaction; the kill comes before `second`."""
    await group(tx, convo_id)
    await send(tx, convo_id, first)
    await blobs.store_blob(tx, data, actor_did=ALICE, mime_type="image/png", convo_id=convo_id)


async def test_a_transaction_terminated_between_two_statements_stores_nothing(
    fdb: Database, raw: psycopg.Connection[Any]
) -> None:
    convo_id, first, second, data = uuid4(), uuid4(), uuid4(), os.urandom(500)
    before = snapshot(raw)
    with pytest.raises(CatbirdDbError) as info:
        async with fdb.transaction() as tx:
            await chat(tx, convo_id, first, second, data)
            terminate(raw, await until_backend(raw, "state = 'idle in transaction'"))
            await send(tx, convo_id, second)
    assert snapshot(raw) == before
    # The whole transaction again, with the same ids: stored once. A second retry gets
    # what the first stored (every operation of it is idempotent) and writes nothing.
    async with fdb.transaction() as tx:
        await chat(tx, convo_id, first, second, data)
        await send(tx, convo_id, second)
    stored = snapshot(raw)
    async with fdb.transaction() as tx:
        await chat(tx, convo_id, first, second, data)
    assert snapshot(raw) == stored
    await still_serves(fdb, convo_id)
    assert_gapless(raw, convo_id, 2)
    assert count_rows(raw, "SELECT count(*) FROM blobs WHERE convo_id = %s", convo_id) == 1
    used = count_rows(raw, "SELECT used_bytes FROM blob_usage WHERE owner_did = %s", ALICE)
    assert used == len(data)
    assert_connection_lost(info.value)


async def test_a_transaction_terminated_inside_a_blocked_statement_stores_nothing(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await group(fdb)
    first, second = uuid4(), uuid4()
    before = snapshot(raw)

    async def two_sends() -> None:
        async with fdb.transaction() as tx:
            await send(tx, convo.id, first)
            await send(tx, convo.id, second)

    # The second send of the transaction waits on an uncommitted row at seq 2.
    hold = holding(
        database_url,
        "INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)"
        " VALUES (%s, 2, gen_random_uuid(), %s, 'app', 0, '\\x00')",
        (convo.id, BOB),
        replica=True,
    )
    exc = await killed_while_blocked(raw, hold, two_sends())
    assert snapshot(raw) == before
    await two_sends()
    await two_sends()
    await still_serves(fdb, convo.id)
    assert_gapless(raw, convo.id, 2)
    assert_connection_lost(exc)


# -- 2. a connection killed during COMMIT ------------------------------------------------

# A deferred constraint trigger runs at COMMIT, before the commit record is written:
# holding the advisory lock it takes holds the COMMIT, which then cannot have happened.
_HOLD_COMMIT = """
CREATE FUNCTION faults_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4242);
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER faults_hold_commit AFTER INSERT ON messages
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faults_hold_commit();
"""


async def test_a_connection_killed_during_commit_before_it_commits(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await group(fdb)
    raw.execute(_HOLD_COMMIT)
    msg_id = uuid4()
    before = snapshot(raw)

    async def send_in_a_transaction() -> Message:
        async with fdb.transaction() as tx:
            return await send(tx, convo.id, msg_id)

    with psycopg.connect(database_url, autocommit=True, application_name=HOLDER) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        task = asyncio.ensure_future(send_in_a_transaction())
        pid = await until_backend(raw, "wait_event = 'advisory' AND query = 'COMMIT'")
        terminate(raw, pid)
        holder.execute("SELECT pg_advisory_unlock(4242)")
    with pytest.raises(CatbirdDbError) as info:
        await asyncio.wait_for(task, PATIENCE_S)
    assert snapshot(raw) == before  # not committed
    sent = await send_in_a_transaction()
    assert await send_in_a_transaction() == sent
    assert sent.seq == 1
    assert_gapless(raw, convo.id, 1)
    # The caller cannot tell this from a COMMIT that did happen (the next test): the
    # same error either way, and only an idempotent retry is safe.
    assert_connection_lost(info.value)


async def test_a_commit_cancelled_while_it_waits_is_rolled_back(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await group(fdb)
    raw.execute(_HOLD_COMMIT)
    msg_id = uuid4()
    before = snapshot(raw)

    async def send_in_a_transaction() -> Message:
        async with fdb.transaction() as tx:
            return await send(tx, convo.id, msg_id)

    with psycopg.connect(database_url, autocommit=True, application_name=HOLDER) as holder:
        holder.execute("SELECT pg_advisory_lock(4242)")
        task = asyncio.ensure_future(send_in_a_transaction())
        cancel(raw, await until_backend(raw, "wait_event = 'advisory' AND query = 'COMMIT'"))
        holder.execute("SELECT pg_advisory_unlock(4242)")
    with pytest.raises(CatbirdDbError) as info:
        await asyncio.wait_for(task, PATIENCE_S)
    assert snapshot(raw) == before
    # The session survives a cancel: the pool hands it out again, outside a transaction.
    sent = await send_in_a_transaction()
    assert await send(fdb, convo.id, msg_id) == sent
    assert_gapless(raw, convo.id, 1)
    assert type(info.value) is StatementCancelled, repr(info.value)


# -- a throwaway server, to stop, restart and reconfigure ---------------------------------

_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Server:
    """A PostgreSQL of the test's own, run as the postgres OS user."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres", **options: str) -> str:
        url = f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
        if options:
            settings = "%20".join(f"-c%20{k}%3D{v}" for k, v in options.items())
            url += f"?options={settings}"
        return url

    def start(self) -> None:
        assert self.proc is None
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(_BIN / "postgres"),
                "-D", str(self.data),
                "-p", str(self.port),
                "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                # A standby that never comes: a session with synchronous_commit=on waits
                # at every COMMIT after its commit record is written; every other one
                # commits at once (local).
                "-c", "synchronous_standby_names=catbird_nowhere",
                "-c", "synchronous_commit=local",
            ],
            user="postgres",
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        for _ in range(600):
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self.proc.poll() is None, (self.root / "server.log").read_text()
                subprocess.run(["sleep", "0.05"], check=True)
        raise AssertionError("the throwaway server never accepted a connection")

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster, waiting until it is gone."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def new_database(self) -> str:
        name = f"faults_{uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE catbird_template')
        return self.url(name)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="catbird-faults-"))
    shutil.chown(root, "postgres", "postgres")
    srv = Server(root, _free_port())
    try:
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--",
                str(_BIN / "initdb"), "-D", str(srv.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=root,
        )  # fmt: skip
        srv.start()
        with psycopg.connect(srv.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE catbird_template")
        # migrate.apply closes its session: the template is then free to copy.
        migrate.apply(srv.url("catbird_template"))
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_connection_killed_during_commit_after_it_committed(server: Server) -> None:
    # This session waits for the standby after its commit record is written: killed
    # there, the transaction has committed, yet the caller gets an error.
    url = server.new_database()
    waiting = faulty_config(url + "?options=-c%20synchronous_commit%3Don")
    async with Database.connect(faulty_config(url)) as db, Database.connect(waiting) as sync:
        convo = await group(db)
        msg_id = uuid4()
        with psycopg.connect(url, autocommit=True) as raw:
            task = asyncio.ensure_future(_send_in_transaction(sync, convo.id, msg_id))
            terminate(raw, await until_backend(raw, "wait_event = 'SyncRep'"))
            with pytest.raises(CatbirdDbError) as info:
                await asyncio.wait_for(task, PATIENCE_S)
            stored = raw.execute(
                "SELECT seq FROM messages WHERE convo_id = %s AND id = %s", (convo.id, msg_id)
            ).fetchall()
            assert stored == [(1,)]  # committed after all
            # The retry of the idempotent send returns the stored message.
            retried = await _send_in_transaction(db, convo.id, msg_id)
            assert (retried.id, retried.seq) == (msg_id, 1)
            assert_gapless(raw, convo.id, 1)
            assert_connection_lost(info.value)


async def _send_in_transaction(db: Database, convo_id: UUID, msg_id: UUID) -> Message:
    async with db.transaction() as tx:
        return await send(tx, convo_id, msg_id)


# -- 3. the server stopped and restarted under an open Database --------------------------


async def test_a_restarted_server_is_survived_by_the_pool_and_the_listener(
    server: Server,
) -> None:
    url = server.new_database()
    config = faulty_config(url, min_size=2, acquire_timeout=1)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async with Database.connect(config) as db, db.listen(on_reconnect=on_reconnect) as events:
        convo = await group(db)
        first = await send(db, convo.id, uuid4())
        assert await next_event(events) == event_of(first)
        pending = asyncio.ensure_future(next_event(events))
        try:
            await asyncio.to_thread(server.stop)
            down_id = uuid4()
            for call in (
                send(db, convo.id, down_id),
                _send_in_transaction(db, convo.id, uuid4()),
                conversations.get_conversation(db, convo.id, actor_did=ALICE),
            ):
                with pytest.raises(CatbirdDbError) as info:
                    await asyncio.wait_for(call, PATIENCE_S)
                assert isinstance(info.value, DatabaseUnavailable), repr(info.value)
        finally:
            if server.proc is None:
                await asyncio.to_thread(server.start)
        # The same Database, not reopened: the first call after the restart succeeds.
        second = await send(db, convo.id, down_id)
        assert second.seq == 2
        async with asyncio.timeout(PATIENCE_S):
            await reconnected.wait()
        third = await send(db, convo.id, uuid4())
        # `second` may have been sent before the listener was back (its event is then
        # lost: on_reconnect is where a client catches up by seq); `third` was sent
        # after it listened again, and arrives.
        got = [await pending]
        if got[0] == event_of(second):
            got.append(await next_event(events))
        assert got[-1] == event_of(third), got
        assert events.reconnects == 1
        with psycopg.connect(url, autocommit=True) as raw:
            assert_gapless(raw, convo.id, 3)


async def test_a_fixed_size_pool_serves_the_first_call_after_a_restart(server: Server) -> None:
    # A pool of min_size == max_size has no slot to grow into: while the server is down
    # each slot retries its connection with a doubling back-off (1 s, 2 s, 4 s, ...), and
    # after the restart a call gets a connection only when some slot's next attempt
    # comes round, seconds later for an outage of seconds.
    url = server.new_database()
    config = faulty_config(url, min_size=2, max_size=2, acquire_timeout=1)
    async with Database.connect(config) as db:
        convo = await group(db)
        try:
            await asyncio.to_thread(server.stop)
            for _ in range(4):  # a few seconds down, as a restart or a failover takes
                with pytest.raises(DatabaseUnavailable):
                    await asyncio.wait_for(send(db, convo.id, uuid4()), PATIENCE_S)
        finally:
            if server.proc is None:
                await asyncio.to_thread(server.start)
        # The server is up: the first call must not fail for the pool's own back-off.
        assert (await send(db, convo.id, uuid4())).seq == 1


async def test_connect_to_a_stopped_server_fails_with_its_cause(server: Server) -> None:
    config = faulty_config(server.url("postgres"), connect_timeout=1, min_size=1)
    await asyncio.to_thread(server.stop)
    try:
        with pytest.raises(CatbirdDbError) as listening:
            async with asyncio.timeout(PATIENCE_S), Listener(config):
                pass
        assert isinstance(listening.value, DatabaseUnavailable)
        with pytest.raises(CatbirdDbError) as info:
            async with asyncio.timeout(PATIENCE_S), Database.connect(config, check_schema=False):
                pass
        assert isinstance(info.value, DatabaseUnavailable)
        assert "refused" in str(info.value), str(info.value)
    finally:
        await asyncio.to_thread(server.start)


async def next_event(events: Listener) -> MessageEvent:
    async with asyncio.timeout(PATIENCE_S):
        return await anext(events)


def event_of(message: Message) -> MessageEvent:
    return MessageEvent(message.convo_id, message.seq, message.message_type)


# -- 4. an idle-in-transaction timeout and a cancelled statement --------------------------


async def test_the_idle_in_transaction_timeout_ends_a_caller_transaction(
    raw: psycopg.Connection[Any], database_url: str
) -> None:
    # The server ends the session once the transaction has idled past the timeout; the
    # test waits for the session to be gone, not for a time.
    config = faulty_config(database_url + "?options=-c%20idle_in_transaction_session_timeout%3D200")
    async with Database.connect(config) as db:
        convo = await group(db)
        before = snapshot(raw)
        with pytest.raises(CatbirdDbError) as info:
            async with db.transaction() as tx:
                await send(tx, convo.id, uuid4())
                pid = await until_backend(raw, "state = 'idle in transaction'")
                await until_gone(raw, pid)
                await send(tx, convo.id, uuid4())
        exc = info.value
        assert snapshot(raw) == before
        await still_serves(db, convo.id)
        assert (await send(db, convo.id, uuid4())).seq == 1
        # Its own error: a lost connection, told apart from the other ways to lose one.
        assert isinstance(exc, TransactionTimeout), repr(exc)


async def until_gone(raw: psycopg.Connection[Any], pid: int) -> None:
    for _ in range(2000):
        if raw.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"backend {pid} never ended")


async def test_a_cancelled_statement_is_not_a_statement_timeout(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    convo = await group(fdb)
    msg_id = uuid4()
    before = snapshot(raw)
    hold = holding(
        database_url, "SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,)
    )
    exc = await killed_while_blocked(raw, hold, send(fdb, convo.id, msg_id), kill=cancel)
    assert snapshot(raw) == before
    # A cancel leaves the session usable: the pool keeps the connection.
    assert (await send(fdb, convo.id, msg_id)).seq == 1
    await still_serves(fdb, convo.id)
    assert_gapless(raw, convo.id, 1)
    # pg_cancel_backend is an operator's cancel, not the statement_timeout firing.
    assert type(exc) is StatementCancelled, repr(exc)


async def test_a_send_cancelled_in_a_transaction_leaves_it_usable(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # A send runs in a savepoint of the caller's transaction: a cancelled one is undone
    # alone, and the transaction goes on.
    convo = await group(fdb)
    errors: list[CatbirdDbError] = []
    second = uuid4()

    async def send_twice() -> None:
        async with fdb.transaction() as tx:
            try:
                await send(tx, convo.id, uuid4())
            except CatbirdDbError as exc:
                errors.append(exc)
            await send(tx, convo.id, second)

    with holding(database_url, "SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,)):
        task = asyncio.ensure_future(send_twice())
        cancel(raw, await until_backend(raw, "wait_event_type = 'Lock'"))
        for _ in range(2000):
            if errors:
                break
            await asyncio.sleep(0.005)
        await until_backend(raw, "wait_event_type = 'Lock'")  # the second send waits
    await asyncio.wait_for(task, PATIENCE_S)
    assert len(errors) == 1
    assert [m.id for m in (await messages.list_messages(fdb, convo.id, actor_did=ALICE)).items] == [
        second
    ]
    assert_gapless(raw, convo.id, 1)
    assert type(errors[0]) is StatementCancelled, repr(errors[0])


async def test_a_call_after_a_cancelled_statement_in_a_transaction_is_refused(
    fdb: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    # store_blob takes no savepoint: once it is cancelled the server refuses every
    # further statement of the transaction until it ends.
    convo = await group(fdb)
    before = snapshot(raw)
    errors: list[CatbirdDbError] = []

    async def store_then_send() -> None:
        async with fdb.transaction() as tx:
            try:
                await blobs.store_blob(
                    tx, b"blob", actor_did=ALICE, mime_type="text/plain", convo_id=convo.id
                )
            except CatbirdDbError as exc:
                errors.append(exc)
            await send(tx, convo.id, uuid4())

    hold = holding(
        database_url, "SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (convo.id,)
    )
    refused = await killed_while_blocked(raw, hold, store_then_send(), kill=cancel)
    assert len(errors) == 1
    assert snapshot(raw) == before
    await still_serves(fdb, convo.id)
    assert type(errors[0]) is StatementCancelled, repr(errors[0])
    # The refusal that follows: a documented error of its own, not the bare root class.
    assert isinstance(refused, TransactionAborted), repr(refused)


async def test_a_transaction_used_after_its_block_runs_nothing(
    fdb: Database, raw: psycopg.Connection[Any]
) -> None:
    # A caller that keeps the Transaction past a fault and retries on it must not write
    # through a connection the pool has handed back out.
    convo = await group(fdb)
    async with fdb.transaction() as tx:
        await send(tx, convo.id, uuid4())
    before = snapshot(raw)
    with pytest.raises(TransactionClosed):
        await send(tx, convo.id, uuid4())
    assert snapshot(raw) == before


async def test_a_failed_catch_up_is_run_again_before_events_are_delivered(
    fdb: Database, raw: psycopg.Connection[Any]
) -> None:
    # on_reconnect is where a client catches up by seq; when it fails (the pool may not
    # serve the catch-up read yet), iterating on must not deliver events as if the gap
    # had been read.
    convo = await group(fdb)
    calls = 0

    async def catch_up() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseUnavailable("the catch-up read found no connection")

    async with fdb.listen(on_reconnect=catch_up) as events:
        first = await send(fdb, convo.id, uuid4())
        assert await next_event(events) == event_of(first)
        pending = asyncio.ensure_future(next_event(events))
        terminate(raw, await until_backend(raw, "true", app=events.application_name))
        with pytest.raises(DatabaseUnavailable):
            await pending
        later = await send(fdb, convo.id, uuid4())
        assert await next_event(events) == event_of(later)
        assert calls == 2, "events were delivered after a catch-up that failed"


# -- no check on checkout: the call that meets a broken connection ------------------------


async def test_a_read_that_meets_a_broken_pooled_connection_runs_again_on_a_fresh_one(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """The pool hands its connections out unchecked (no round trip per checkout): a read
    that meets a dead one is run again once, on a fresh connection, and succeeds."""
    config = faulty_config(database_url, min_size=1, max_size=1)
    async with Database.connect(config) as db:
        convo = await group(db)
        terminate(raw, await until_backend(raw, "state = 'idle'"))
        found = await conversations.get_conversation(db, convo.id, actor_did=ALICE)
        assert found == convo
        assert await until_backend(raw, "state = 'idle'")  # a new session took its place


async def test_a_write_that_meets_a_broken_pooled_connection_raises_and_its_retry_is_stored_once(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """A write is never run again by the layer (it cannot know whether it ran): it
    raises ConnectionLost, and the client's retry by the same id is stored once."""
    config = faulty_config(database_url, min_size=1, max_size=1)
    async with Database.connect(config) as db:
        convo = await group(db)
        terminate(raw, await until_backend(raw, "state = 'idle'"))
        msg_id = uuid4()
        with pytest.raises(ConnectionLost):
            await send(db, convo.id, msg_id)
        first = await send(db, convo.id, msg_id)
        again = await send(db, convo.id, msg_id)
        assert first == again
        assert first.seq == 1
        assert_gapless(raw, convo.id, 1)


async def test_a_checked_pool_finds_the_broken_connection_before_the_call(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    """With check_on_checkout, the pool tests each connection as it hands it out: even a
    write never meets a dead one."""
    config = faulty_config(database_url, min_size=1, max_size=1, check_on_checkout=True)
    async with Database.connect(config) as db:
        convo = await group(db)
        terminate(raw, await until_backend(raw, "state = 'idle'"))
        assert (await send(db, convo.id, uuid4())).seq == 1
