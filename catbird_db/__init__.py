"""catbird-db: the PostgreSQL data-access layer of the Catbird MLS delivery service.

async with Database.connect(DbConfig.from_env()) as db:
    convo = await conversations.create_conversation(
        db, actor_did="did:plc:alice", cipher_suite=1
    )
"""

from importlib.metadata import PackageNotFoundError, version

from . import (
    blobs,
    conversations,
    devices,
    group_infos,
    key_packages,
    member_devices,
    members,
    messages,
    welcomes,
)
from .config import DbConfig
from .database import Connection, Database, Executor, IsolationLevel, Transaction
from .errors import (
    AlreadyExists,
    BlobIntegrityError,
    CatbirdDbError,
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailable,
    DeviceRevoked,
    EpochConflict,
    InvalidCursor,
    InvalidInput,
    JoinNotAllowed,
    LastAdmin,
    NoKeyPackageAvailable,
    NotAMember,
    NotAnAdmin,
    NotFound,
    NotTheSender,
    PermissionDenied,
    QuotaExceeded,
    RetryableError,
    SchemaNotMigrated,
    ServerError,
    SqlRegistryError,
    StatementCancelled,
    StatementTimeout,
    TransactionAborted,
    TransactionClosed,
    TransactionTimeout,
)
from .events import Listener
from .models import (
    Blob,
    BlobInfo,
    ClaimedKeyPackages,
    Conversation,
    ConversationSummary,
    Device,
    ExternalJoins,
    GroupInfo,
    HealthReport,
    KeyPackage,
    KeyPackageCount,
    Member,
    MemberDevice,
    MembersAdded,
    Membership,
    MembersRemoved,
    Message,
    MessageEvent,
    NewMember,
    Removal,
    Welcome,
)
from .pages import Page


def _installed_version() -> str:
    try:
        return version("catbird-db")
    except PackageNotFoundError:  # a checkout imported without being installed
        return "0+unknown"


# The installed distribution's version (pyproject.toml's), as `catbird-db --version` says.
__version__: str = _installed_version()

__all__ = [
    "AlreadyExists",
    "Blob",
    "BlobInfo",
    "BlobIntegrityError",
    "CatbirdDbError",
    "ClaimedKeyPackages",
    "ConfigurationError",
    "Connection",
    "ConnectionLost",
    "Conversation",
    "ConversationSummary",
    "Database",
    "DatabaseUnavailable",
    "DbConfig",
    "Device",
    "DeviceRevoked",
    "EpochConflict",
    "Executor",
    "ExternalJoins",
    "GroupInfo",
    "HealthReport",
    "InvalidCursor",
    "InvalidInput",
    "IsolationLevel",
    "JoinNotAllowed",
    "KeyPackage",
    "KeyPackageCount",
    "LastAdmin",
    "Listener",
    "Member",
    "MemberDevice",
    "MembersAdded",
    "MembersRemoved",
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
    "PermissionDenied",
    "QuotaExceeded",
    "Removal",
    "RetryableError",
    "SchemaNotMigrated",
    "ServerError",
    "SqlRegistryError",
    "StatementCancelled",
    "StatementTimeout",
    "Transaction",
    "TransactionAborted",
    "TransactionClosed",
    "TransactionTimeout",
    "Welcome",
    "__version__",
    "blobs",
    "conversations",
    "devices",
    "group_infos",
    "key_packages",
    "member_devices",
    "members",
    "messages",
    "welcomes",
]
