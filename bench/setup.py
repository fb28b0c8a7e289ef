"""A benchmark database, created afresh and filled with COPY-speed SQL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit
from uuid import UUID, uuid4

import psycopg
from psycopg import sql as pgsql

from catbird_db import migrate

ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def fresh_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server, migrate it, return its URL."""
    parts = urlsplit(server_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        ident = pgsql.Identifier(name)
        conn.execute(pgsql.Composed([pgsql.SQL("DROP DATABASE IF EXISTS "), ident]))
        conn.execute(pgsql.Composed([pgsql.SQL("CREATE DATABASE "), ident]))
    url = urlunsplit(parts._replace(path=f"/{name}"))
    migrate.apply(url)
    return url


def conversation(
    url: str, *, members: int, messages: int, ciphertext_bytes: int = 200, devices: int = 0
) -> UUID:
    """A conversation with ALICE as admin, `members` members and `messages` messages;
    with `devices`, that many registered devices of each member in its group."""
    convo = uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO conversations (id, creator_did, cipher_suite, last_seq)"
            " VALUES (%s, %s, 1, %s)",
            (convo, ALICE, messages),
        )
        conn.execute(
            "INSERT INTO members (convo_id, member_did, role) VALUES (%s, %s, 'admin')",
            (convo, ALICE),
        )
        conn.execute(
            "INSERT INTO members (convo_id, member_did)"
            " SELECT %s, 'did:plc:member' || lpad(i::text, 16, '0')"
            " FROM generate_series(1, %s) AS i",
            (convo, members - 1),
        )
        conn.execute(
            "INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)"
            " SELECT %s, s, gen_random_uuid(), %s, 'app', 0,"
            " decode(repeat(md5(s::text), %s), 'hex')"
            " FROM generate_series(1, %s) AS s",
            (convo, ALICE, max(1, ciphertext_bytes // 16), messages),
        )
        if devices:
            conn.execute(
                "INSERT INTO devices (owner_did, id)"
                " SELECT m.member_did, gen_random_uuid()"
                " FROM members AS m CROSS JOIN generate_series(1, %s)"
                " WHERE m.convo_id = %s"
                " ON CONFLICT DO NOTHING",
                (devices, convo),
            )
            conn.execute(
                "INSERT INTO member_devices (convo_id, member_did, device_id, joined_seq)"
                " SELECT m.convo_id, m.member_did, d.id, 0"
                " FROM members AS m JOIN devices AS d ON d.owner_did = m.member_did"
                " WHERE m.convo_id = %s",
                (convo,),
            )
        conn.execute("ANALYZE")
    return convo


def message_id(url: str, convo: UUID, seq: int) -> UUID:
    """The id of message `seq` of `convo`."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM messages WHERE convo_id = %s AND seq = %s", (convo, seq)
        ).fetchone()
    assert row is not None
    return UUID(str(row[0]))
