-- Messages: each conversation's application messages and commits, in seq order.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE messages (
    convo_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Gapless per conversation: conversations.last_seq + 1, in the inserting transaction.
    seq bigint NOT NULL CHECK (seq > 0),
    -- Chosen by the sender: the idempotency key of a send.
    id uuid NOT NULL,
    sender_did did NOT NULL,
    message_type text NOT NULL CHECK (message_type IN ('app', 'commit')),
    epoch bigint NOT NULL CHECK (epoch >= 0),
    -- A hard cap; DbConfig.max_message_bytes may set a lower one.
    ciphertext bytea NOT NULL CHECK (octet_length(ciphertext) BETWEEN 1 AND 16777216),
    sent_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (convo_id, seq),
    -- get_message and the idempotent retry of create_message look a message up by id.
    UNIQUE (convo_id, id)
);
