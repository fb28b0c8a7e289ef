"""Opening the pool: one probe connection first, to learn why a connection fails, then
the pool itself with its session settings. Private to `Database.connect`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import psycopg
import psycopg_pool
from psycopg import AsyncConnection

from ._adapt import ADAPTERS
from .config import DbConfig
from .errors import DatabaseUnavailable
from .sql import statement

# Connection failures no retry can mend (libpq reports them as text, with no SQLSTATE):
# `connect` raises these at once instead of waiting out connect_timeout.
_PERMANENT = re.compile(
    r"does not exist|authentication failed|no pg_hba\.conf entry|permission denied"
    r"|failed to resolve host|invalid (?:connection option|integer value|sslmode)"
    r"|missing \"=\"|invalid URI",
    re.IGNORECASE,
)
_log = logging.getLogger("catbird_db")

_CONFIGURE_SESSION = statement("configure_session")


def new_pool(config: DbConfig) -> psycopg_pool.AsyncConnectionPool[Any]:
    """The pool of `config`, not yet open."""

    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.execute(
            _CONFIGURE_SESSION.text,
            {
                "statement_timeout": f"{config.statement_timeout_ms}ms",
                "lock_timeout": f"{config.lock_timeout_ms}ms",
            },
        )

    return psycopg_pool.AsyncConnectionPool(
        config.database_url,
        open=False,
        min_size=config.min_size,
        max_size=config.max_size,
        timeout=config.acquire_timeout,
        max_idle=config.idle_timeout,
        max_lifetime=config.max_lifetime,
        reconnect_timeout=config.reconnect_timeout,
        # A check costs a round trip per checkout; without it, Database._run finds
        # broken connections (see DbConfig.check_on_checkout).
        check=psycopg_pool.AsyncConnectionPool.check_connection
        if config.check_on_checkout
        else None,
        # Behind a transaction pooler a session SET would stay on one server
        # connection, for whichever clients get it next: each call sets its own.
        configure=None if config.transaction_pooler else configure,
        name=config.application_name,
        kwargs={
            "context": ADAPTERS,
            "autocommit": True,
            "prepare_threshold": config.prepare_threshold,
            "application_name": config.application_name,
        },
    )


async def probe(config: DbConfig) -> None:
    """Connect once, outside the pool, to learn why a connection fails.

    The pool only logs its failures and ends with a bare timeout; this raises
    DatabaseUnavailable with libpq's reason: at once for a failure no retry can mend (no
    such database or role, refused authentication, unknown host, a malformed URL), and
    for a transient one (refused port, server starting) after retrying with back-off
    until `connect_timeout`.
    """
    deadline = time.monotonic() + config.connect_timeout
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = await psycopg.AsyncConnection.connect(
                config.database_url,
                connect_timeout=max(1, round(remaining)),
                application_name=config.application_name,
            )
        except psycopg.Error as exc:
            reason = _reason(exc)
            if _PERMANENT.search(reason):
                raise DatabaseUnavailable(f"cannot connect: {reason}") from exc
            if time.monotonic() + delay >= deadline:
                raise DatabaseUnavailable(
                    f"cannot connect within {config.connect_timeout:g} s: {reason}"
                ) from exc
            _log.warning("cannot connect yet, retrying: %s", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        else:
            await conn.close()
            return


def _reason(exc: psycopg.Error) -> str:
    """libpq's message without its 'connection failed:' preamble, on one line."""
    text = str(exc).removeprefix("connection failed: ")
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.replace("FATAL:  ", "").strip()
