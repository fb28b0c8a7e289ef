-- name: lock_added_devices
-- The devices whose key packages an add by commit uses, run by add_members_with_commit
-- right after sequence_message holds the conversation row: a package's device is fixed
-- when it is published, so the packages are read, not locked, and their devices locked.
-- Returns: one row per known ref: the ref, its owner and device, and whether the device
-- is revoked (read from the locked row's newest version).
-- Locks: those devices rows, FOR SHARE, in device id order, until the transaction ends:
-- a revocation (an UPDATE of the row) either precedes the add and is seen here, or
-- waits for it and then withdraws the welcome the add stored. Taken before the key
-- packages add_members marks used, as a publish and a revocation take the device row
-- before its packages.
-- Index: key_packages_key_package_ref_key, devices_pkey or devices_id_key (either finds
-- the one row).
-- not null: revoked (a test of a NOT NULL column's row)
SELECT
    k.key_package_ref,
    k.owner_did,
    k.device_id,
    d.revoked_at IS NOT NULL AS revoked
FROM key_packages AS k
INNER JOIN devices AS d ON k.owner_did = d.owner_did AND k.device_id = d.id
WHERE k.key_package_ref = any(%(key_package_refs)s::bytea[])
ORDER BY d.id
FOR SHARE OF d;

-- name: add_members
-- The members, member devices and welcomes of an add commit, run by
-- add_members_with_commit in the transaction where sequence_message has just stored the
-- commit at `seq` and lock_added_devices has locked the devices. Each new device joins
-- with joined_seq = the commit's seq (its member sees nothing earlier, not even this
-- commit); a member new to the conversation, or back after leaving, joins with it; an
-- active member gains the device. One welcome per new device, addressed to it.
-- It changes only members whose rows sequence_message locked (`locked_targets`), so no
-- member joins or leaves meanwhile. A target whose row it did not lock (created by an
-- add_member that committed after sequence_message's snapshot) makes the outcome
-- 'raced': nothing of the add stands, and the caller runs it again (its snapshot then
-- sees the row, and locks it).
-- Returns: one row: the outcome ('added'; 'raced', above; 'unusable': a device's key
-- package is not a package of that device of its member, of the conversation's cipher
-- suite, and either a regular one the actor holds (reserved by its claim, or consumed
-- by it) and no add has used, or an unexpired last-resort one; else 'present': a device
-- named is in the group already), members_added and devices_added. Unless the outcome
-- is 'added' the caller rolls the transaction back; rows written here are then undone
-- with the commit.
-- Locks: the members rows of the targets and the conversation row are locked already
-- (by sequence_message), the devices rows too (lock_added_devices); then each regular
-- package (consumed and marked used: the UPDATE re-checks the holder and use_count = 0
-- on the newest row version, so of two adds racing for one package only the first finds
-- it unused, and a package another claimer holds is not the actor's), then the rows it
-- creates or re-adds: members rows (a row another add created since the snapshot is
-- left as it is, ON CONFLICT DO NOTHING: only a concurrent add_member makes one, and
-- then the outcome is 'raced'), member devices (of members whose rows are locked),
-- welcomes and the commit's roster record.
-- Index: conversations_pkey, key_packages_key_package_ref_key, members_pkey,
-- member_devices_pkey; the unique index on pending welcomes, in no plan of this
-- statement, refuses a second pending welcome for a device's package (AlreadyExists);
-- the record of what the commit changed (for a retry of it) is a plain insert.
-- not null: outcome (a CASE whose every branch is a literal)
-- not null: members_added, devices_added (counts)
WITH new_members AS (
    -- The new devices, one row each, as the caller listed them.
    SELECT
        n.member_did,
        n.device_id,
        n.key_package_ref,
        n.welcome_data
    FROM
        unnest(
            %(member_dids)s::text[],
            %(device_ids)s::uuid[],
            %(key_package_refs)s::bytea[],
            %(welcome_data)s::bytea[]
        ) AS n (member_did, device_id, key_package_ref, welcome_data)
),

present AS (
    -- The devices named that are in the group already.
    SELECT md.device_id
    FROM member_devices AS md
    INNER JOIN new_members AS n ON md.member_did = n.member_did AND md.device_id = n.device_id
    WHERE md.convo_id = %(convo_id)s AND md.left_at IS NULL
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
        AND k.device_id = n.device_id
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
    -- Each new device's package that may serve this add: a last-resort one, or a
    -- regular one just marked used.
    SELECT k.key_package_ref
    FROM key_packages AS k
    INNER JOIN new_members AS n
        ON
            k.key_package_ref = n.key_package_ref
            AND k.owner_did = n.member_did
            AND k.device_id = n.device_id
    INNER JOIN conversations AS c ON c.id = %(convo_id)s
    WHERE
        k.cipher_suite = c.cipher_suite
        AND k.is_last_resort
        AND k.expires_at > now()
    UNION ALL
    SELECT u.key_package_ref FROM used AS u
),

raced AS (
    -- A target's row sequence_message did not lock: created since its snapshot.
    SELECT 1 AS found
    FROM members AS x
    INNER JOIN new_members AS n ON x.member_did = n.member_did
    WHERE
        x.convo_id = %(convo_id)s
        AND x.member_did <> all(%(locked_targets)s::text[])
),

verdict AS (
    -- Every device has a package that may serve, and none is in the group already.
    SELECT
        CASE
            WHEN EXISTS (SELECT 1 FROM raced) THEN 'raced'
            WHEN (SELECT count(*) FROM usable) < (SELECT count(*) FROM new_members)
                THEN 'unusable'
            WHEN EXISTS (SELECT 1 FROM present) THEN 'present'
            ELSE 'added'
        END AS outcome
),

rejoined AS (
    -- Former members back, on the rows sequence_message locked.
    UPDATE members AS m
    SET
        role = 'member',
        joined_at = now(),
        left_at = NULL,
        left_seq = NULL,
        leave_requested_seq = NULL,
        joined_seq = %(seq)s,
        last_read_seq = %(seq)s
    FROM verdict
    WHERE
        verdict.outcome = 'added'
        AND m.convo_id = %(convo_id)s
        AND m.member_did = any(%(locked_targets)s::text[])
        AND m.left_at IS NOT NULL
    RETURNING m.member_did
),

joined AS (
    -- Members new to the conversation.
    INSERT INTO members AS m (convo_id, member_did, role, joined_seq, last_read_seq)
    SELECT DISTINCT
        %(convo_id)s::uuid AS convo_id,
        n.member_did,
        'member' AS role,
        %(seq)s::bigint AS joined_seq,
        %(seq)s::bigint AS last_read_seq
    FROM new_members AS n CROSS JOIN verdict
    WHERE
        verdict.outcome = 'added'
        AND NOT EXISTS (
            SELECT 1
            FROM members AS x
            WHERE x.convo_id = %(convo_id)s AND x.member_did = n.member_did
        )
    ON CONFLICT (convo_id, member_did) DO NOTHING
    RETURNING m.member_did
),

touched AS (
    -- Active members who gain devices: their rows are written too (to the same values),
    -- so a removal of one of them in a REPEATABLE READ or SERIALIZABLE transaction whose
    -- snapshot predates this add fails with a serialization error instead of missing
    -- the devices this add gives them.
    UPDATE members AS m
    SET joined_seq = m.joined_seq
    FROM verdict
    WHERE
        verdict.outcome = 'added'
        AND m.convo_id = %(convo_id)s
        AND m.member_did = any(%(locked_targets)s::text[])
        AND m.left_at IS NULL
),

devices_joined AS (
    -- The new devices in the group: new rows, or rows of devices back after leaving.
    INSERT INTO member_devices AS md (convo_id, member_did, device_id, joined_seq)
    SELECT
        %(convo_id)s::uuid AS convo_id,
        n.member_did,
        n.device_id,
        %(seq)s::bigint AS joined_seq
    FROM new_members AS n CROSS JOIN verdict
    WHERE verdict.outcome = 'added'
    ON CONFLICT (convo_id, member_did, device_id) DO UPDATE
        SET
            joined_seq = excluded.joined_seq,
            joined_at = excluded.joined_at,
            left_at = NULL,
            left_seq = NULL
    RETURNING md.device_id
),

welcomed AS (
    -- One welcome per new device, addressed to it.
    INSERT INTO welcomes (
        convo_id, recipient_did, recipient_device_id, key_package_ref, welcome_data, expires_at
    )
    SELECT
        %(convo_id)s::uuid AS convo_id,
        n.member_did,
        n.device_id,
        n.key_package_ref,
        n.welcome_data,
        now() + %(welcome_ttl_s)s * interval '1 second' AS expires_at
    FROM new_members AS n CROSS JOIN verdict
    WHERE verdict.outcome = 'added'
),

recorded AS (
    -- What this commit changed, for a retry of it.
    INSERT INTO roster_commits (
        convo_id, seq, members_joined, devices_joined, members_left, devices_left
    )
    SELECT
        %(convo_id)s::uuid AS convo_id,
        %(seq)s::bigint AS seq,
        (SELECT count(*) FROM joined) + (SELECT count(*) FROM rejoined) AS members_joined,
        (SELECT count(*) FROM devices_joined) AS devices_joined,
        0 AS members_left,
        0 AS devices_left
    FROM verdict
    WHERE verdict.outcome = 'added'
)

SELECT
    verdict.outcome,
    (SELECT count(*) FROM joined) + (SELECT count(*) FROM rejoined) AS members_added,
    (SELECT count(*) FROM devices_joined) AS devices_added
FROM verdict;

-- name: list_pending_welcomes
-- The actor's pending welcomes (pending_welcomes: not ended, not expired), those of one
-- device of theirs when device_id is given, oldest first, after a keyset position (the
-- first page passes the earliest time and the nil uuids).
-- Returns: up to limit welcomes; none when the actor has none pending past the
-- position.
-- Locks: none.
-- Index: welcomes_pending_by_recipient.
-- not null: convo_id, id, recipient_did, key_package_ref, welcome_data, created_at
-- not null: recipient_device_id, expires_at (NOT NULL columns, read through a view)
SELECT
    w.convo_id,
    w.id,
    w.recipient_did,
    w.key_package_ref,
    w.welcome_data,
    w.created_at,
    w.consumed_at,
    w.recipient_device_id,
    w.expires_at
FROM pending_welcomes AS w
WHERE
    w.recipient_did = %(actor_did)s
    AND (%(device_id)s::uuid IS NULL OR w.recipient_device_id = %(device_id)s::uuid)
    AND (w.created_at, w.convo_id, w.id)
    > (%(after_created_at)s::timestamptz, %(after_convo_id)s::uuid, %(after_id)s::uuid)
ORDER BY w.created_at, w.convo_id, w.id
LIMIT %(limit)s;

-- name: end_welcome
-- Ends a pending welcome, for its recipient only and only once: consumed (its device
-- joined), or, with a reason, rejected (its device cannot process it).
-- Returns: no rows: the row count says whether the welcome ended now.
-- Locks: the recipient's members row of the conversation first, FOR NO KEY UPDATE (read
-- through an aggregate, so it is locked before the welcome: a removal, which holds that
-- row and then withdraws the member's welcomes, is waited for, not met halfway), then
-- the welcome's row (the UPDATE re-checks, through pending_welcomes, that it is pending
-- on its newest version: of two concurrent calls exactly one matches).
-- Index: members_pkey (the recipient's row), welcomes_pending_by_recipient.
WITH locked AS (
    -- The recipient's membership row, when there is one.
    SELECT l.member_did
    FROM members AS l
    WHERE l.convo_id = %(convo_id)s AND l.member_did = %(actor_did)s
    FOR NO KEY UPDATE
),

judged AS (
    -- Read whole before the welcome is touched.
    SELECT count(*) AS n
    FROM locked
)

UPDATE pending_welcomes AS w
SET
    consumed_at = CASE WHEN %(reason)s::text IS NULL THEN now() END,
    rejected_at = CASE WHEN %(reason)s::text IS NOT NULL THEN now() END,
    rejection_reason = %(reason)s::text
FROM judged
WHERE
    w.convo_id = %(convo_id)s
    AND w.id = %(welcome_id)s
    AND w.recipient_did = %(actor_did)s;

-- name: delete_consumed_welcomes
-- Deletes one batch of welcomes that ended (consumed, rejected or withdrawn), or
-- expired while pending, longer ago than the retention period.
-- Returns: no rows: the row count is the batch's.
-- Locks: up to batch_size welcomes, FOR UPDATE SKIP LOCKED: rows another transaction
-- holds are left for the next batch.
-- Index: welcomes_ended and welcomes_expired (the batch), welcomes_pkey (the delete).
DELETE FROM welcomes AS w
WHERE (w.convo_id, w.id) IN (
    SELECT
        o.convo_id,
        o.id
    FROM welcomes AS o
    WHERE
        o.ended_at < now() - %(older_than)s::interval
        OR (o.ended_at IS NULL AND o.expires_at < now() - %(older_than)s::interval)
    -- Any batch of them will do, in the order the two indexes find them: sorting them
    -- all to take the oldest would read every one on each batch.
    LIMIT %(batch_size)s -- noqa: AM09
    FOR UPDATE SKIP LOCKED
);
