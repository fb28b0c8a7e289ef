-- name: create_conversation_with_members
-- Creates the conversation, its creator as admin and the other members, in one
-- statement; a DID listed twice (or the creator listed again) joins once. With
-- device_id, the creator's device is in the group from the start (joined_seq 0). The
-- digest of what was asked is kept (creation_digest), for a retry to be recognised.
-- Returns: the new conversation's row and creator_device: 'added', or 'unknown' (the
-- creator has no device of that id) or 'revoked', when the caller then rolls the
-- transaction back; NULL without device_id. No row when the id is taken (nothing is
-- written: the caller reads what holds it, get_created_conversation).
-- Locks: only the rows it inserts (the conversation's, its members', the member device);
-- the creator's device row is read, not locked (the member device's foreign key check
-- takes FOR KEY SHARE, which a revocation does not wait for): a revocation committed
-- before the statement is seen ('revoked'), a later one finds the device in the group,
-- a pending removal, as it would any other. A concurrent creation of the same id is
-- waited for (the insert's unique check), then this one writes nothing.
-- Index: conversations_pkey (the id's conflict); devices_pkey or devices_id_key (the
-- creator's device, when named).
WITH convo AS (
    -- The new conversation.
    INSERT INTO conversations (id, creator_did, cipher_suite, title, creation_digest)
    VALUES (%(convo_id)s, %(actor_did)s, %(cipher_suite)s, %(title)s, %(creation_digest)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING
        id, creator_did, cipher_suite, epoch, last_seq, title, created_at, updated_at,
        external_joins
),

dids AS (
    -- Every member's DID once, the creator's included.
    SELECT unnest(%(member_dids)s::text[]) AS did
    UNION
    SELECT %(actor_did)s::text AS did
),

joined AS (
    -- The creator as admin, the others as members.
    INSERT INTO members (convo_id, member_did, role)
    SELECT
        convo.id,
        dids.did,
        CASE WHEN dids.did = convo.creator_did THEN 'admin' ELSE 'member' END AS role
    FROM convo
    CROSS JOIN dids
),

named AS (
    -- The creator's device, when named.
    SELECT
        d.id,
        d.revoked_at
    FROM devices AS d
    WHERE d.owner_did = %(actor_did)s AND d.id = %(device_id)s::uuid
),

in_group AS (
    -- The creator's active device in the group, since the start.
    INSERT INTO member_devices (convo_id, member_did, device_id, joined_seq)
    SELECT
        convo.id AS convo_id,
        convo.creator_did AS member_did,
        named.id AS device_id,
        0 AS joined_seq
    FROM convo CROSS JOIN named
    WHERE named.revoked_at IS NULL
    RETURNING device_id
)

SELECT
    convo.id,
    convo.creator_did,
    convo.cipher_suite,
    convo.epoch,
    convo.last_seq,
    convo.title,
    convo.created_at,
    convo.updated_at,
    convo.external_joins,
    CASE
        WHEN %(device_id)s::uuid IS NULL THEN NULL
        WHEN EXISTS (SELECT 1 FROM in_group) THEN 'added'
        WHEN EXISTS (SELECT 1 FROM named) THEN 'revoked'
        ELSE 'unknown'
    END AS creator_device
FROM convo;

-- name: get_created_conversation
-- The conversation holding an id that a creation found taken, as it is now, and
-- whether the creation was this one again: the same creator asking for the same
-- conversation (creation_digest) and still an active member of it.
-- Returns: the conversation's row and replays (FALSE for a conversation created before
-- digests were kept); no row when no conversation has the id (it was deleted since the
-- creation found it).
-- Locks: none.
-- Index: conversations_pkey; members_pkey or members_active_by_member (the creator's
-- membership).
-- not null: replays
SELECT
    c.id,
    c.creator_did,
    c.cipher_suite,
    c.epoch,
    c.last_seq,
    c.title,
    c.created_at,
    c.updated_at,
    c.external_joins,
    coalesce(
        c.creator_did = %(actor_did)s
        AND c.creation_digest = %(creation_digest)s
        AND EXISTS (
            SELECT 1
            FROM members AS m
            WHERE m.convo_id = c.id AND m.member_did = c.creator_did AND m.left_at IS NULL
        ),
        FALSE
    ) AS replays
FROM conversations AS c
WHERE c.id = %(convo_id)s;

-- name: get_conversation
-- A conversation, seen by one of its active members.
-- Returns: the conversation; no row when it does not exist or the actor is not an
-- active member of it.
-- Locks: none.
-- Index: conversations_pkey; members_pkey or members_active_by_member (the membership
-- look-up).
SELECT
    c.id,
    c.creator_did,
    c.cipher_suite,
    c.epoch,
    c.last_seq,
    c.title,
    c.created_at,
    c.updated_at,
    c.external_joins
FROM conversations AS c
WHERE
    c.id = %(convo_id)s
    AND EXISTS (
        SELECT 1
        FROM members AS m
        WHERE m.convo_id = c.id AND m.member_did = %(actor_did)s AND m.left_at IS NULL
    );

-- name: list_conversations
-- The actor's active conversations, newest activity first, after a keyset position (the
-- first page passes 9999-12-31 and the greatest uuid). Unread counts are derived from
-- each read marker (unread_messages: readable app messages from others after it), for
-- the rows of the page only (a scalar subquery is evaluated after the LIMIT).
-- Returns: up to limit rows, each a conversation with the actor's role, read marker and
-- unread_count; none when no active conversation of the actor's lies past the position.
-- Locks: none.
-- Index: members_active_by_member (the actor's memberships), conversations_pkey,
-- messages_pkey (the unread counts).
-- not null: unread_count (a count, always one row)
SELECT
    c.id,
    c.creator_did,
    c.cipher_suite,
    c.epoch,
    c.last_seq,
    c.title,
    c.created_at,
    c.updated_at,
    c.external_joins,
    m.role,
    m.last_read_seq,
    (
        SELECT u.unread_count
        FROM unread_messages(m.convo_id, m.member_did, m.last_read_seq) AS u
    ) AS unread_count
FROM members AS m
INNER JOIN conversations AS c ON m.convo_id = c.id
WHERE
    m.member_did = %(actor_did)s
    AND m.left_at IS NULL
    AND (c.updated_at, c.id) < (%(before_updated_at)s::timestamptz, %(before_id)s::uuid)
ORDER BY c.updated_at DESC, c.id DESC
LIMIT %(limit)s;

-- name: get_current_epoch
-- The conversation's epoch, for an active member; one snapshot decides the outcome and
-- the epoch both.
-- Returns: one row: the outcome ('ok', 'not_found', 'not_a_member') and, for an active
-- member, the epoch.
-- Locks: none.
-- Index: conversations_pkey; members_pkey or members_active_by_member (the membership
-- look-up).
-- not null: outcome (a CASE whose every branch is a literal)
SELECT
    CASE
        WHEN c.id IS NULL THEN 'not_found'
        WHEN m.member_did IS NULL THEN 'not_a_member'
        ELSE 'ok'
    END AS outcome,
    CASE WHEN m.member_did IS NOT NULL THEN c.epoch END AS epoch
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN conversations AS c ON wanted.id = c.id
LEFT JOIN members AS m
    ON c.id = m.convo_id AND m.member_did = %(actor_did)s AND m.left_at IS NULL;

-- name: set_external_joins
-- Sets the conversation's policy for external joins, for an active admin.
-- Returns: one row: the outcome ('set', 'not_found', 'not_a_member', 'not_an_admin'),
-- decided on the locked row.
-- Locks: in the layer's order: the actor's members row, FOR NO KEY UPDATE (the admin
-- check is made on its newest version: a demotion in flight is waited for); then the
-- conversation row, by the UPDATE, only for an admin.
-- Index: members_pkey or members_active_by_member (the actor's row); conversations_pkey.
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- The actor's active members row, locked first.
    SELECT l.role
    FROM members AS l
    WHERE l.convo_id = %(convo_id)s AND l.member_did = %(actor_did)s AND l.left_at IS NULL
    FOR NO KEY UPDATE
),

judged AS (
    -- The actor's rights on the locked row, read before the conversation row is touched.
    SELECT
        count(*) > 0 AS is_member,
        coalesce(bool_or(l.role = 'admin'), FALSE) AS is_admin
    FROM locked AS l
),

changed AS (
    -- The policy, set by an admin.
    UPDATE conversations AS c
    SET external_joins = %(policy)s
    FROM judged
    WHERE c.id = %(convo_id)s AND judged.is_admin
    RETURNING c.id
)

SELECT
    CASE
        WHEN EXISTS (SELECT 1 FROM changed) THEN 'set'
        WHEN c.id IS NULL THEN 'not_found'
        WHEN NOT judged.is_member THEN 'not_a_member'
        ELSE 'not_an_admin'
    END AS outcome
FROM judged
LEFT JOIN conversations AS c ON c.id = %(convo_id)s;

-- name: delete_conversation
-- The first of delete_conversation's two statements: it locks the conversation for the
-- delete and judges the actor; delete_locked_conversation, in the same transaction,
-- deletes.
-- Returns: one row: the outcome ('admin', 'not_found', 'not_a_member',
-- 'not_an_admin'), decided on the locked rows.
-- Locks: every members row of the conversation its snapshot shows, FOR UPDATE in DID
-- order, as the cascade would delete it: the admin check is made on the newest version
-- of the actor's row, and a sender (which holds its own row, then waits for the
-- conversation's) is waited for instead of deadlocked with. The aggregate reads all of
-- the locked rows before the conversation row is touched; then the conversation row,
-- FOR UPDATE, held until the transaction ends (no members row can be created after it).
-- Index: conversations_pkey; members_pkey or members_active_by_member (the membership
-- look-up).
-- not null: outcome (a CASE whose every branch is a literal)
WITH locked AS (
    -- Every members row of the conversation, locked in DID order.
    SELECT
        l.member_did,
        l.role,
        l.left_at
    FROM members AS l
    WHERE l.convo_id = %(convo_id)s
    ORDER BY l.member_did
    FOR UPDATE
),

judged AS (
    -- The actor's rights on the locked rows.
    SELECT
        coalesce(bool_or(l.member_did = %(actor_did)s AND l.left_at IS NULL), FALSE)
            AS is_member,
        coalesce(
            bool_or(l.member_did = %(actor_did)s AND l.left_at IS NULL AND l.role = 'admin'),
            FALSE
        ) AS is_admin
    FROM locked AS l
),

convo AS (
    -- The conversation row, locked after the members rows: gone if a delete in flight
    -- committed first.
    SELECT c.id
    FROM conversations AS c CROSS JOIN judged
    WHERE c.id = %(convo_id)s
    FOR UPDATE OF c
)

SELECT
    CASE
        WHEN convo.id IS NULL THEN 'not_found'
        WHEN NOT judged.is_member THEN 'not_a_member'
        WHEN NOT judged.is_admin THEN 'not_an_admin'
        ELSE 'admin'
    END AS outcome
FROM judged
LEFT JOIN convo ON TRUE;

-- name: delete_locked_conversation
-- The second statement of delete_conversation: on a snapshot taken after the first one
-- locked the conversation row, so it sees a member added while the first one waited
-- (no one can add one now). It deletes the conversation, and by cascade its members,
-- messages, welcomes and blobs, only if it holds every members row: a row another
-- transaction holds (a new member's send, waiting for the conversation row) is passed
-- over, and the caller starts over rather than wait on it (the send would wait on the
-- delete: a deadlock).
-- Returns: one row: whether the conversation was deleted.
-- Locks: every members row nobody else holds, FOR UPDATE SKIP LOCKED in DID order (the
-- first statement's rows are this transaction's already), then the conversation row
-- (held) and what the cascade deletes.
-- Index: members_pkey (the conversation's members), conversations_pkey.
-- not null: deleted (a comparison of a count)
WITH everyone AS (
    -- Every members row of the conversation, in this snapshot.
    SELECT count(*) AS n
    FROM members AS m
    WHERE m.convo_id = %(convo_id)s
),

locked AS (
    -- Those this transaction holds or can take at once.
    SELECT m.member_did
    FROM members AS m
    WHERE m.convo_id = %(convo_id)s
    ORDER BY m.member_did
    FOR UPDATE SKIP LOCKED
),

judged AS (
    -- An aggregate: every row above is locked before the delete.
    SELECT count(*) AS n FROM locked
),

deleted AS (
    -- The conversation, when no members row is held by anyone else.
    DELETE FROM conversations AS c
    USING judged, everyone
    WHERE c.id = %(convo_id)s AND judged.n = everyone.n
    RETURNING c.id
)

SELECT (SELECT count(*) FROM deleted) = 1 AS deleted;
