-- Welcomes: the MLS Welcome that lets each newly added member join the group.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE welcomes (
    convo_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    recipient_did did NOT NULL,
    key_package_ref bytea NOT NULL CHECK (octet_length(key_package_ref) BETWEEN 16 AND 64),
    welcome_data bytea NOT NULL CHECK (octet_length(welcome_data) BETWEEN 1 AND 16777216),
    created_at timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz,
    PRIMARY KEY (convo_id, id)
);
