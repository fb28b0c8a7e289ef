"""`catbird-db explain`: the plan of a named statement as it runs, with nothing kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import AsyncConnection

from catbird_db import Database, conversations
from catbird_db.sql import registry
from catbird_db.tools import cli
from catbird_db.tools.describe import describe, numbered
from catbird_db.tools.explain import explain_named, parse_params

from support import ALICE, BOB, snapshot


async def test_the_plan_of_a_read_shows_its_index_and_buffers(
    db: Database, database_url: str
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    lines = await explain_named(
        database_url, "get_conversation", {"convo_id": str(convo.id), "actor_did": ALICE}
    )
    assert any("using conversations_pkey on conversations" in line for line in lines)
    assert any("actual time=" in line for line in lines)  # ANALYZE: it ran
    assert any(line.strip().startswith("Buffers:") for line in lines)
    assert lines[-1].startswith("Execution Time:")


async def test_explaining_a_write_leaves_nothing_behind(
    db: Database, database_url: str, raw: psycopg.Connection[Any]
) -> None:
    convo = await conversations.create_conversation(db, actor_did=ALICE, cipher_suite=1)
    before = snapshot(raw)
    lines = await explain_named(
        database_url,
        "sequence_message",
        {
            "convo_id": str(convo.id),
            "actor_did": ALICE,
            "id": str(uuid4()),
            "message_type": "commit",
            "epoch": "0",
            "epoch_window": "0",
            "ciphertext": "\\x636f6d6d6974",
            "expires_at": None,
            "admin_only": "false",
            "targets": "[]",
            "lock_admins": "false",
            "device_id": None,
            "channel": "catbird_messages",
        },
    )
    assert any("Update on conversations" in line and "rows=1" in line for line in lines)
    lines = await explain_named(
        database_url,
        "create_conversation_with_members",
        {
            "convo_id": str(uuid4()),
            "actor_did": ALICE,
            "cipher_suite": "1",
            "title": None,
            "member_dids": f'["{BOB}"]',
            "device_id": None,
            "creation_digest": "\\x" + "ab" * 32,
        },
    )
    assert any("Insert on members" in line for line in lines)
    assert snapshot(raw) == before


async def test_values_are_read_as_the_types_the_statement_gives_its_parameters(
    database_url: str,
) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        found = await describe(conn, registry()["list_conversations"])
        created = await describe(conn, registry()["create_conversation_with_members"])
    convo_id = uuid4()
    assert parse_params(
        found.params,
        {
            "actor_did": ALICE,
            "before_updated_at": "2026-01-02T03:04:05+00:00",
            "before_id": str(convo_id),
            "limit": "51",
        },
    ) == {
        "actor_did": ALICE,
        "before_updated_at": datetime.fromisoformat("2026-01-02T03:04:05+00:00"),
        "before_id": convo_id,
        "limit": 51,
    }
    params = parse_params(
        created.params,
        {
            "convo_id": str(convo_id),
            "actor_did": ALICE,
            "cipher_suite": "3",
            "title": None,
            "member_dids": f'["{BOB}", "{ALICE}"]',
            "device_id": str(convo_id),
            "creation_digest": "\\x" + "ab" * 32,
        },
    )
    assert params["creation_digest"] == bytes([0xAB] * 32)
    assert params["cipher_suite"] == 3
    assert params["title"] is None
    assert params["member_dids"] == [BOB, ALICE]
    assert isinstance(params["convo_id"], UUID)
    assert params["device_id"] == convo_id


async def test_missing_unknown_and_unreadable_values_are_named(database_url: str) -> None:
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        found = await describe(conn, registry()["get_conversation"])
    with pytest.raises(
        ValueError,
        match=r"missing: actor_did \(text\); unknown: actor; "
        r"the statement takes: convo_id \(uuid\), actor_did \(text\)",
    ):
        parse_params(found.params, {"convo_id": str(uuid4()), "actor": ALICE})
    with pytest.raises(ValueError, match="--param convo_id: not a uuid"):
        parse_params(found.params, {"convo_id": "zz", "actor_did": ALICE})


def test_the_command_prints_the_plan(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "explain",
            "get_current_epoch",
            "--database-url",
            database_url,
            "--param",
            f"convo_id={uuid4()}",
            "--param",
            f"actor_did={ALICE}",
        ]
    )
    assert code == 0
    assert "Execution Time:" in capsys.readouterr().out


def test_the_command_reports_a_refused_statement_and_keeps_nothing(
    database_url: str, raw: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(raw)
    code = cli.main(
        [
            "explain",
            "create_conversation_with_members",
            "--database-url",
            database_url,
            "--param",
            f"convo_id={uuid4()}",
            "--param",
            f"actor_did={ALICE}",
            "--param",
            "cipher_suite=99",
            "--null",
            "title",
            "--param",
            "member_dids=[]",
            "--null",
            "device_id",
            "--null",
            "creation_digest",
        ]
    )
    assert code == 1
    assert "conversations_cipher_suite_check" in capsys.readouterr().err
    assert snapshot(raw) == before


async def test_a_tools_statement_is_explained_from_the_tools_registry(
    database_url: str,
) -> None:
    lines = await explain_named(database_url, "describe_types", {"type_oids": "[25, 2950]"})
    assert any("pg_type" in line for line in lines)
    assert lines[-1].startswith("Execution Time:")


def test_the_command_refuses_an_unknown_statement(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["explain", "get_conversaton", "--database-url", database_url]) == 1
    assert "no named statement 'get_conversaton'" in capsys.readouterr().err


def test_placeholders_are_numbered_as_psycopg_sends_them() -> None:
    assert numbered("SELECT %(a)s, %(b)s, %(a)s WHERE x LIKE 'a%%'") == (
        "SELECT $1, $2, $1 WHERE x LIKE 'a%'",
        ("a", "b"),
    )
    with pytest.raises(ValueError, match="unsupported placeholder %s"):
        numbered("SELECT %s")
