"""The exception hierarchy, and the translation of psycopg errors by SQLSTATE."""

from __future__ import annotations

import psycopg
import psycopg_pool

__all__ = [
    "AlreadyExists",
    "BlobIntegrityError",
    "CatbirdDbError",
    "ConfigurationError",
    "ConnectionLost",
    "DatabaseUnavailable",
    "DeviceRevoked",
    "EpochConflict",
    "InvalidCursor",
    "InvalidInput",
    "JoinNotAllowed",
    "LastAdmin",
    "NoKeyPackageAvailable",
    "NotAMember",
    "NotAnAdmin",
    "NotFound",
    "NotTheSender",
    "PermissionDenied",
    "QuotaExceeded",
    "RetryableError",
    "SchemaNotMigrated",
    "ServerError",
    "SqlRegistryError",
    "StatementCancelled",
    "StatementTimeout",
    "TransactionAborted",
    "TransactionClosed",
    "TransactionTimeout",
    "translate",
]


class CatbirdDbError(Exception):
    """Root of every error this layer raises."""


class NotFound(CatbirdDbError):
    """The thing asked for does not exist (or the actor may not know that it does)."""


class AlreadyExists(CatbirdDbError):
    """A row with that key exists already; nothing of it is revealed."""


class InvalidInput(CatbirdDbError):
    """An argument failed a boundary check; nothing was written."""


class InvalidCursor(InvalidInput):
    """A page cursor was malformed, tampered with, or made for another query."""


class NotAMember(CatbirdDbError):
    """The actor is not an active member of the conversation."""


class NotAnAdmin(NotAMember):
    """The actor is a member but this needs the admin role."""


class NotTheSender(NotAMember):
    """Only the sender of a message may do this to it."""


class JoinNotAllowed(NotAMember):
    """The conversation does not let this device join its group by an external commit."""


class LastAdmin(CatbirdDbError):
    """The change would leave the conversation without an active admin."""


class EpochConflict(CatbirdDbError):
    """The expected epoch is not the conversation's current one."""

    def __init__(self, current_epoch: int, message: str | None = None) -> None:
        super().__init__(message or f"epoch conflict: the current epoch is {current_epoch}")
        self.current_epoch = current_epoch


class NoKeyPackageAvailable(CatbirdDbError):
    """The owner has no claimable key package for that cipher suite."""


class BlobIntegrityError(CatbirdDbError):
    """The blob's data does not match its CID."""


class QuotaExceeded(CatbirdDbError):
    """The write would take the user past a cap: their storage quota, their number of
    active devices, or a device's number of live key packages."""


class DeviceRevoked(CatbirdDbError):
    """The device was revoked by its owner: it registers, publishes, claims and receives
    nothing more."""


class RetryableError(CatbirdDbError):
    """The operation did not happen and may succeed if tried again: a serialization
    failure, a deadlock, or a lock wait past `lock_timeout`. In a Transaction the whole
    transaction is rolled back; retry all of it (`Database.run_transaction`). A race the
    layer met and undid itself (its savepoint only; no SQLSTATE, so `run_transaction`
    does not re-run it) says so in its message: call again."""


class DatabaseUnavailable(CatbirdDbError):
    """No connection could be had: the pool timed out, the server is down, starting,
    shutting down or out of resources. Nothing was sent; retrying later is safe."""


class ConnectionLost(DatabaseUnavailable):
    """The connection broke during the call (terminated backend, server restart, network).

    A transaction that had not committed is rolled back by the server. A single call in
    autocommit (or a COMMIT) cut off mid-flight may or may not have taken effect: retry
    it only if it is idempotent, as sends, commits and publishes are by their ids.
    """


class TransactionTimeout(ConnectionLost):
    """The server ended the session because a transaction stayed open and idle past its
    `idle_in_transaction_session_timeout`; the transaction was rolled back."""


class StatementCancelled(CatbirdDbError):
    """The server cancelled the statement (an operator's `pg_cancel_backend`, or a
    timeout); it did not take effect."""


class StatementTimeout(StatementCancelled):
    """The statement ran past `statement_timeout` and was cancelled."""


class TransactionAborted(CatbirdDbError):
    """An earlier statement of this transaction failed, so the server refuses every
    further one until the transaction ends; leave the block (it rolls back)."""


class TransactionClosed(CatbirdDbError):
    """The Transaction was used after its `async with` block ended; nothing was run."""


class PermissionDenied(CatbirdDbError):
    """The database role lacks a privilege the statement needs, or the session is
    read-only (a standby). Nothing was written."""


class ConfigurationError(CatbirdDbError):
    """The layer's settings do not fit the server it talks to, such as server-side
    prepared statements through a transaction-mode pooler (`prepare_threshold=None`)."""


class ServerError(CatbirdDbError):
    """The server failed in a way no other error describes (an internal or system error,
    SQLSTATE classes XX and 58); whether a write took effect is unknown."""


class SchemaNotMigrated(CatbirdDbError):
    """The database lacks migrations this version needs (`catbird-db migrate`), or a
    table or column a statement names is missing."""


class SqlRegistryError(CatbirdDbError):
    """The named SQL files are malformed; raised at load time."""


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, CatbirdDbError):
        _cls.__module__ = "catbird_db"

# Constraints whose violation means more than bad input; checked before the classes.
_BY_CONSTRAINT: dict[str, type[CatbirdDbError]] = {
    "blob_usage_within_quota": QuotaExceeded,
}

# Exact SQLSTATEs first, then the two-character class: every class has its error.
_BY_SQLSTATE: dict[str, type[CatbirdDbError]] = {
    "23505": AlreadyExists,  # unique_violation
    "23P01": AlreadyExists,  # exclusion_violation
    "23503": NotFound,  # foreign_key_violation
    "40001": RetryableError,  # serialization_failure
    "40P01": RetryableError,  # deadlock_detected
    "40003": ConnectionLost,  # statement_completion_unknown
    "55P03": RetryableError,  # lock_not_available: lock_timeout
    "55006": RetryableError,  # object_in_use
    "57014": StatementCancelled,  # query_canceled (the timeout is told apart below)
    "57P01": ConnectionLost,  # admin_shutdown: pg_terminate_backend, fast shutdown
    "57P02": ConnectionLost,  # crash_shutdown
    "57P03": DatabaseUnavailable,  # cannot_connect_now: starting up or in recovery
    "57P04": ConnectionLost,  # database_dropped
    "57P05": ConnectionLost,  # idle_session_timeout
    "25P02": TransactionAborted,  # in_failed_sql_transaction
    "25P03": TransactionTimeout,  # idle_in_transaction_session_timeout
    "25P04": TransactionTimeout,  # transaction_timeout (PostgreSQL 17)
    "25006": PermissionDenied,  # read_only_sql_transaction: a standby
    "42501": PermissionDenied,  # insufficient_privilege
    "42P01": SchemaNotMigrated,  # undefined_table
    "42703": SchemaNotMigrated,  # undefined_column
    "42883": SchemaNotMigrated,  # undefined_function
    "26000": ConfigurationError,  # invalid_sql_statement_name: a pooler lost a prepare
    "42P05": ConfigurationError,  # duplicate_prepared_statement: the same, other way
}
_BY_CLASS: dict[str, type[CatbirdDbError]] = {
    "08": ConnectionLost,  # connection_exception
    "0A": ConfigurationError,  # feature_not_supported
    "21": InvalidInput,  # cardinality_violation
    "22": InvalidInput,  # data_exception
    "23": InvalidInput,  # integrity_constraint_violation: CHECK, NOT NULL
    "25": TransactionAborted,  # invalid_transaction_state
    "28": DatabaseUnavailable,  # invalid_authorization_specification: role, password
    "3D": DatabaseUnavailable,  # invalid_catalog_name: no such database
    "40": RetryableError,  # transaction_rollback
    "42": ConfigurationError,  # syntax_error_or_access_rule_violation
    "53": DatabaseUnavailable,  # insufficient_resources: disk, memory, connections
    "54": InvalidInput,  # program_limit_exceeded: a value too large to process
    "55": RetryableError,  # object_not_in_prerequisite_state
    "57": DatabaseUnavailable,  # operator_intervention
    "58": ServerError,  # system_error
    "XX": ServerError,  # internal_error
}
_TIMEOUT_TEXT = "statement timeout"


def translate(exc: BaseException) -> CatbirdDbError:
    """Map a psycopg or pool error to this layer's hierarchy (chain the original yourself).

    The SQLSTATE decides; an error without one is a connection that could not be had
    (pool) or that broke (psycopg's OperationalError and InterfaceError).
    """
    if isinstance(exc, CatbirdDbError):
        return exc
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return DatabaseUnavailable(str(exc))
    message = _describe(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return ConnectionLost(message)
        if isinstance(exc, psycopg.DataError):  # raised by psycopg's own adapters
            return InvalidInput(message)
        return CatbirdDbError(message)
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
    if sqlstate.startswith("23") and constraint in _BY_CONSTRAINT:
        return _BY_CONSTRAINT[constraint](message)
    if sqlstate == "57014" and _TIMEOUT_TEXT in message:
        return StatementTimeout(message)
    target = _BY_SQLSTATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], ServerError)
    if target is ConfigurationError and sqlstate in ("26000", "42P05"):
        message += " (server-side prepared statements need a session: behind a "
        message += "transaction-mode pooler set prepare_threshold=None)"
    return target(message)


def _describe(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    primary = getattr(diag, "message_primary", None) or str(exc).splitlines()[0]
    return f"{primary} (constraint {constraint})" if constraint else primary
