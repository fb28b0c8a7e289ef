"""DbConfig: pool settings and the limits the boundary checks enforce."""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/catbird"
_ENV_PREFIX = "CATBIRD_DB_"


# A password in a URL's user info, in its query string, or in a key=value conninfo.
_PASSWORD = re.compile(r"(?<=://)([^:/@]*):[^@]*@|(?<=[?&\s])(password=)[^&\s]*|^(password=)\S*")


def redact(url: str) -> str:
    """The URL or conninfo string with any password replaced by `***`."""
    return _PASSWORD.sub(
        lambda m: f"{m[1]}:***@" if m[1] is not None else f"{m[2] or m[3]}***", url
    )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DbConfig:
    """Everything `Database.connect` needs; every field has a production-minded default."""

    database_url: str = DEFAULT_URL
    min_size: int = 2
    max_size: int = 10
    # Seconds a caller waits for a pooled connection before DatabaseUnavailable.
    acquire_timeout: float = 5.0
    # Seconds `connect` waits for the first connections: a bad URL fails this fast.
    connect_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_lifetime: float = 3600.0
    # Seconds the pool keeps trying to replace a lost connection before it gives the slot
    # up; a call then opens a fresh one. Short, so a restarted server serves at once.
    reconnect_timeout: float = 1.0
    # Test each connection with a round trip as it is checked out of the pool. Off: a
    # broken connection is found by the call that meets it (the pool discards it as it
    # comes back, and sweeps its idle ones then); a read is run again once, a write
    # raises ConnectionLost (sends and commits are idempotent by id: send them again).
    check_on_checkout: bool = False
    # None disables server-side prepared statements; transaction_pooler forces None.
    prepare_threshold: int | None = 2
    # The database_url reaches PostgreSQL through a pooler in transaction mode (PgBouncer
    # pool_mode=transaction): no session state, timeouts set per transaction instead.
    transaction_pooler: bool = False
    # Where Database.listen() connects; None is database_url. LISTEN needs a session of
    # its own, so behind a transaction pooler this must reach PostgreSQL directly.
    listen_url: str | None = None
    application_name: str = "catbird-db"
    statement_timeout_ms: int = 30_000
    lock_timeout_ms: int = 10_000
    # Signs page cursors. Set the same secret on every server instance so a cursor
    # made by one is accepted by another; the default lives as long as the process.
    cursor_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    max_page_size: int = 100
    # The rows a maintenance delete may be asked to remove per statement.
    max_batch_size: int = 100_000
    max_title_chars: int = 256
    # create_conversation_with_members: members besides the creator.
    max_initial_members: int = 1000
    # Application messages may carry the current epoch or one this many epochs older.
    epoch_window: int = 0
    max_message_bytes: int = 1024 * 1024
    # Database.listen(): the first and the longest wait between reconnection attempts.
    listen_retry_min_s: float = 0.05
    listen_retry_max_s: float = 5.0
    max_key_package_bytes: int = 64 * 1024
    # publish_key_packages: distinct packages per call.
    max_publish_batch: int = 10_000
    key_package_lifetime_s: int = 90 * 24 * 3600
    # Consumed key packages are kept this long, so a retried publish of one stays a no-op.
    key_package_retention_s: int = 30 * 24 * 3600
    max_welcome_bytes: int = 1024 * 1024
    # A commit's GroupInfo: with the ratchet tree in it, it grows with the group.
    max_group_info_bytes: int = 1024 * 1024
    # add_members_with_commit: members one commit adds.
    max_new_members: int = 1000
    # Consumed welcomes are kept this long before delete_consumed_welcomes removes them.
    welcome_retention_s: int = 7 * 24 * 3600
    # A welcome left pending this long expires: it is no longer listed nor consumable.
    welcome_ttl_s: int = 30 * 24 * 3600
    max_blob_bytes: int = 50 * 1024 * 1024
    user_quota_bytes: int = 1024 * 1024 * 1024
    # delete_orphan_blobs removes blobs bound to no conversation after this many seconds.
    orphan_blob_retention_s: int = 24 * 3600
    # register_device: the active (not revoked) devices one user may have.
    max_devices_per_user: int = 20
    # Publishing: the live (unconsumed, unexpired) key packages one device may have.
    max_key_packages_per_device: int = 1000
    # Claims: how long a claimed key package is held for its claimer before it is
    # claimable again, unless an add commit consumes it or the claimer releases it.
    reservation_ttl_s: int = 300

    def __repr__(self) -> str:
        """Every setting but the cursor secret, with the password of a URL hidden."""
        shown = []
        for f in fields(self):
            if f.name == "cursor_secret":
                continue
            value = getattr(self, f.name)
            if isinstance(value, str) and f.name.endswith("_url"):
                value = redact(value)
            shown.append(f"{f.name}={value!r}")
        return f"DbConfig({', '.join(shown)})"

    def __post_init__(self) -> None:
        """Refuse settings that would break every call later: fail when the config is made.

        ValueError for a value of the wrong type (no bool for a number, no str for bytes),
        a non-finite or out-of-range number, or sizes that contradict each other.
        """
        for f in fields(self):
            _check_type(f.name, str(f.type), getattr(self, f.name))
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if len(self.cursor_secret) < 16:
            raise ValueError("cursor_secret must be at least 16 bytes")
        if self.prepare_threshold is not None and self.prepare_threshold < 0:
            raise ValueError("prepare_threshold must be None or at least 0")
        if self.transaction_pooler and self.prepare_threshold is not None:
            # A prepared statement lives on one server connection, and the pooler hands
            # the next call to any of them.
            object.__setattr__(self, "prepare_threshold", None)
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {_bound(low)} and {_bound(high)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> DbConfig:
        """Build a config from DATABASE_URL and CATBIRD_DB_<FIELD> variables, then overrides.

        ValueError, naming the variable, for a CATBIRD_DB_ variable that names no
        setting (a misspelt one would otherwise be ignored) or holds a bad value.
        """
        source = os.environ if environ is None else environ
        if not isinstance(source, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in source.items()
        ):
            raise ValueError("environ must be a mapping of strings to strings")
        env = dict(source)
        values: dict[str, Any] = {}
        if "DATABASE_URL" in env:
            values["database_url"] = env["DATABASE_URL"]
        known = {_ENV_PREFIX + f.name.upper(): f for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(_ENV_PREFIX) and k not in known)
        if unknown:
            raise ValueError(f"unknown setting {', '.join(unknown)}: no such DbConfig field")
        for variable, f in known.items():
            raw = env.get(variable)
            if raw is not None:
                try:
                    values[f.name] = _parse(f.name, str(f.type), raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not a valid {f.type}") from None
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as exc:
            names = [v for v, f in known.items() if f.name in str(exc) and v in env]
            if not names:
                raise
            raise ValueError(f"{', '.join(names)}: {exc}") from None


# Upper bounds keep every setting inside what it feeds: a PostgreSQL int (timeouts in
# ms), a bigint (byte counts), a timestamp that now() plus the setting still reaches
# (lifetimes and retentions: a century), an asyncio wait (seconds: ten years).
_INT4 = 2**31 - 1
_BIGINT = 2**63 - 1
_CENTURY_S = 100 * 365 * 24 * 3600
_DECADE_S = 10.0 * 365 * 24 * 3600
_TINY_S = 1e-3
# The bounds the schema's CHECKs repeat: conversations.title, blobs.size (docs/blobs.md
# says why 256 MiB).
_TITLE_CHARS = 256
_BLOB_BYTES = 256 * 1024 * 1024
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("min_size", 0, 10_000),
    ("max_size", 1, 10_000),
    ("acquire_timeout", _TINY_S, _DECADE_S),
    ("connect_timeout", _TINY_S, _DECADE_S),
    ("idle_timeout", _TINY_S, _DECADE_S),
    ("max_lifetime", _TINY_S, _DECADE_S),
    ("reconnect_timeout", _TINY_S, _DECADE_S),
    ("listen_retry_min_s", _TINY_S, _DECADE_S),
    ("listen_retry_max_s", _TINY_S, _DECADE_S),
    ("statement_timeout_ms", 1, _INT4),
    ("lock_timeout_ms", 1, _INT4),
    ("max_page_size", 1, _INT4 - 1),
    ("max_batch_size", 1, _INT4),
    ("max_title_chars", 1, _TITLE_CHARS),
    ("max_initial_members", 1, _INT4),
    ("epoch_window", 0, _BIGINT),
    ("max_message_bytes", 1, _INT4),
    ("max_key_package_bytes", 1, _INT4),
    ("max_welcome_bytes", 1, _INT4),
    ("max_group_info_bytes", 1, _INT4),
    ("max_publish_batch", 1, _INT4),
    ("max_new_members", 1, _INT4),
    ("max_blob_bytes", 1, _BLOB_BYTES),
    ("user_quota_bytes", 0, _BIGINT),
    ("key_package_lifetime_s", 1, _CENTURY_S),
    ("key_package_retention_s", 0, _CENTURY_S),
    ("welcome_retention_s", 0, _CENTURY_S),
    ("welcome_ttl_s", 1, _CENTURY_S),
    ("orphan_blob_retention_s", 0, _CENTURY_S),
    ("max_devices_per_user", 1, _INT4),
    ("max_key_packages_per_device", 1, _INT4),
    ("reservation_ttl_s", 1, _CENTURY_S),
)


def _bound(value: float) -> str:
    """A range bound as a refusal names it: an int exactly, a float briefly."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_type(name: str, type_name: str, value: object) -> None:
    optional = type_name.endswith(" | None")
    if optional and value is None:
        return
    base = type_name.removesuffix(" | None")
    if base == "int":
        ok = type(value) is int
    elif base == "float":
        ok = type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
    elif base == "bool":
        ok = type(value) is bool
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "bytes":
        ok = isinstance(value, bytes)
    else:  # pragma: no cover - a field of a type this table does not know
        raise AssertionError(f"DbConfig.{name}: unchecked type {type_name}")
    if not ok:
        raise ValueError(f"{name} must be {'a finite number' if base == 'float' else base}")


def _parse(name: str, type_name: str, raw: str) -> Any:
    if name == "cursor_secret":
        return raw.encode()
    if type_name == "int | None":
        return None if raw.strip().lower() in ("", "none") else int(raw)
    if type_name == "str | None":
        return raw.strip() or None
    if type_name == "int":
        return int(raw)
    if type_name == "float":
        return float(raw)
    if type_name == "bool":
        lowered = raw.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(raw)
        return lowered in ("1", "true", "yes", "on")
    return raw
