-- name: store_blob
-- Stores a blob for its uploader, unbound or bound to a conversation the uploader is an
-- active member of. Content the uploader already has comes back as stored, charged
-- nothing (and bound, if it was unbound and a conversation is given). The usage row is
-- charged only for a row actually inserted (a concurrent duplicate meets ON CONFLICT
-- and pays nothing), after the insert and under the usage row's lock, where
-- blob_usage_within_quota judges the newest usage and fails the whole statement past
-- the quota. The snapshot's usage only spares writing a blob that is plainly over
-- quota.
-- Returns: one row, the outcome and, when it is 'stored', the blob's metadata; else
-- 'not_found' (no such conversation), 'not_a_member' (the uploader is not an active
-- member, or the conversation went meanwhile), 'bound_elsewhere' (the uploader's copy is
-- bound to another conversation), 'over_quota' (plainly, by this snapshot's usage) or
-- 'raced' (a concurrent store or delete of this content changed what the snapshot
-- showed: running again sees it).
-- Locks: in the layer's order: for a conversation, the uploader's members row first,
-- FOR NO KEY UPDATE (so membership is judged on its newest version: a removal either
-- precedes the store or waits for it), then the conversation row (FOR KEY SHARE, what
-- the foreign key check takes anyway), so a delete_conversation in flight is waited for
-- before the usage row is charged (the delete's cascade gives bytes back to it); then
-- the blob row it inserts or binds, and the usage row it charges.
-- Index: conversations_pkey, members_pkey or members_active_by_member (the membership
-- look-up), blobs_pkey, blob_usage_pkey.
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- The uploader's members row, when active, locked.
    SELECT m.member_did
    FROM members AS m
    WHERE
        m.convo_id = %(convo_id)s::uuid
        AND m.member_did = %(actor_did)s
        AND m.left_at IS NULL
    FOR NO KEY UPDATE
),

judged AS (
    -- An aggregate over the locked members row: read in full before the conversation
    -- row is locked, so the lock order holds.
    SELECT count(*) AS n FROM locked
),

convo AS (
    -- The conversation row, locked FOR KEY SHARE after the members row: gone if a
    -- delete in flight committed first.
    SELECT c.id
    FROM conversations AS c
    CROSS JOIN judged
    WHERE c.id = %(convo_id)s::uuid
    FOR KEY SHARE OF c
),

allowed AS (
    -- Whether the store may go ahead: no conversation, or one the uploader is in.
    SELECT
        %(convo_id)s::uuid IS NULL
        OR (EXISTS (SELECT 1 FROM convo) AND EXISTS (SELECT 1 FROM locked)) AS ok
),

existing AS (
    -- The uploader's copy of this content, if stored already.
    SELECT
        b.cid,
        b.uploader_did,
        b.convo_id,
        b.size,
        b.mime_type,
        b.created_at
    FROM blobs AS b
    WHERE b.cid = %(cid)s AND b.uploader_did = %(actor_did)s
),

used AS (
    -- The uploader's usage in this snapshot: it only spares writing a blob plainly over
    -- quota (the charge below judges the newest usage).
    SELECT
        coalesce(
            (
                SELECT u.used_bytes FROM blob_usage AS u
                WHERE u.owner_did = %(actor_did)s
            ), 0
        ) AS bytes
),

inserted AS (
    -- The new blob, unless stored already or plainly over quota.
    INSERT INTO blobs (cid, uploader_did, convo_id, size, mime_type, data)
    SELECT
        %(cid)s AS cid,
        %(actor_did)s AS uploader_did,
        %(convo_id)s::uuid AS convo_id,
        %(size)s::bigint AS size,
        %(mime_type)s AS mime_type,
        %(data)s::bytea AS data
    FROM allowed
    WHERE
        allowed.ok
        AND NOT EXISTS (SELECT 1 FROM existing)
        AND (SELECT used.bytes FROM used) + %(size)s::bigint <= %(quota)s::bigint
    ON CONFLICT (cid, uploader_did) DO NOTHING
    RETURNING cid, uploader_did, convo_id, size, mime_type, created_at
),

charged AS (
    -- The uploader's usage, charged for an inserted row only.
    INSERT INTO blob_usage AS u (owner_did, used_bytes, quota_bytes)
    SELECT
        i.uploader_did,
        i.size,
        %(quota)s::bigint
    FROM inserted AS i
    ON CONFLICT (owner_did) DO UPDATE
        SET
            used_bytes = u.used_bytes + excluded.used_bytes,
            quota_bytes = excluded.quota_bytes
),

bound AS (
    -- The uploader's unbound copy, bound to the conversation.
    UPDATE blobs AS b
    SET convo_id = %(convo_id)s::uuid
    FROM allowed
    WHERE
        b.cid = %(cid)s
        AND b.uploader_did = %(actor_did)s
        AND b.convo_id IS NULL
        AND %(convo_id)s::uuid IS NOT NULL
        AND allowed.ok
    RETURNING b.cid, b.uploader_did, b.convo_id, b.size, b.mime_type, b.created_at
),

shown AS (
    -- The blob as the call returns it: inserted, just bound, or stored already.
    SELECT
        i.cid,
        i.uploader_did,
        i.convo_id,
        i.size,
        i.mime_type,
        i.created_at
    FROM inserted AS i
    UNION ALL
    SELECT
        bd.cid,
        bd.uploader_did,
        bd.convo_id,
        bd.size,
        bd.mime_type,
        bd.created_at
    FROM bound AS bd
    UNION ALL
    SELECT
        e.cid,
        e.uploader_did,
        e.convo_id,
        e.size,
        e.mime_type,
        e.created_at
    FROM existing AS e
    CROSS JOIN allowed
    WHERE allowed.ok AND (%(convo_id)s::uuid IS NULL OR e.convo_id = %(convo_id)s::uuid)
)

SELECT
    CASE
        WHEN shown.cid IS NOT NULL THEN 'stored'
        WHEN %(convo_id)s::uuid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM convo)
            THEN 'not_found'
        WHEN NOT allowed.ok THEN 'not_a_member'
        WHEN
            EXISTS (
                SELECT 1 FROM existing AS e
                WHERE e.convo_id <> %(convo_id)s::uuid
            )
            THEN 'bound_elsewhere'
        WHEN
            NOT EXISTS (SELECT 1 FROM existing)
            AND (SELECT used.bytes FROM used) + %(size)s::bigint > %(quota)s::bigint
            THEN 'over_quota'
        ELSE 'raced'
    END AS outcome,
    shown.cid,
    shown.uploader_did,
    shown.convo_id,
    shown.size,
    shown.mime_type,
    shown.created_at
FROM allowed
LEFT JOIN shown ON TRUE;

-- name: bind_blob
-- Binds the uploader's unbound blob to a conversation the uploader is an active member
-- of (a blob already bound to it is returned unchanged).
-- Returns: one row, the outcome and, when it is 'bound', the blob's metadata; else
-- 'not_found' (no such conversation), 'not_a_member', 'no_blob' (the uploader has no
-- such blob), 'bound_elsewhere', or 'raced' (the blob was bound or deleted since this
-- snapshot: running again sees it).
-- Locks: in the layer's order: the uploader's members row, FOR NO KEY UPDATE (a removal
-- either precedes the bind or waits for it), the conversation row (FOR KEY SHARE), then
-- the blob.
-- Index: blobs_pkey; members_pkey or members_active_by_member (the membership look-up).
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- The uploader's members row, when active, locked.
    SELECT m.member_did
    FROM members AS m
    WHERE
        m.convo_id = %(convo_id)s
        AND m.member_did = %(actor_did)s
        AND m.left_at IS NULL
    FOR NO KEY UPDATE
),

judged AS (
    -- An aggregate over the locked members row: read in full before the conversation
    -- row is locked, so the lock order holds.
    SELECT count(*) AS n FROM locked
),

convo AS (
    -- The conversation row, locked FOR KEY SHARE after the members row: gone if a
    -- delete in flight committed first.
    SELECT c.id
    FROM conversations AS c
    CROSS JOIN judged
    WHERE c.id = %(convo_id)s
    FOR KEY SHARE OF c
),

bound AS (
    -- The uploader's copy, bound (or already bound) to the conversation.
    UPDATE blobs AS b
    SET convo_id = convo.id
    FROM convo
    WHERE
        b.cid = %(cid)s
        AND b.uploader_did = %(actor_did)s
        AND (b.convo_id IS NULL OR b.convo_id = convo.id)
        AND EXISTS (SELECT 1 FROM locked)
    RETURNING b.cid, b.uploader_did, b.convo_id, b.size, b.mime_type, b.created_at
),

own AS (
    -- The uploader's copy in this snapshot, to name a refusal.
    SELECT b.convo_id
    FROM blobs AS b
    WHERE b.cid = %(cid)s AND b.uploader_did = %(actor_did)s
)

SELECT
    CASE
        WHEN bound.cid IS NOT NULL THEN 'bound'
        WHEN NOT EXISTS (SELECT 1 FROM convo) THEN 'not_found'
        WHEN NOT EXISTS (SELECT 1 FROM locked) THEN 'not_a_member'
        WHEN NOT EXISTS (SELECT 1 FROM own) THEN 'no_blob'
        WHEN EXISTS (
            SELECT 1 FROM own
            WHERE own.convo_id <> %(convo_id)s
        ) THEN 'bound_elsewhere'
        ELSE 'raced'
    END AS outcome,
    bound.cid,
    bound.uploader_did,
    bound.convo_id,
    bound.size,
    bound.mime_type,
    bound.created_at
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN bound ON wanted.id = bound.convo_id;

-- name: get_blob
-- A blob with its bytes, when the actor may read it (readable_blob: its uploader, or an
-- active member of its conversation; the actor's own copy first, then the oldest).
-- Returns: one blob; no row when no copy is the actor's or in a conversation they are
-- an active member of.
-- Locks: none.
-- Index: blobs_pkey; members_pkey or members_active_by_member (the membership look-up).
-- not null: cid, uploader_did, size, mime_type, created_at (NOT NULL columns of blobs)
-- not null: data (NOT NULL, read through readable_blob)
SELECT
    b.cid,
    b.uploader_did,
    b.convo_id,
    b.size,
    b.mime_type,
    b.created_at,
    b.data
FROM readable_blob(%(cid)s, %(actor_did)s) AS b;

-- name: get_blob_metadata
-- What get_blob returns but the bytes, from the same readable_blob (the bytes are never
-- read: the planner drops a column no one uses).
-- Returns: one blob's metadata; no row when get_blob would return none.
-- Locks: none.
-- Index: blobs_pkey; members_pkey or members_active_by_member (the membership look-up).
-- not null: cid, uploader_did, size, mime_type, created_at (NOT NULL columns of blobs)
SELECT
    b.cid,
    b.uploader_did,
    b.convo_id,
    b.size,
    b.mime_type,
    b.created_at
FROM readable_blob(%(cid)s, %(actor_did)s) AS b;

-- name: list_blobs_by_conversation
-- A conversation's blobs in upload order after a keyset position (the first page passes
-- year 1 and empty strings), for an actor who is an active member.
-- Returns: up to limit blobs' metadata; none when the actor is not an active member.
-- Locks: none.
-- Index: blobs_by_convo; members_pkey or members_active_by_member (the membership
-- look-up).
SELECT
    b.cid,
    b.uploader_did,
    b.convo_id,
    b.size,
    b.mime_type,
    b.created_at
FROM blobs AS b
WHERE
    b.convo_id = %(convo_id)s
    AND (b.created_at, b.cid, b.uploader_did)
    > (%(after_created_at)s::timestamptz, %(after_cid)s::text, %(after_uploader_did)s::text)
    AND EXISTS (
        SELECT 1
        FROM members AS m
        WHERE
            m.convo_id = b.convo_id
            AND m.member_did = %(actor_did)s
            AND m.left_at IS NULL
    )
ORDER BY b.created_at ASC, b.cid ASC, b.uploader_did ASC
LIMIT %(limit)s;

-- name: delete_blob
-- Deletes the actor's own copy of a blob; the usage trigger gives its bytes back.
-- Returns: no rows: the row count says whether there was a copy to delete.
-- Locks: the blob row it deletes, then (the usage trigger, after the statement) the
-- uploader's usage row.
-- Index: blobs_pkey.
DELETE FROM blobs AS b
WHERE b.cid = %(cid)s AND b.uploader_did = %(actor_did)s;

-- name: get_user_storage_size
-- The bytes a DID's blobs take, as charged against its quota.
-- Returns: always one row, used_bytes: 0 if the DID has no usage row.
-- Locks: none.
-- Index: blob_usage_pkey.
SELECT coalesce(
    (
        SELECT u.used_bytes FROM blob_usage AS u
        WHERE u.owner_did = %(actor_did)s
    ), 0
) AS used_bytes;

-- name: delete_orphan_blobs
-- One batch: deletes up to batch_size blobs bound to no conversation and older than the
-- cutoff, oldest first. The usage trigger gives the bytes back.
-- Returns: no rows: the row count is the batch's.
-- Locks: up to batch_size orphans, FOR UPDATE SKIP LOCKED: a row a concurrent bind
-- holds is skipped, and one bound since the snapshot fails the re-check under FOR
-- UPDATE, so no bound blob is deleted; then (the usage trigger) the uploaders' usage
-- rows, in DID order.
-- Index: blobs_orphans_by_age (the batch), blobs_pkey (the delete).
DELETE FROM blobs AS b
USING (
    SELECT
        o.cid,
        o.uploader_did
    FROM blobs AS o
    WHERE o.convo_id IS NULL AND o.created_at < now() - %(older_than)s::interval
    ORDER BY o.created_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
) AS doomed
WHERE b.cid = doomed.cid AND b.uploader_did = doomed.uploader_did;
