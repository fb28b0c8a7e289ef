-- name: add_member
-- Adds a member, or reactivates one who left, on behalf of an active admin. Locks are
-- taken in the layer's order: the actor's members row first (so the admin check is
-- made on its newest version: a removal either precedes the add or waits for it), then
-- the conversation row, FOR NO KEY UPDATE like a send's (so an add followed by a send
-- in one transaction needs no upgrade). The new member sees only messages sent after
-- the join: joined_seq is last_seq read under that lock, so a send in flight is either
-- before the join or after it. An already active member matches no row and their row
-- is not locked (add_member then reads it back), so it never waits on that member's
-- own send.
WITH actor AS (
    SELECT a.member_did
    FROM members AS a
    WHERE
        a.convo_id = %(convo_id)s
        AND a.member_did = %(actor_did)s
        AND a.role = 'admin'
        AND a.left_at IS NULL
    FOR NO KEY UPDATE
),

convo AS (
    SELECT
        c.id,
        c.last_seq
    FROM conversations AS c
    WHERE
        c.id = %(convo_id)s
        AND EXISTS (SELECT 1 FROM actor)
        AND NOT EXISTS (
            SELECT 1
            FROM members AS t
            WHERE
                t.convo_id = %(convo_id)s
                AND t.member_did = %(member_did)s
                AND t.left_at IS NULL
        )
    FOR NO KEY UPDATE
)

INSERT INTO members AS m (convo_id, member_did, role, joined_seq, last_read_seq)
SELECT
    convo.id AS convo_id,
    %(member_did)s AS member_did,
    %(role)s AS role,
    convo.last_seq AS joined_seq,
    convo.last_seq AS last_read_seq
FROM convo
ON CONFLICT (convo_id, member_did) DO UPDATE
    SET
        role = excluded.role,
        joined_at = now(),
        left_at = NULL,
        joined_seq = excluded.joined_seq,
        last_read_seq = excluded.last_read_seq
    WHERE m.left_at IS NOT NULL
RETURNING m.convo_id, m.member_did, m.role, m.joined_at, m.left_at, m.joined_seq, m.last_read_seq;

-- name: remove_member
-- Soft-deletes a member: an admin removes anyone, a member removes themselves. The
-- conversation's active admins, the actor and the target are locked first, in DID
-- order, and every decision is taken on those locked (current) rows, so two admins
-- removing each other at once cannot leave the conversation without an admin.
WITH locked AS (
    SELECT
        l.member_did,
        l.role
    FROM members AS l
    WHERE
        l.convo_id = %(convo_id)s
        AND l.left_at IS NULL
        AND (l.role = 'admin' OR l.member_did IN (%(actor_did)s, %(member_did)s))
    ORDER BY l.member_did
    FOR NO KEY UPDATE
),

allowed AS (
    SELECT target.member_did
    FROM locked AS target
    WHERE
        target.member_did = %(member_did)s
        AND (
            %(actor_did)s = %(member_did)s
            OR EXISTS (
                SELECT 1 FROM locked AS a
                WHERE a.member_did = %(actor_did)s AND a.role = 'admin'
            )
        )
        AND (
            target.role <> 'admin'
            OR EXISTS (
                SELECT 1 FROM locked AS o
                WHERE o.role = 'admin' AND o.member_did <> %(member_did)s
            )
        )
)

UPDATE members AS m
-- The clock after the locks are held, not the transaction's start: a send that held
-- the member's row (and so was waited for) is then always before left_at.
SET left_at = clock_timestamp()
FROM allowed
WHERE m.convo_id = %(convo_id)s AND m.member_did = allowed.member_did
RETURNING m.convo_id, m.member_did, m.role, m.joined_at, m.left_at, m.joined_seq, m.last_read_seq;

-- name: is_member
-- Whether the DID is an active member of the conversation.
SELECT (
    EXISTS (
        SELECT 1
        FROM members AS m
        WHERE m.convo_id = %(convo_id)s AND m.member_did = %(member_did)s AND m.left_at IS NULL
    )
) AS is_member;

-- name: list_members
-- A conversation's active members in DID order after a keyset position (the first page
-- passes ''), for an actor who is an active member.
SELECT
    m.convo_id,
    m.member_did,
    m.role,
    m.joined_at,
    m.left_at,
    m.joined_seq,
    m.last_read_seq
FROM members AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.left_at IS NULL
    AND m.member_did > %(after_did)s
    AND EXISTS (
        SELECT 1
        FROM members AS a
        WHERE a.convo_id = m.convo_id AND a.member_did = %(actor_did)s AND a.left_at IS NULL
    )
ORDER BY m.member_did
LIMIT %(limit)s;

-- name: get_membership
-- One membership, active or not, with its unread count: unexpired app messages from
-- others after the read marker (zero once the member has left).
-- not null: unread_count (a count, or 0)
SELECT
    m.convo_id,
    m.member_did,
    m.role,
    m.joined_at,
    m.left_at,
    m.joined_seq,
    m.last_read_seq,
    CASE
        WHEN m.left_at IS NULL
            THEN (
                SELECT count(*)
                FROM messages AS msg
                WHERE
                    msg.convo_id = m.convo_id
                    AND msg.seq > m.last_read_seq
                    AND msg.message_type = 'app'
                    AND msg.sender_did <> m.member_did
                    AND (msg.expires_at IS NULL OR msg.expires_at > now())
            )
        ELSE 0
    END AS unread_count
FROM members AS m
WHERE m.convo_id = %(convo_id)s AND m.member_did = %(member_did)s;

-- name: mark_read
-- Moves the actor's read marker forward to a seq (clamped to the conversation's
-- last_seq), never back; returns the membership with its unread count. Touches only
-- the actor's own row.
-- not null: unread_count (a count)
UPDATE members AS m
SET last_read_seq = greatest(m.last_read_seq, least(%(seq)s, c.last_seq))
FROM conversations AS c
WHERE
    m.convo_id = %(convo_id)s
    AND m.member_did = %(actor_did)s
    AND m.left_at IS NULL
    AND c.id = m.convo_id
RETURNING
    m.convo_id,
    m.member_did,
    m.role,
    m.joined_at,
    m.left_at,
    m.joined_seq,
    m.last_read_seq,
    (
        SELECT count(*)
        FROM messages AS msg
        WHERE
            msg.convo_id = m.convo_id
            AND msg.seq > m.last_read_seq
            AND msg.message_type = 'app'
            AND msg.sender_did <> m.member_did
            AND (msg.expires_at IS NULL OR msg.expires_at > now())
    ) AS unread_count;
