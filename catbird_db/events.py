"""Message events: LISTEN on a dedicated connection, reconnecting when it drops.

Every sequenced write queues `pg_notify('catbird_messages', 'convo_id:seq:type')` inside
its own transaction, so an event exists only for committed data, and events arrive in
commit order. PostgreSQL keeps no notification for a listener that is not connected:
after a reconnect, a listener must catch up by seq (`messages.list_messages` after the
last seq it saw in each conversation it follows) before it trusts events again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any, cast, get_args
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, Notify

from .config import DbConfig
from .errors import DatabaseUnavailable, translate
from .models import MessageEvent, MessageType
from .sql import statement

__all__ = ["CHANNEL", "Listener", "parse_event"]

CHANNEL = "catbird_messages"
_LISTEN = statement("listen_messages")
_MESSAGE_TYPES = frozenset(get_args(MessageType))
# PostgreSQL truncates application_name to 63 bytes.
_MAX_APPLICATION_NAME = 63


def parse_event(payload: str) -> MessageEvent | None:
    """The event in a notification payload, or None if it is not one of ours."""
    convo, _, rest = payload.partition(":")
    seq, _, message_type = rest.partition(":")
    if message_type not in _MESSAGE_TYPES or not seq.isdigit():
        return None
    try:
        convo_id = UUID(convo)
    except ValueError:
        return None
    return MessageEvent(convo_id, int(seq), cast(MessageType, message_type))


class Listener:
    """An async iterator of MessageEvents; use it as `async with db.listen() as events`.

    Entering opens a dedicated connection (never a pooled one: LISTEN lives as long as
    its session) and LISTENs: every message committed after that is delivered. When the
    connection drops, iteration reconnects with a growing back-off and calls
    `on_reconnect` once LISTEN is active again, before delivering further events. The
    events committed while it was away are lost: `on_reconnect` is where a listener
    catches up by seq. Leaving the block closes the connection.
    """

    def __init__(
        self,
        config: DbConfig,
        *,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config
        self._on_reconnect = on_reconnect
        self._conn: AsyncConnection[Any] | None = None
        self._notifies: AsyncGenerator[Notify, None] | None = None
        self._entered = False
        self._closed = False
        # Set by a reconnection until on_reconnect has returned: no event is delivered
        # before the catch-up succeeds, so a failed one is run again, never skipped.
        self._catch_up_pending = False
        self.reconnects = 0
        """How many times the connection was re-established."""

    @property
    def application_name(self) -> str:
        """The listener's `application_name`, to tell its session in pg_stat_activity."""
        return f"{self._config.application_name}:listen"[:_MAX_APPLICATION_NAME]

    async def __aenter__(self) -> Listener:
        if self._entered:
            raise RuntimeError("a Listener is entered once")
        self._entered = True
        try:
            await self._connect()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot listen: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        await self._disconnect()

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> MessageEvent:
        if not self._entered or self._closed:
            raise RuntimeError("iterate a Listener inside `async with db.listen() as events`")
        while True:
            if self._notifies is None:
                await self._reconnect()
                continue
            if self._catch_up_pending:
                await self._catch_up()
            try:
                notify = await anext(self._notifies)
            except StopAsyncIteration:
                # The generator ends when a wait in it was cancelled; the session may
                # still be fine, and then nothing was lost.
                if self._conn is not None and not self._conn.closed:
                    self._notifies = self._conn.notifies()
                else:
                    await self._disconnect()
                continue
            except psycopg.Error:  # the connection is lost: reconnect
                await self._disconnect()
                continue
            event = parse_event(notify.payload)
            if event is not None:
                return event

    async def _connect(self) -> None:
        conn = await AsyncConnection.connect(
            self._config.database_url,
            autocommit=True,
            application_name=self.application_name,
            connect_timeout=max(1, round(self._config.connect_timeout)),
            # A silent network partition would otherwise leave the socket waiting forever.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            await conn.execute(_LISTEN.text)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._notifies = conn.notifies()

    async def _reconnect(self) -> None:
        delay = self._config.listen_retry_min_s
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                await self._connect()
            except psycopg.OperationalError:
                delay = min(delay * 2, self._config.listen_retry_max_s)
                continue
            except psycopg.Error as exc:  # not a lost connection: retrying will not help
                raise translate(exc) from exc
            self.reconnects += 1
            self._catch_up_pending = self._on_reconnect is not None
            return

    async def _catch_up(self) -> None:
        # An exception here reaches the caller's `anext`; the next one runs it again.
        assert self._on_reconnect is not None
        await self._on_reconnect()
        self._catch_up_pending = False

    async def _disconnect(self) -> None:
        notifies, conn = self._notifies, self._conn
        self._notifies = self._conn = None
        if notifies is not None:
            # The connection may be gone already, or the generator still running in
            # another task; closing the connection below ends it either way.
            with contextlib.suppress(psycopg.Error, RuntimeError):
                await notifies.aclose()
        if conn is not None:
            await conn.close()
