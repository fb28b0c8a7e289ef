-- name: add_member
-- Adds a member, or reactivates one who left, on behalf of an active admin. The new
-- member sees only messages sent after the join: joined_seq is last_seq read under the
-- conversation row's lock, so a send in flight is either before the join or after it.
-- Returns: one row: the outcome ('added', 'not_found', 'not_a_member', 'not_an_admin',
-- 'active': the target's active row is returned as it is, or 'raced': another add
-- created the row since the snapshot, and add_member reads it back) and the member's
-- row when there is one.
-- Locks: in the layer's order: the actor's members row and a former target's row first,
-- FOR NO KEY UPDATE in DID order (so the admin check and the target's state are read
-- from their newest versions: a removal or re-add either precedes the add or waits for
-- it), then the conversation row, FOR NO KEY UPDATE like a send's. A target already
-- active takes no lock at all (so the add never waits on that member's own send), and a
-- row created by another add since this statement's snapshot is left as it is (ON
-- CONFLICT DO NOTHING: no lock taken after the conversation's).
-- Index: conversations_pkey, members_pkey (a membership look-up may take
-- members_active_by_member).
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- The actor's row and a former target's, locked in DID order.
    SELECT
        l.member_did,
        l.role,
        l.left_at
    FROM members AS l
    WHERE
        l.convo_id = %(convo_id)s
        AND (
            l.member_did = %(actor_did)s
            OR (l.member_did = %(member_did)s AND l.left_at IS NOT NULL)
        )
    ORDER BY l.member_did
    FOR NO KEY UPDATE
),

judged AS (
    -- An aggregate reads every locked row, so all of them are locked before the
    -- conversation row is (an EXISTS could stop early and leave a row to be locked
    -- after the conversation's, out of the layer's order).
    SELECT
        coalesce(bool_or(l.member_did = %(actor_did)s AND l.left_at IS NULL), FALSE)
            AS actor_is_member,
        coalesce(
            bool_or(
                l.member_did = %(actor_did)s AND l.role = 'admin' AND l.left_at IS NULL
            ),
            FALSE
        ) AS actor_is_admin,
        coalesce(bool_or(l.member_did = %(member_did)s AND l.left_at IS NULL), FALSE)
            AS target_active
    FROM locked AS l
),

present AS (
    -- The target's row when active in this snapshot (not locked): then nothing changes.
    SELECT
        t.convo_id,
        t.member_did,
        t.role,
        t.joined_at,
        t.left_at,
        t.joined_seq,
        t.last_read_seq
    FROM members AS t
    WHERE
        t.convo_id = %(convo_id)s
        AND t.member_did = %(member_did)s
        AND t.left_at IS NULL
),

convo AS (
    -- The conversation row, locked after the members rows, when the add goes ahead.
    SELECT
        c.id,
        c.last_seq
    FROM conversations AS c
    WHERE
        c.id = %(convo_id)s
        AND (SELECT j.actor_is_admin AND NOT j.target_active FROM judged AS j)
        AND NOT EXISTS (SELECT 1 FROM present)
    FOR NO KEY UPDATE
),

rejoined AS (
    -- A former member: their row is locked above and not active.
    UPDATE members AS m
    SET
        role = %(role)s,
        joined_at = now(),
        left_at = NULL,
        left_seq = NULL,
        leave_requested_seq = NULL,
        joined_seq = convo.last_seq,
        last_read_seq = convo.last_seq
    FROM convo
    WHERE
        m.convo_id = convo.id
        AND m.member_did = %(member_did)s
        AND EXISTS (
            SELECT 1 FROM locked AS t
            WHERE t.member_did = %(member_did)s
        )
    RETURNING
        m.convo_id, m.member_did, m.role, m.joined_at, m.left_at, m.joined_seq, m.last_read_seq
),

inserted AS (
    -- A member new to the conversation, unless another add created the row since.
    INSERT INTO members AS m (convo_id, member_did, role, joined_seq, last_read_seq)
    SELECT
        convo.id AS convo_id,
        %(member_did)s AS member_did,
        %(role)s AS role,
        convo.last_seq AS joined_seq,
        convo.last_seq AS last_read_seq
    FROM convo
    WHERE
        NOT EXISTS (
            SELECT 1 FROM locked AS t
            WHERE t.member_did = %(member_did)s
        )
    ON CONFLICT (convo_id, member_did) DO NOTHING
    RETURNING
        m.convo_id, m.member_did, m.role, m.joined_at, m.left_at, m.joined_seq, m.last_read_seq
),

added AS (
    -- The row written, rejoined or inserted.
    SELECT
        rejoined.convo_id,
        rejoined.member_did,
        rejoined.role,
        rejoined.joined_at,
        rejoined.left_at,
        rejoined.joined_seq,
        rejoined.last_read_seq
    FROM rejoined
    UNION ALL
    SELECT
        inserted.convo_id,
        inserted.member_did,
        inserted.role,
        inserted.joined_at,
        inserted.left_at,
        inserted.joined_seq,
        inserted.last_read_seq
    FROM inserted
),

shown AS (
    -- The row to return: the one written, else the active one found.
    SELECT
        added.convo_id,
        added.member_did,
        added.role,
        added.joined_at,
        added.left_at,
        added.joined_seq,
        added.last_read_seq
    FROM added
    UNION ALL
    SELECT
        present.convo_id,
        present.member_did,
        present.role,
        present.joined_at,
        present.left_at,
        present.joined_seq,
        present.last_read_seq
    FROM present
    WHERE NOT EXISTS (SELECT 1 FROM added)
)

SELECT
    CASE
        WHEN EXISTS (SELECT 1 FROM added) THEN 'added'
        WHEN
            NOT EXISTS (
                SELECT 1 FROM conversations AS c
                WHERE c.id = %(convo_id)s
            )
            THEN 'not_found'
        WHEN NOT judged.actor_is_member THEN 'not_a_member'
        WHEN NOT judged.actor_is_admin THEN 'not_an_admin'
        WHEN EXISTS (SELECT 1 FROM present) THEN 'active'
        ELSE 'raced'
    END AS outcome,
    shown.convo_id,
    shown.member_did,
    shown.role,
    shown.joined_at,
    shown.left_at,
    shown.joined_seq,
    shown.last_read_seq
FROM judged
LEFT JOIN shown ON TRUE;

-- name: change_member
-- Removes a member (soft delete; end_member_devices then ends their devices and
-- welcomes) when new_role is NULL, else sets their role: run by remove_member and
-- set_role, so the rule that the conversation never loses its last admin is written
-- once. An admin removes anyone, a member removes themselves; only an admin sets a
-- role (their own included). Two admins removing or demoting each other at once cannot
-- leave the conversation without an admin, and a target re-added by a transaction that
-- committed meanwhile is judged as the active member it now is.
-- Returns: one row: the outcome ('done', 'not_found', 'not_a_member', 'not_an_admin',
-- 'not_member' (the target is not active) or 'last_admin': the target is an active
-- admin, would be removed or demoted, and no other active admin who has not asked to
-- leave remains) and, when done, the member's row.
-- Locks: the actor's and the target's rows (whatever their state in the statement's
-- snapshot) and the active admins' rows, FOR NO KEY UPDATE in DID order; every decision
-- is taken on those locked, newest row versions, held until the transaction ends.
-- Index: members_pkey.
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- The actor's, the target's and the active admins' rows, locked in DID order.
    SELECT
        l.member_did,
        l.role,
        l.left_at,
        l.leave_requested_seq
    FROM members AS l
    WHERE
        l.convo_id = %(convo_id)s
        AND (
            l.member_did IN (%(actor_did)s, %(member_did)s)
            OR (l.role = 'admin' AND l.left_at IS NULL)
        )
    ORDER BY l.member_did
    FOR NO KEY UPDATE
),

active AS (
    -- One line per locked row that is active in its newest version.
    SELECT
        locked.member_did,
        locked.role,
        locked.leave_requested_seq
    FROM locked
    WHERE locked.left_at IS NULL
),

verdict AS (
    -- The outcome, decided on the locked rows, refusals in their order.
    SELECT
        CASE
            WHEN
                NOT EXISTS (
                    SELECT 1 FROM conversations AS c
                    WHERE c.id = %(convo_id)s
                )
                THEN 'not_found'
            WHEN
                NOT EXISTS (
                    SELECT 1 FROM active
                    WHERE member_did = %(actor_did)s
                )
                THEN 'not_a_member'
            WHEN
                (%(actor_did)s <> %(member_did)s OR %(new_role)s::text IS NOT NULL)
                AND NOT EXISTS (
                    SELECT 1 FROM active
                    WHERE member_did = %(actor_did)s AND role = 'admin'
                )
                THEN 'not_an_admin'
            WHEN
                NOT EXISTS (
                    SELECT 1 FROM active
                    WHERE member_did = %(member_did)s
                )
                THEN 'not_member'
            WHEN
                EXISTS (
                    SELECT 1 FROM active
                    WHERE member_did = %(member_did)s AND role = 'admin'
                )
                AND coalesce(%(new_role)s::text, 'removed') <> 'admin'
                AND NOT EXISTS (
                    SELECT 1 FROM active
                    WHERE
                        role = 'admin'
                        AND member_did <> %(member_did)s
                        AND leave_requested_seq IS NULL
                )
                THEN 'last_admin'
            ELSE 'done'
        END AS outcome
),

removed AS (
    -- The target's row, left or with its new role, when the outcome is 'done'.
    UPDATE members AS m
    -- The clock after the locks are held, not the transaction's start: a send that held
    -- the member's row (and so was waited for) is then always before left_at.
    SET
        left_at = CASE WHEN %(new_role)s::text IS NULL THEN clock_timestamp() END,
        role = coalesce(%(new_role)s::text, m.role)
    FROM verdict
    WHERE
        m.convo_id = %(convo_id)s
        AND m.member_did = %(member_did)s
        AND verdict.outcome = 'done'
    RETURNING
        m.convo_id, m.member_did, m.role, m.joined_at, m.left_at, m.joined_seq, m.last_read_seq
)

SELECT
    verdict.outcome,
    removed.convo_id,
    removed.member_did,
    removed.role,
    removed.joined_at,
    removed.left_at,
    removed.joined_seq,
    removed.last_read_seq
FROM verdict
LEFT JOIN removed ON TRUE;

-- name: end_member_devices
-- What a removed member leaves behind in the conversation, run by remove_member after
-- change_member in the same transaction, on a snapshot taken once it
-- holds the member's row: an add by commit that held the row first has committed, and
-- its devices and welcomes are seen here; a later one waits for the row, and finds the
-- member gone. The member's devices leave the group with them; their pending welcomes
-- (expired ones too) are withdrawn, so no device of theirs joins from one, and a re-add
-- may use the same package again.
-- Returns: no rows: the row count is the welcomes withdrawn.
-- Locks: under the member's row, held: the pending welcomes, in (convo_id, id) order
-- (the order a revocation's withdrawal and a conversation's cascade take them in; a
-- consume or reject locks the member's row first, so none is in flight here), and the
-- member's member devices.
-- Index: member_devices_pkey, welcomes_pending_by_recipient or welcomes_pending_unique
-- (a member's pending welcomes: by recipient or by conversation).
WITH devices_left AS (
    -- The member's devices leave the group with them.
    UPDATE member_devices AS md
    SET left_at = %(left_at)s
    WHERE
        md.convo_id = %(convo_id)s
        AND md.member_did = %(member_did)s
        AND md.left_at IS NULL
)

UPDATE welcomes AS w
SET withdrawn_at = %(left_at)s
WHERE (w.convo_id, w.id) IN (
    SELECT
        p.convo_id,
        p.id
    FROM welcomes AS p
    WHERE
        p.convo_id = %(convo_id)s
        AND p.recipient_did = %(member_did)s
        AND p.ended_at IS NULL
    ORDER BY p.convo_id, p.id
    FOR UPDATE
);

-- name: is_member
-- Whether the DID is an active member of the conversation.
-- Returns: always one row, is_member.
-- Locks: none.
-- Index: members_pkey or members_active_by_member (the membership look-up).
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
-- Returns: up to limit members; none when the actor is not an active member.
-- Locks: none.
-- Index: members_pkey (the keyset range; the actor's look-up may take
-- members_active_by_member).
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
-- One membership, active or not, with its unread count (unread_messages: readable app
-- messages from others after the read marker; zero once the member has left).
-- Returns: the membership; no row when the DID never was a member.
-- Locks: none.
-- Index: members_pkey, messages_pkey (the count).
-- not null: unread_count (a count, always one row)
SELECT
    m.convo_id,
    m.member_did,
    m.role,
    m.joined_at,
    m.left_at,
    m.joined_seq,
    m.last_read_seq,
    (
        SELECT u.unread_count
        FROM unread_messages(m.convo_id, m.member_did, m.last_read_seq) AS u
    ) AS unread_count
FROM members AS m
WHERE m.convo_id = %(convo_id)s AND m.member_did = %(member_did)s;

-- name: mark_read
-- Moves the actor's read marker forward to a seq (clamped to the conversation's
-- last_seq), never back.
-- Returns: one row: the outcome ('marked', 'not_found', 'not_a_member') and, when
-- marked, the membership with its unread count (unread_messages, after the moved
-- marker).
-- Locks: only the actor's own row (the UPDATE decides on its newest version: a removal
-- committed meanwhile refuses the call).
-- Index: members_pkey or members_active_by_member (the membership look-up),
-- conversations_pkey, messages_pkey (the count).
-- not null: outcome (a CASE whose every branch is a literal)
WITH marked AS (
    -- The actor's row, when active, with the marker moved.
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
            SELECT u.unread_count
            FROM unread_messages(m.convo_id, m.member_did, m.last_read_seq) AS u
        ) AS unread_count
)

SELECT
    CASE
        WHEN marked.member_did IS NOT NULL THEN 'marked'
        WHEN c.id IS NULL THEN 'not_found'
        ELSE 'not_a_member'
    END AS outcome,
    marked.convo_id,
    marked.member_did,
    marked.role,
    marked.joined_at,
    marked.left_at,
    marked.joined_seq,
    marked.last_read_seq,
    marked.unread_count
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN conversations AS c ON wanted.id = c.id
LEFT JOIN marked ON TRUE;

-- name: remove_members
-- The roster change of a removal commit, run by remove_members_with_commit in the
-- transaction where sequence_message has just stored the commit at `seq`, holding the
-- members rows of the actor, of every member named and of the active admins. Each
-- (member_did, device_id) names a device to remove; a NULL device_id names the whole
-- member (every device of theirs in the group). A member left with no device in the
-- group leaves with the last one. What leaves is ended at `seq` (left_seq), so the
-- removed reads up to and including this commit; pending welcomes of removed devices,
-- and every pending welcome of a member who leaves, are withdrawn. What changed is kept
-- in roster_commits for a retry of the same commit.
-- Rights: an active admin removes anyone else's devices; any active member removes
-- devices of its own, revoked devices, and devices (or the whole) of a member who asked
-- to leave. No commit removes its committer: its device (`actor_device_id`, when given),
-- its last device in the group, or its member whole.
-- Returns: one row: the outcome ('removed'; else, in the order decided: 'not_member' (a
-- DID named is not an active member), 'not_in_group' (a device named is not in the
-- group), 'self', 'not_an_admin', 'last_admin' (an admin leaves and no active admin who
-- has not asked to leave stays)), members_left, devices_left and welcomes_withdrawn.
-- Unless the outcome is 'removed' nothing is written and the caller rolls the commit
-- back.
-- Locks: the members rows are locked already (sequence_message), and this statement's
-- snapshot, taken after, sees them as they stay: member devices and leave requests
-- change only under their member's row. Then the member devices it ends, the members
-- rows it ends (held), and the pending welcomes it withdraws, in (convo_id, id) order
-- (as every withdrawal takes them; a consume or reject waits on its recipient's
-- members row first).
-- Index: members_pkey, member_devices_pkey, devices_pkey or devices_id_key (each
-- device's revocation), members_active_admins (the admins who stay),
-- welcomes_pending_unique (the conversation's pending welcomes); the record of what the
-- commit changed is a plain insert.
-- not null: outcome (a CASE whose every branch is a literal)
-- not null: members_left, devices_left, welcomes_withdrawn (counts)
WITH wanted AS (
    -- What the commit removes, one row per entry, as the caller listed them.
    SELECT
        w.member_did,
        w.device_id
    FROM
        unnest(%(member_dids)s::text[], %(device_ids)s::uuid[])
            AS w (member_did, device_id)
),

people AS (
    -- The members named, as their locked rows stay.
    SELECT
        m.member_did,
        m.role,
        m.left_at IS NULL AS active,
        m.leave_requested_seq IS NOT NULL AS asked_to_leave
    FROM members AS m
    WHERE m.convo_id = %(convo_id)s AND m.member_did = any(%(member_dids)s::text[])
),

removed AS (
    -- The devices that leave the group: every device of a member named whole, else the
    -- device named.
    SELECT
        md.member_did,
        md.device_id,
        w.device_id IS NOT NULL AS named,
        dv.revoked_at IS NOT NULL AS revoked
    FROM member_devices AS md
    INNER JOIN wanted AS w
        ON
            md.member_did = w.member_did
            AND (w.device_id IS NULL OR md.device_id = w.device_id)
    INNER JOIN devices AS dv ON md.member_did = dv.owner_did AND md.device_id = dv.id
    WHERE md.convo_id = %(convo_id)s AND md.left_at IS NULL
),

leaving AS (
    -- The members who leave: named whole, or left with no device in the group.
    SELECT
        p.member_did,
        p.role
    FROM people AS p
    WHERE
        p.active
        AND (
            EXISTS (
                SELECT 1 FROM wanted AS w
                WHERE w.member_did = p.member_did AND w.device_id IS NULL
            )
            OR NOT EXISTS (
                SELECT 1
                FROM member_devices AS md
                WHERE
                    md.convo_id = %(convo_id)s
                    AND md.member_did = p.member_did
                    AND md.left_at IS NULL
                    AND NOT EXISTS (
                        SELECT 1 FROM removed AS r
                        WHERE r.member_did = md.member_did AND r.device_id = md.device_id
                    )
            )
        )
),

verdict AS (
    -- The outcome, refusals in their order.
    SELECT
        CASE
            WHEN
                EXISTS (
                    SELECT 1 FROM wanted AS w
                    WHERE NOT EXISTS (
                        SELECT 1 FROM people AS p
                        WHERE p.member_did = w.member_did AND p.active
                    )
                )
                THEN 'not_member'
            WHEN
                EXISTS (
                    SELECT 1 FROM wanted AS w
                    WHERE
                        w.device_id IS NOT NULL
                        AND NOT EXISTS (
                            SELECT 1 FROM removed AS r
                            WHERE r.member_did = w.member_did AND r.device_id = w.device_id
                        )
                )
                THEN 'not_in_group'
            WHEN
                EXISTS (
                    SELECT 1 FROM leaving AS l
                    WHERE l.member_did = %(actor_did)s
                )
                OR EXISTS (
                    SELECT 1 FROM removed AS r
                    WHERE
                        r.member_did = %(actor_did)s
                        AND r.device_id = %(actor_device_id)s::uuid
                )
                THEN 'self'
            WHEN
                NOT EXISTS (
                    SELECT 1 FROM members AS a
                    WHERE
                        a.convo_id = %(convo_id)s
                        AND a.member_did = %(actor_did)s
                        AND a.role = 'admin'
                )
                AND EXISTS (
                    SELECT 1
                    FROM wanted AS w
                    INNER JOIN people AS p ON w.member_did = p.member_did
                    WHERE
                        w.member_did <> %(actor_did)s
                        AND NOT p.asked_to_leave
                        AND NOT EXISTS (
                            SELECT 1 FROM removed AS r
                            WHERE
                                r.member_did = w.member_did
                                AND r.named
                                AND r.device_id = w.device_id
                                AND r.revoked
                        )
                )
                THEN 'not_an_admin'
            WHEN
                EXISTS (
                    SELECT 1 FROM leaving AS l
                    WHERE l.role = 'admin'
                )
                AND (
                    -- A count, not an EXISTS: a search for any one admin row could
                    -- read the table from its start rather than the admins' index.
                    SELECT count(*)
                    FROM members AS a
                    WHERE
                        a.convo_id = %(convo_id)s
                        AND a.role = 'admin'
                        AND a.left_at IS NULL
                        AND a.leave_requested_seq IS NULL
                        AND NOT EXISTS (
                            SELECT 1 FROM leaving AS l
                            WHERE l.member_did = a.member_did
                        )
                ) = 0
                THEN 'last_admin'
            ELSE 'removed'
        END AS outcome
),

clock AS (
    -- One time for everything this commit ends: after the locks are held, so a send
    -- that held a removed member's row (and so was waited for) is before it.
    SELECT clock_timestamp() AS at
),

devices_left AS (
    -- The removed devices leave the group at this commit.
    UPDATE member_devices AS md
    SET
        left_at = clock.at,
        left_seq = %(seq)s
    FROM removed AS r, verdict, clock
    WHERE
        verdict.outcome = 'removed'
        AND md.convo_id = %(convo_id)s
        AND md.member_did = r.member_did
        AND md.device_id = r.device_id
    RETURNING md.device_id
),

members_left AS (
    -- The members who leave, at this commit.
    UPDATE members AS m
    SET
        left_at = clock.at,
        left_seq = %(seq)s
    FROM leaving AS l, verdict, clock
    WHERE
        verdict.outcome = 'removed'
        AND m.convo_id = %(convo_id)s
        AND m.member_did = l.member_did
    RETURNING m.member_did
),

withdrawn AS (
    -- Pending welcomes of what leaves: no removed device joins from one.
    UPDATE welcomes AS w
    SET withdrawn_at = clock.at
    FROM clock
    WHERE (w.convo_id, w.id) IN (
        SELECT
            p.convo_id,
            p.id
        FROM welcomes AS p
        WHERE
            p.convo_id = %(convo_id)s
            AND p.ended_at IS NULL
            AND (SELECT v.outcome FROM verdict AS v) = 'removed'
            AND (
                p.recipient_did IN (SELECT l.member_did FROM leaving AS l)
                OR EXISTS (
                    SELECT 1 FROM removed AS r
                    WHERE
                        r.member_did = p.recipient_did
                        AND r.device_id = p.recipient_device_id
                )
            )
        ORDER BY p.convo_id, p.id
        FOR UPDATE
    )
    RETURNING w.id
),

recorded AS (
    -- What this commit changed, for a retry of it.
    INSERT INTO roster_commits (
        convo_id, seq, members_joined, devices_joined, members_left, devices_left
    )
    SELECT
        %(convo_id)s::uuid AS convo_id,
        %(seq)s::bigint AS seq,
        0 AS members_joined,
        0 AS devices_joined,
        (SELECT count(*) FROM members_left) AS members_left,
        (SELECT count(*) FROM devices_left) AS devices_left
    FROM verdict
    WHERE verdict.outcome = 'removed'
)

SELECT
    verdict.outcome,
    (SELECT count(*) FROM members_left) AS members_left,
    (SELECT count(*) FROM devices_left) AS devices_left,
    (SELECT count(*) FROM withdrawn) AS welcomes_withdrawn
FROM verdict;

-- name: request_leave
-- Marks the actor's request to leave, run by request_leave in the transaction where
-- sequence_message has just stored the actor's proposal at `seq`, holding the actor's
-- members row and the active admins' rows. From it on the actor sends nothing; the
-- next removal commit, by any member, fulfils it.
-- Returns: one row: the outcome ('asked': marked now, or marked before by this same
-- proposal, replayed; 'last_admin': the actor is an admin, no other active admin who has
-- not asked to leave remains, and some other active member has not asked either: the
-- caller rolls the proposal back).
-- Locks: the rows are locked already (sequence_message); the actor's row is updated.
-- Index: members_pkey.
-- not null: outcome (a CASE whose every branch is a literal)
WITH verdict AS (
    -- Decided on the locked rows, as they stay.
    SELECT
        CASE
            WHEN
                a.leave_requested_seq IS NULL
                AND a.role = 'admin'
                AND NOT EXISTS (
                    SELECT 1 FROM members AS o
                    WHERE
                        o.convo_id = a.convo_id
                        AND o.member_did <> a.member_did
                        AND o.role = 'admin'
                        AND o.left_at IS NULL
                        AND o.leave_requested_seq IS NULL
                )
                AND EXISTS (
                    SELECT 1 FROM members AS o
                    WHERE
                        o.convo_id = a.convo_id
                        AND o.member_did <> a.member_did
                        AND o.left_at IS NULL
                        AND o.leave_requested_seq IS NULL
                )
                THEN 'last_admin'
            ELSE 'asked'
        END AS outcome
    FROM members AS a
    WHERE a.convo_id = %(convo_id)s AND a.member_did = %(actor_did)s
),

asked AS (
    -- The request, unless this proposal made it before.
    UPDATE members AS m
    SET leave_requested_seq = %(seq)s
    FROM verdict
    WHERE
        verdict.outcome = 'asked'
        AND m.convo_id = %(convo_id)s
        AND m.member_did = %(actor_did)s
        AND m.leave_requested_seq IS NULL
)

SELECT verdict.outcome
FROM verdict;
