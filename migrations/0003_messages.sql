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
    -- The clock when the row is inserted (not the transaction's start): a sequenced
    -- insert comes after the conversation's row lock is taken, so within a conversation
    -- sent_at never decreases as seq grows (list_messages_since relies on it).
    sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz,
    -- list_messages_forward/backward/since, get_message_count and the unread counts
    -- (a seq range of one conversation), delete_expired_messages, and the cascade of
    -- delete_conversation.
    PRIMARY KEY (convo_id, seq),
    -- get_message and the idempotent retry of create_message look a message up by id.
    UNIQUE (convo_id, id)
);

-- list_messages_since: the first seq sent at or after a timestamp (an index-only scan
-- for ORDER BY sent_at, seq LIMIT 1).
CREATE INDEX messages_by_sent_at ON messages (convo_id, sent_at, seq);

-- delete_expired_messages: the messages past their expiry, in batches. Partial, so
-- messages that never expire (most of them) cost nothing here.
CREATE INDEX messages_expiring ON messages (expires_at)
WHERE expires_at IS NOT NULL;
