"""`catbird-db seed`: realistic rows, valid beyond what the schema checks, loaded fast."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from catbird_db import (
    Database,
    InvalidInput,
    SchemaNotMigrated,
    conversations,
    migrate,
    mls,
)
from catbird_db.cid import compute as compute_cid
from catbird_db.tools import cli, seed

from support import ALICE, snapshot

# A test that seeds (VACUUM (ANALYZE): statistics, activity counters) or rolls a migration
# back gets a database of its own (tests/conftest.py); one the seed refuses leaves the
# database as it was, and shares it.
seeds = pytest.mark.fresh_database

SMALL = 0.05  # 200 users, 250 conversations: a second or so


def rows(raw: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return raw.execute(query).fetchall()


@seeds
def test_seed_fills_every_table_and_reports_the_rows_it_loaded(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    report = seed.seed(database_url, SMALL)
    counted = {t: rows(raw, f"SELECT count(*) FROM {t}")[0][0] for t in seed.TABLES}
    assert counted == dict(report.rows)
    assert all(n > 0 for n in counted.values())


@seeds
def test_seed_leaves_statistics_for_the_planner(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    seed.seed(database_url, SMALL)
    analyzed = rows(
        raw,
        "SELECT relname FROM pg_stat_user_tables"
        " WHERE last_analyze IS NOT NULL AND last_vacuum IS NOT NULL",
    )
    assert {r[0] for r in analyzed} >= set(seed.TABLES)


@seeds
def test_each_conversation_counts_its_messages_and_commits(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    seed.seed(database_url, SMALL)
    wrong = rows(
        raw,
        """
        SELECT c.id
        FROM conversations AS c
        LEFT JOIN LATERAL (
            SELECT
                count(*) AS n,
                coalesce(max(m.seq), 0) AS last,
                count(*) FILTER (WHERE m.message_type = 'commit') AS commits
            FROM messages AS m WHERE m.convo_id = c.id
        ) AS s ON TRUE
        WHERE c.last_seq <> s.last OR s.n <> s.last OR c.epoch <> s.commits
        """,
    )
    assert wrong == []


@seeds
def test_each_message_is_framed_in_the_epoch_of_the_commits_before_it(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    seed.seed(database_url, SMALL)
    wrong = rows(
        raw,
        """
        SELECT convo_id, seq FROM (
            SELECT
                m.convo_id,
                m.seq,
                m.epoch,
                m.sent_at,
                coalesce(count(*) FILTER (WHERE m.message_type = 'commit') OVER (
                    PARTITION BY m.convo_id ORDER BY m.seq
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                ), 0) AS commits_before,
                lag(m.sent_at) OVER (PARTITION BY m.convo_id ORDER BY m.seq) AS previous
            FROM messages AS m
        ) AS x
        WHERE x.epoch <> x.commits_before OR x.previous > x.sent_at
        """,
    )
    assert wrong == []


@seeds
def test_senders_are_members_who_joined_before_and_read_markers_are_in_range(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    seed.seed(database_url, SMALL)
    strangers = rows(
        raw,
        """
        SELECT m.convo_id, m.seq FROM messages AS m
        WHERE NOT EXISTS (
            SELECT 1 FROM members AS a
            WHERE
                a.convo_id = m.convo_id AND a.member_did = m.sender_did
                AND a.joined_seq < m.seq
                AND (m.message_type = 'app' OR a.role = 'admin')
        )
        """,
    )
    beyond = rows(
        raw,
        """
        SELECT a.convo_id, a.member_did FROM members AS a
        INNER JOIN conversations AS c ON a.convo_id = c.id
        WHERE a.last_read_seq > c.last_seq
        """,
    )
    assert (strangers, beyond) == ([], [])


@seeds
def test_key_package_refs_cids_and_usage_are_computed_from_the_bytes(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    seed.seed(database_url, SMALL)
    packages = rows(raw, "SELECT key_data, key_package_ref FROM key_packages")
    assert all(mls.key_package_ref(data) == ref for data, ref in packages)
    blobs = rows(raw, "SELECT cid, data FROM blobs")
    assert all(compute_cid(data) == cid for cid, data in blobs)
    usage = rows(
        raw,
        """
        SELECT u.owner_did FROM blob_usage AS u
        FULL JOIN (
            SELECT uploader_did, sum(size) AS used FROM blobs GROUP BY uploader_did
        ) AS b ON u.owner_did = b.uploader_did
        WHERE u.used_bytes IS DISTINCT FROM b.used
        """,
    )
    assert usage == []


@seeds
def test_the_sample_values_name_rows_as_described(
    database_url: str, raw: psycopg.Connection[Any]
) -> None:
    p = seed.seed(database_url, SMALL).picks
    biggest = rows(
        raw,
        "SELECT convo_id FROM members GROUP BY convo_id ORDER BY count(*) DESC LIMIT 1",
    )
    assert biggest == [(p.convo_id,)]
    member = raw.execute(
        "SELECT role, joined_seq, left_at FROM members WHERE convo_id = %s AND member_did = %s",
        (p.convo_id, p.member_did),
    ).fetchall()
    assert member == [("member", 0, None)]
    message = raw.execute(
        "SELECT seq, message_type, sent_at FROM messages WHERE convo_id = %s AND id = %s",
        (p.convo_id, p.message_id),
    ).fetchall()
    assert message == [(p.message_seq, "app", p.message_sent_at)]
    package = raw.execute(
        "SELECT owner_did, cipher_suite, is_last_resort, consumed_at FROM key_packages"
        " WHERE key_package_ref = %s",
        (p.key_package_ref,),
    ).fetchall()
    assert package == [(p.owner_did, 1, False, None)]
    welcome = raw.execute(
        "SELECT recipient_did, consumed_at FROM welcomes WHERE convo_id = %s AND id = %s",
        (p.welcome_convo_id, p.welcome_id),
    ).fetchall()
    assert welcome == [(p.recipient_did, None)]
    blob = raw.execute(
        "SELECT convo_id FROM blobs WHERE cid = %s AND uploader_did = %s",
        (p.blob_cid, p.blob_uploader_did),
    ).fetchall()
    assert blob == [(p.blob_convo_id,)]


def test_most_conversations_are_small_and_a_few_are_large() -> None:
    data = seed.generate(0.25, now=datetime(2026, 1, 1, tzinfo=UTC))
    sizes = sorted(Counter(r[0] for r in data.tables["members"]).values())
    assert statistics.median(sizes) <= 5
    assert sum(2 <= s <= 10 for s in sizes) / len(sizes) > 0.85
    assert sizes[-1] >= 400  # half of the 1000 users
    messages = sorted(Counter(r[0] for r in data.tables["messages"]).values())
    assert messages[-1] > 20 * statistics.median(messages)


def test_most_ciphertexts_are_between_100_bytes_and_4_kib() -> None:
    data = seed.generate(0.1, now=datetime(2026, 1, 1, tzinfo=UTC))
    sizes = [len(r[6]) for r in data.tables["messages"] if r[4] == "app"]
    share = sum(100 <= s <= 4096 for s in sizes) / len(sizes)
    assert share > 0.9


def test_the_same_seed_and_time_give_the_same_rows() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first, again = seed.generate(0.02, seed=7, now=now), seed.generate(0.02, seed=7, now=now)
    other = seed.generate(0.02, seed=8, now=now)

    def plain(data: seed.SeedData) -> dict[str, list[tuple[Any, ...]]]:
        return {
            t: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rs]
            for t, rs in data.tables.items()
        }

    assert plain(first) == plain(again)
    assert first.picks == again.picks
    assert plain(first) != plain(other)


async def test_seed_refuses_a_database_that_holds_data(
    db: Database, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    before = snapshot(raw)
    with pytest.raises(ValueError, match="holds data already"):
        seed.seed(database_url, SMALL)
    assert snapshot(raw) == before


@seeds
def test_seed_refuses_a_database_that_lacks_a_migration(database_url: str) -> None:
    (newest,) = migrate.rollback(database_url, 1)
    with pytest.raises(SchemaNotMigrated, match=newest):
        seed.seed(database_url, SMALL)


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, True, "1"])
def test_a_scale_that_is_not_a_positive_number_is_refused(
    scale: Any, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInput, match="scale"):
        seed.seed(database_url, scale)
    assert snapshot(raw) == before


@seeds
def test_the_command_seeds_and_prints_the_rows_and_sample_values(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["seed", "--scale", "0.02", "--database-url", database_url]) == 0
    out, err = capsys.readouterr()
    assert "messages" in out
    assert "sample values" in out
    assert "100%" in err  # the progress line, drawn once at the end off a terminal
