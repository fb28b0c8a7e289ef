"""The exception hierarchy, and the translation of psycopg errors by SQLSTATE."""

from __future__ import annotations

import psycopg
import psycopg_pool
from psycopg import errors as pg

__all__ = [
    "AlreadyExists",
    "BlobIntegrityError",
    "CatbirdDbError",
    "DatabaseUnavailable",
    "EpochConflict",
    "InvalidCursor",
    "InvalidInput",
    "LastAdmin",
    "NoKeyPackageAvailable",
    "NotAMember",
    "NotAnAdmin",
    "NotFound",
    "NotTheSender",
    "QuotaExceeded",
    "RetryableError",
    "SchemaNotMigrated",
    "SqlRegistryError",
    "StatementTimeout",
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
    """The write would take the user past their storage quota."""


class RetryableError(CatbirdDbError):
    """The operation did not happen and may succeed if tried again."""


class DatabaseUnavailable(CatbirdDbError):
    """No connection could be had: the pool timed out or the server is down."""


class StatementTimeout(CatbirdDbError):
    """The statement ran past `statement_timeout` and was cancelled."""


class SchemaNotMigrated(CatbirdDbError):
    """The database lacks migrations this version needs (`catbird-db migrate`)."""


class SqlRegistryError(CatbirdDbError):
    """The named SQL files are malformed; raised at load time."""


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, CatbirdDbError):
        _cls.__module__ = "catbird_db"

# Constraints whose violation means more than bad input; checked before the classes.
_BY_CONSTRAINT: dict[str, type[CatbirdDbError]] = {
    "blob_usage_within_quota": QuotaExceeded,
}

# Ordered: the first matching psycopg class wins.
_BY_CLASS: tuple[tuple[type[Exception], type[CatbirdDbError]], ...] = (
    (pg.UniqueViolation, AlreadyExists),
    (pg.ExclusionViolation, AlreadyExists),
    (pg.ForeignKeyViolation, NotFound),
    (pg.SerializationFailure, RetryableError),
    (pg.DeadlockDetected, RetryableError),
    (pg.LockNotAvailable, RetryableError),
    (pg.QueryCanceled, StatementTimeout),
    (pg.AdminShutdown, DatabaseUnavailable),
    (pg.CannotConnectNow, DatabaseUnavailable),
    (pg.TooManyConnections, DatabaseUnavailable),
    (pg.IntegrityConstraintViolation, InvalidInput),
    (pg.DataException, InvalidInput),
    (psycopg.OperationalError, RetryableError),
    (psycopg.DataError, InvalidInput),
    # psycopg's classes follow DB-API, not SQLSTATE classes: CheckViolation and
    # NotNullViolation are IntegrityErrors, not IntegrityConstraintViolations.
    (psycopg.IntegrityError, InvalidInput),
)


def translate(exc: BaseException) -> CatbirdDbError:
    """Map a psycopg or pool error to this layer's hierarchy (chain the original yourself)."""
    if isinstance(exc, CatbirdDbError):
        return exc
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return DatabaseUnavailable(str(exc))
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
    if isinstance(exc, psycopg.IntegrityError) and constraint in _BY_CONSTRAINT:
        return _BY_CONSTRAINT[constraint](_describe(exc))
    for source, target in _BY_CLASS:
        if isinstance(exc, source):
            return target(_describe(exc))
    return CatbirdDbError(_describe(exc))


def _describe(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    primary = getattr(diag, "message_primary", None) or str(exc).splitlines()[0]
    return f"{primary} (constraint {constraint})" if constraint else primary
