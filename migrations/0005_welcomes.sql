-- Welcomes: the MLS Welcome that lets each newly added member join the group.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE welcomes (
    convo_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    recipient_did did NOT NULL,
    -- The KeyPackageRef the recipient was added with (no foreign key: consumed key
    -- packages are deleted after their retention period, welcomes after theirs).
    key_package_ref bytea NOT NULL CHECK (octet_length(key_package_ref) IN (32, 48, 64)),
    -- An MLSMessage holding a Welcome; a hard cap, DbConfig.max_welcome_bytes may set a lower one.
    welcome_data bytea NOT NULL CHECK (octet_length(welcome_data) BETWEEN 1 AND 16777216),
    created_at timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz,
    -- delete_consumed_welcomes deletes each batch by it; delete_conversation's cascade
    -- finds a conversation's welcomes by its leading convo_id.
    PRIMARY KEY (convo_id, id)
);

-- add_members_with_commit: at most one pending welcome per conversation, recipient and
-- key package.
CREATE UNIQUE INDEX welcomes_pending_unique
ON welcomes (convo_id, recipient_did, key_package_ref)
WHERE consumed_at IS NULL;

-- list_pending_welcomes: a recipient's pending welcomes, oldest first. consume_welcome
-- finds the pending welcome by it too (the recipient, then convo_id and id).
CREATE INDEX welcomes_pending_by_recipient
ON welcomes (recipient_did, created_at, convo_id, id)
WHERE consumed_at IS NULL;

-- delete_consumed_welcomes: consumed welcomes past the retention period.
CREATE INDEX welcomes_consumed ON welcomes (consumed_at)
WHERE consumed_at IS NOT NULL;
