-- The rest of the roster's commits. A conversation keeps the GroupInfo of its latest
-- epoch, carried by the commit that made it (a new device reads it to join by an
-- external commit); whether such joins are allowed is the conversation's policy, set
-- by an admin. A conversation also keeps a digest of what its creation asked for, so
-- the creator retrying the same creation with the same id gets it back.
-- depends: 0013_roster_commits

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- The policy for external joins: 'none' (the default: every device joins by an add
-- commit and its welcome), or 'own_devices' (a new device of an active member may join
-- by itself). The digest of the creation (SHA-256, NULL on conversations created before
-- it was kept: their creation is not replayed). A constant default fills no rows.
ALTER TABLE conversations
ADD COLUMN external_joins text NOT NULL DEFAULT 'none',
ADD COLUMN creation_digest bytea,
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT conversations_external_joins_known
CHECK (external_joins IN ('none', 'own_devices')),
-- squawk-ignore constraint-missing-not-valid
ADD CONSTRAINT conversations_creation_digest_sha256
CHECK (creation_digest IS NULL OR octet_length(creation_digest) = 32);

-- The latest GroupInfo of a conversation, and the epoch it describes (the epoch its
-- commit created). One row per conversation, replaced by each commit that carries one,
-- never by an older epoch's. Goes with its conversation.
CREATE TABLE group_infos (
    -- Members fetch it by conversation.
    convo_id uuid PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    epoch bigint NOT NULL CHECK (epoch > 0),
    group_info bytea NOT NULL CHECK (octet_length(group_info) > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
