-- Blobs: encrypted attachments, addressed by the CID of their bytes.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE blobs (
    -- CIDv1, raw codec, sha2-256, base32 lower-case multibase: always 'bafkrei' + 52 chars.
    cid text PRIMARY KEY CHECK (cid ~ '^bafkrei[a-z2-7]{52}$'),
    data bytea NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    mime_type text NOT NULL CHECK (
        char_length(mime_type) BETWEEN 3 AND 255
        AND mime_type ~ '^[a-z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+$'
    ),
    uploader_did did NOT NULL,
    convo_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (size = octet_length(data))
);
