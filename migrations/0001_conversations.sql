-- Conversations: one row per MLS group, holding its epoch and its message counter.

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- An AT Protocol DID (https://atproto.com/specs/did): the same check as validate.did().
-- One definition for every table. Changing the check later means validating every
-- column of this type, and that migration plans for it.
CREATE DOMAIN did AS text
-- squawk-ignore ban-create-domain-with-constraint
CHECK (
    octet_length(VALUE) <= 2048
    AND VALUE ~ '^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$'
);

CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    creator_did did NOT NULL,
    -- The MLS cipher suites registered by RFC 9420 (section 17.1): a code held in
    -- range by its CHECK, not a counter that could outgrow smallint.
    -- squawk-ignore prefer-bigint-over-smallint
    cipher_suite smallint NOT NULL CHECK (cipher_suite BETWEEN 1 AND 7),
    epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    -- The seq of the conversation's newest message: the next one gets last_seq + 1.
    last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    title text CHECK (char_length(title) BETWEEN 1 AND 256),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Last activity: creation, or the newest message or commit.
    updated_at timestamptz NOT NULL DEFAULT now()
);
