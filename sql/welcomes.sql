-- name: add_members_with_commit
-- Adds members through an MLS commit, in one statement. Rows are locked in the order
-- every statement of a conversation keeps: the actor's own members row and the rows of
-- members who rejoin, in DID order (FOR NO KEY UPDATE; a removal or re-add in flight is
-- waited for and decided on the newest row versions), then the conversation, then the
-- key packages. The conversation UPDATE does the epoch compare-and-swap and takes the
-- commit's seq (last_seq + 1), guarded by the actor being an active admin and by every
-- new member's key package being theirs, of the conversation's suite, and either a
-- regular package the actor claimed and no add has used, or an unexpired last-resort
-- one. Then the commit message (framed in the old epoch), the members added or
-- reactivated with joined_seq = the commit's seq (they see nothing earlier, not even
-- this commit; an active member's row is not touched, so a send of theirs in flight
-- cannot deadlock with it, and a row created by another add since the snapshot is left
-- as it is, ON CONFLICT DO NOTHING), one welcome per new member, the committer's read marker,
-- the notification, and each regular package marked used: a package used by a
-- concurrent add fails key_packages_used_once and with it the whole statement. No row
-- back means nothing was written.
-- not null: members_added (a count)
WITH new_members AS (
    SELECT
        n.member_did,
        n.key_package_ref,
        n.welcome_data
    FROM
        unnest(%(member_dids)s::text[], %(key_package_refs)s::bytea[], %(welcome_data)s::bytea[])
            AS n (member_did, key_package_ref, welcome_data)
),

locked AS (
    SELECT
        l.member_did,
        l.role,
        l.left_at
    FROM members AS l
    WHERE
        l.convo_id = %(convo_id)s
        AND (
            l.member_did = %(actor_did)s
            OR (
                l.left_at IS NOT NULL
                AND l.member_did IN (SELECT n.member_did FROM new_members AS n)
            )
        )
    ORDER BY l.member_did
    FOR NO KEY UPDATE
),

admin AS (
    -- An aggregate reads every locked row, so all of them are locked before the
    -- conversation row is: an EXISTS would stop at the actor's row and leave the rest
    -- to be locked later, after the conversation's, out of the layer's order.
    SELECT
        coalesce(
            bool_or(
                a.member_did = %(actor_did)s AND a.role = 'admin' AND a.left_at IS NULL
            ),
            FALSE
        ) AS ok
    FROM locked AS a
),

convo AS (
    UPDATE conversations AS c
    SET last_seq = c.last_seq + 1, epoch = c.epoch + 1, updated_at = now()
    WHERE
        c.id = %(convo_id)s
        AND c.epoch = %(expected_epoch)s
        AND (SELECT admin.ok FROM admin)
        AND (
            SELECT count(*)
            FROM new_members AS n
            INNER JOIN key_packages AS k
                ON n.key_package_ref = k.key_package_ref AND n.member_did = k.owner_did
            WHERE
                k.cipher_suite = c.cipher_suite
                AND (
                    (
                        NOT k.is_last_resort
                        AND k.consumed_by_did = %(actor_did)s
                        AND k.use_count = 0
                    )
                    OR (k.is_last_resort AND k.expires_at > now())
                )
        ) = (SELECT count(*) FROM new_members)
    RETURNING c.id, c.last_seq AS seq, c.epoch
),

msg AS (
    INSERT INTO messages (convo_id, seq, id, sender_did, message_type, epoch, ciphertext)
    SELECT
        convo.id AS convo_id,
        convo.seq,
        %(commit_id)s AS id,
        %(actor_did)s AS sender_did,
        'commit' AS message_type,
        convo.epoch - 1 AS epoch,
        %(commit)s AS ciphertext
    FROM convo
    RETURNING convo_id, id, seq, sent_at
),

rejoined AS (
    UPDATE members AS m
    SET
        role = 'member',
        joined_at = now(),
        left_at = NULL,
        joined_seq = convo.seq,
        last_read_seq = convo.seq
    FROM convo, locked AS t
    WHERE
        m.convo_id = convo.id
        AND m.member_did = t.member_did
        AND t.member_did <> %(actor_did)s
        AND t.left_at IS NOT NULL
    RETURNING m.member_did
),

joined AS (
    INSERT INTO members AS m (convo_id, member_did, role, joined_seq, last_read_seq)
    SELECT
        convo.id AS convo_id,
        n.member_did,
        'member' AS role,
        convo.seq AS joined_seq,
        convo.seq AS last_read_seq
    FROM convo CROSS JOIN new_members AS n
    WHERE
        NOT EXISTS (
            SELECT 1
            FROM members AS x
            WHERE x.convo_id = convo.id AND x.member_did = n.member_did
        )
    ON CONFLICT (convo_id, member_did) DO NOTHING
    RETURNING m.member_did
),

welcomed AS (
    INSERT INTO welcomes (convo_id, recipient_did, key_package_ref, welcome_data)
    SELECT
        convo.id,
        n.member_did,
        n.key_package_ref,
        n.welcome_data
    FROM convo CROSS JOIN new_members AS n
),

read_marker AS (
    UPDATE members AS r
    SET last_read_seq = convo.seq
    FROM convo
    WHERE r.convo_id = convo.id AND r.member_did = %(actor_did)s
),

used AS (
    UPDATE key_packages AS k
    SET use_count = k.use_count + 1, used_at = now(), used_in_convo = convo.id
    FROM convo CROSS JOIN new_members AS n
    WHERE k.key_package_ref = n.key_package_ref AND NOT k.is_last_resort
),

notified AS (
    SELECT pg_notify('catbird_messages', convo.id::text || ':' || convo.seq || ':commit')
    FROM convo
)

SELECT
    msg.convo_id,
    msg.id AS commit_id,
    msg.seq,
    convo.epoch,
    msg.sent_at,
    (SELECT count(*) FROM joined) + (SELECT count(*) FROM rejoined) AS members_added
FROM msg
CROSS JOIN convo
CROSS JOIN notified;

-- name: list_pending_welcomes
-- The actor's unconsumed welcomes, oldest first, after a keyset position (the first page
-- passes the earliest time and the nil uuids).
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
UPDATE welcomes AS w
SET consumed_at = now()
WHERE
    w.convo_id = %(convo_id)s
    AND w.id = %(welcome_id)s
    AND w.recipient_did = %(actor_did)s
    AND w.consumed_at IS NULL;

-- name: delete_consumed_welcomes
-- Deletes one batch of welcomes consumed longer ago than the retention period.
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
