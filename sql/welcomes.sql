-- name: add_members
-- The members and welcomes of an add commit, run by add_members_with_commit in the
-- transaction where sequence_message has just stored the commit at `seq`. Members are
-- added or re-added with joined_seq = the commit's seq (they see nothing earlier, not
-- even this commit). One welcome per new member.
-- It re-adds only the former members in `rejoining`, the rows sequence_message locked
-- (a member removed between the two statements is not locked now, after the
-- conversation row, out of the lock order).
-- Returns: one row: usable, whether every new member's key package is a package of
-- theirs, of the conversation's cipher suite, and either a regular one the actor holds
-- (reserved by its claim, or consumed by it) and no add has used, or an unexpired
-- last-resort one; and members_added. When
-- usable is false the caller rolls the transaction back; rows written here are then
-- undone with the commit.
-- Locks: the members rows it re-adds and the conversation row are locked already (by
-- sequence_message); then each regular package (consumed and marked used: the UPDATE
-- re-checks the holder and use_count = 0 on the newest row version, so of two adds
-- racing for one package only the first finds it unused, and a package another claimer
-- holds is not the actor's), then the members rows it creates. An active member's row
-- is not touched, so a send of theirs in flight cannot deadlock with the add, and a row
-- another add created since the snapshot is left as it is (ON CONFLICT DO NOTHING).
-- Index: conversations_pkey, key_packages_key_package_ref_key, members_pkey;
-- welcomes_pending_unique, in no plan, refuses a second pending welcome for a
-- recipient's package (AlreadyExists).
-- not null: usable, members_added (a count)
WITH new_members AS (
    -- The new members, one row each, as the caller listed them.
    SELECT
        n.member_did,
        n.key_package_ref,
        n.welcome_data
    FROM
        unnest(%(member_dids)s::text[], %(key_package_refs)s::bytea[], %(welcome_data)s::bytea[])
            AS n (member_did, key_package_ref, welcome_data)
),

used AS (
    -- The regular packages this add uses, each once, consumed by it: packages the actor
    -- reserved by a claim (its reservation ended here, even if it ran out meanwhile and
    -- nobody else claimed them), or consumed by consume_key_package.
    UPDATE key_packages AS k
    SET
        use_count = k.use_count + 1,
        used_at = now(),
        used_in_convo = c.id,
        consumed_at = coalesce(k.consumed_at, now()),
        consumed_by_did = %(actor_did)s,
        reserved_by_did = NULL,
        reserved_until = NULL
    FROM new_members AS n, conversations AS c
    WHERE
        k.key_package_ref = n.key_package_ref
        AND k.owner_did = n.member_did
        AND c.id = %(convo_id)s
        AND k.cipher_suite = c.cipher_suite
        AND NOT k.is_last_resort
        AND (
            (k.consumed_at IS NULL AND k.reserved_by_did = %(actor_did)s)
            OR k.consumed_by_did = %(actor_did)s
        )
        AND k.use_count = 0
    RETURNING k.key_package_ref
),

usable AS (
    -- Each new member's package that may serve this add: a last-resort one, or a regular
    -- one just marked used.
    SELECT k.key_package_ref
    FROM key_packages AS k
    INNER JOIN new_members AS n
        ON k.key_package_ref = n.key_package_ref AND k.owner_did = n.member_did
    INNER JOIN conversations AS c ON c.id = %(convo_id)s
    WHERE
        k.cipher_suite = c.cipher_suite
        AND k.is_last_resort
        AND k.expires_at > now()
    UNION ALL
    SELECT u.key_package_ref FROM used AS u
),

verdict AS (
    -- Every new member has a package that may serve.
    SELECT (SELECT count(*) FROM usable) = (SELECT count(*) FROM new_members) AS usable
),

rejoined AS (
    -- Former members back, on the rows sequence_message locked.
    UPDATE members AS m
    SET
        role = 'member',
        joined_at = now(),
        left_at = NULL,
        joined_seq = %(seq)s,
        last_read_seq = %(seq)s
    FROM new_members AS n, verdict
    WHERE
        verdict.usable
        AND m.convo_id = %(convo_id)s
        AND m.member_did = n.member_did
        AND m.member_did = any(%(rejoining)s::text[])
        AND m.left_at IS NOT NULL
    RETURNING m.member_did
),

joined AS (
    -- Members new to the conversation.
    INSERT INTO members AS m (convo_id, member_did, role, joined_seq, last_read_seq)
    SELECT
        %(convo_id)s::uuid AS convo_id,
        n.member_did,
        'member' AS role,
        %(seq)s::bigint AS joined_seq,
        %(seq)s::bigint AS last_read_seq
    FROM new_members AS n CROSS JOIN verdict
    WHERE
        verdict.usable
        AND NOT EXISTS (
            SELECT 1
            FROM members AS x
            WHERE x.convo_id = %(convo_id)s AND x.member_did = n.member_did
        )
    ON CONFLICT (convo_id, member_did) DO NOTHING
    RETURNING m.member_did
),

welcomed AS (
    -- One welcome per new member.
    INSERT INTO welcomes (convo_id, recipient_did, key_package_ref, welcome_data)
    SELECT
        %(convo_id)s::uuid,
        n.member_did,
        n.key_package_ref,
        n.welcome_data
    FROM new_members AS n CROSS JOIN verdict
    WHERE verdict.usable
)

SELECT
    verdict.usable,
    (SELECT count(*) FROM joined) + (SELECT count(*) FROM rejoined) AS members_added
FROM verdict;

-- name: list_pending_welcomes
-- The actor's unconsumed welcomes, oldest first, after a keyset position (the first
-- page passes the earliest time and the nil uuids).
-- Returns: up to limit welcomes; none when the actor has none pending past the
-- position.
-- Locks: none.
-- Index: welcomes_pending_by_recipient.
SELECT
    w.convo_id,
    w.id,
    w.recipient_did,
    w.key_package_ref,
    w.welcome_data,
    w.created_at,
    w.consumed_at
FROM welcomes AS w
WHERE
    w.recipient_did = %(actor_did)s
    AND w.consumed_at IS NULL
    AND (w.created_at, w.convo_id, w.id)
    > (%(after_created_at)s::timestamptz, %(after_convo_id)s::uuid, %(after_id)s::uuid)
ORDER BY w.created_at, w.convo_id, w.id
LIMIT %(limit)s;

-- name: consume_welcome
-- Marks a welcome consumed, for its recipient only and only once.
-- Returns: no rows: the row count says whether the welcome was consumed now.
-- Locks: the welcome's row (the UPDATE re-checks consumed_at on its newest version).
-- Index: welcomes_pending_by_recipient.
UPDATE welcomes AS w
SET consumed_at = now()
WHERE
    w.convo_id = %(convo_id)s
    AND w.id = %(welcome_id)s
    AND w.recipient_did = %(actor_did)s
    AND w.consumed_at IS NULL;

-- name: delete_consumed_welcomes
-- Deletes one batch of welcomes consumed longer ago than the retention period.
-- Returns: no rows: the row count is the batch's.
-- Locks: up to batch_size welcomes, FOR UPDATE SKIP LOCKED: rows another transaction
-- holds are left for the next batch.
-- Index: welcomes_consumed (the batch), welcomes_pkey (the delete).
DELETE FROM welcomes AS w
WHERE (w.convo_id, w.id) IN (
    SELECT
        o.convo_id,
        o.id
    FROM welcomes AS o
    WHERE o.consumed_at < now() - %(older_than)s::interval
    ORDER BY o.consumed_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
