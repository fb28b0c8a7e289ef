"""A benchmark database, created afresh and filled with COPY-speed SQL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit
from uuid import UUID, uuid4

import psycopg
from psycopg import sql as pgsql

from catbird_db import migrate

ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def fresh_database(server_url: str, prefix: str) -> str:
    """Create a database of a name no other run has (`prefix` and a random suffix) on
    the server, migrate it, return its URL; drop_database removes it."""
    parts = urlsplit(server_url)
    name = f"{prefix}_{uuid4().hex[:12]}"
    with psycopg.connect(_admin(server_url), autocommit=True) as conn:
        conn.execute(pgsql.Composed([pgsql.SQL("CREATE DATABASE "), pgsql.Identifier(name)]))
    url = urlunsplit(parts._replace(path=f"/{name}"))
    migrate.apply(url)
    return url


def drop_database(url: str) -> None:
    """Drop the database of `url` (made by fresh_database), with its sessions."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_admin(url), autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
        )


def _admin(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


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
