-- Blobs: encrypted attachments addressed by the CID of their bytes, and each
-- uploader's storage use, against which the quota is enforced.
-- depends: 0001_conversations

-- Fail fast rather than queue: a migration waiting for a lock blocks every query behind it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- One row per uploader and content: identical bytes uploaded by two users are two
-- rows, each private to its uploader (and the members of its conversation) and each
-- paid for by its uploader, so no user can claim, bind, delete or detect another's.
CREATE TABLE blobs (
    -- CIDv1, raw codec, sha2-256, base32 lower case without padding (the AT Protocol
    -- blob form): 'bafkrei' then the digest; the same check as validate.cid().
    cid text NOT NULL CHECK (cid ~ '^bafkrei[a-h][a-z2-7]{50}[aeimquy4]$'),
    uploader_did did NOT NULL,
    -- NULL: private to the uploader until bound (and removed by delete_orphan_blobs
    -- if never bound). Deleting the conversation deletes its blobs.
    convo_id uuid REFERENCES conversations (id) ON DELETE CASCADE,
    -- A hard ceiling of 256 MiB (see docs/blobs.md); DbConfig.max_blob_bytes is the
    -- enforced, lower cap.
    size bigint NOT NULL CHECK (size BETWEEN 1 AND 268435456),
    -- The same check as validate.mime_type().
    mime_type text NOT NULL CHECK (
        mime_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$'
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    data bytea NOT NULL,
    -- get_blob, get_blob_metadata, store_blob, bind_blob, delete_blob: a CID, then
    -- its uploader; delete_orphan_blobs deletes each batch by it.
    PRIMARY KEY (cid, uploader_did),
    CHECK (size = octet_length(data))
);

-- Ciphertext does not compress: store it out of line without trying to.
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- list_blobs_by_conversation: a conversation's blobs in upload order. It also serves
-- the cascade of delete_conversation, which finds a conversation's blobs by convo_id.
CREATE INDEX blobs_by_convo ON blobs (convo_id, created_at, cid, uploader_did)
WHERE convo_id IS NOT NULL;

-- delete_orphan_blobs: blobs bound to no conversation, oldest first.
CREATE INDEX blobs_orphans_by_age ON blobs (created_at)
WHERE convo_id IS NULL;

-- What each uploader's blobs take: charged by store_blob in the statement that inserts
-- the blob, given back by the trigger below on every delete (cascades included).
CREATE TABLE blob_usage (
    owner_did did PRIMARY KEY,
    used_bytes bigint NOT NULL CHECK (used_bytes >= 0),
    -- DbConfig.user_quota_bytes as of the owner's latest upload.
    quota_bytes bigint NOT NULL CHECK (quota_bytes >= 0),
    -- Checked on the newest row version under its row lock, so of concurrent uploads
    -- by one owner only those that fit are committed (errors.QuotaExceeded).
    CONSTRAINT blob_usage_within_quota CHECK (used_bytes <= quota_bytes)
);

-- Gives deleted blobs' bytes back to their uploaders, whichever statement deleted them
-- (delete_blob, delete_orphan_blobs, or delete_conversation's cascade). Owners are
-- locked in DID order, so two deletes spanning the same owners cannot deadlock.
CREATE FUNCTION blobs_give_back_bytes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1
    FROM blob_usage AS u
    WHERE u.owner_did IN (SELECT g.uploader_did FROM gone AS g)
    ORDER BY u.owner_did
    FOR NO KEY UPDATE;

    UPDATE blob_usage AS u
    SET used_bytes = u.used_bytes - freed.bytes
    FROM (
        SELECT g.uploader_did, sum(g.size) AS bytes
        FROM gone AS g
        GROUP BY g.uploader_did
    ) AS freed
    WHERE u.owner_did = freed.uploader_did;

    RETURN NULL;
END;
$$;

CREATE TRIGGER blobs_give_back_bytes
AFTER DELETE ON blobs
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION blobs_give_back_bytes();
