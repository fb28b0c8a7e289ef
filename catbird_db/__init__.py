"""catbird-db: the PostgreSQL data-access layer of the Catbird MLS delivery service.

async with Database.connect(DbConfig.from_env()) as db:
    convo = await conversations.create_conversation(
        db, creator_did="did:plc:alice", cipher_suite=1
    )
"""

from . import blobs, conversations, key_packages, members, messages, welcomes
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
    NotTheSender,
    QuotaExceeded,
    RetryableError,
    SchemaNotMigrated,
    SqlRegistryError,
    StatementTimeout,
)
from .events import Listener
from .models import (
    Blob,
    BlobInfo,
    Conversation,
    ConversationSummary,
    HealthReport,
    KeyPackage,
    KeyPackageCount,
    Member,
    MembersAdded,
    Membership,
    Message,
    MessageEvent,
    NewMember,
    Welcome,
)
from .pages import Page

__all__ = [
    "AlreadyExists",
    "Blob",
    "BlobInfo",
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
    "Listener",
    "Member",
    "MembersAdded",
    "Membership",
    "Message",
    "MessageEvent",
    "NewMember",
    "NoKeyPackageAvailable",
    "NotAMember",
    "NotAnAdmin",
    "NotFound",
    "NotTheSender",
    "Page",
    "QuotaExceeded",
    "RetryableError",
    "SchemaNotMigrated",
    "SqlRegistryError",
    "StatementTimeout",
    "Transaction",
    "Welcome",
    "blobs",
    "conversations",
    "key_packages",
    "members",
    "messages",
    "welcomes",
]
