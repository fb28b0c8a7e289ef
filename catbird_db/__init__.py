"""catbird-db: the PostgreSQL data-access layer of the Catbird MLS delivery service.

async with Database.connect(DbConfig.from_env()) as db:
    convo = await conversations.create_conversation(
        db, creator_did="did:plc:alice", cipher_suite=1
    )
"""

from . import conversations, key_packages, members, welcomes
from .config import DbConfig
from .database import Database, Executor, IsolationLevel, Transaction
from .errors import (
    AlreadyExists,
    BlobIntegrityError,
    CatbirdDbError,
    DatabaseUnavailable,
    EpochConflict,
    InvalidCursor,
    InvalidInput,
    LastAdmin,
    NoKeyPackageAvailable,
    NotAMember,
    NotAnAdmin,
    NotFound,
    QuotaExceeded,
    RetryableError,
    SchemaNotMigrated,
    SqlRegistryError,
    StatementTimeout,
)
from .models import (
    Conversation,
    ConversationSummary,
    HealthReport,
    KeyPackage,
    KeyPackageCount,
    Member,
    MembersAdded,
    Membership,
    NewMember,
    Welcome,
)
from .pages import Page

__all__ = [
    "AlreadyExists",
    "BlobIntegrityError",
    "CatbirdDbError",
    "Conversation",
    "ConversationSummary",
    "Database",
    "DatabaseUnavailable",
    "DbConfig",
    "EpochConflict",
    "Executor",
    "HealthReport",
    "InvalidCursor",
    "InvalidInput",
    "IsolationLevel",
    "KeyPackage",
    "KeyPackageCount",
    "LastAdmin",
    "Member",
    "MembersAdded",
    "Membership",
    "NewMember",
    "NoKeyPackageAvailable",
    "NotAMember",
    "NotAnAdmin",
    "NotFound",
    "Page",
    "QuotaExceeded",
    "RetryableError",
    "SchemaNotMigrated",
    "SqlRegistryError",
    "StatementTimeout",
    "Transaction",
    "Welcome",
    "conversations",
    "key_packages",
    "members",
    "welcomes",
]
