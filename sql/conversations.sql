-- name: create_conversation_with_members
-- Creates the conversation, its creator as admin and the other members, in one
-- statement; a DID listed twice (or the creator listed again) joins once.
WITH convo AS (
    INSERT INTO conversations (id, creator_did, cipher_suite, title)
    VALUES (%(convo_id)s, %(creator_did)s, %(cipher_suite)s, %(title)s)
    RETURNING id, creator_did, cipher_suite, epoch, last_seq, title, created_at, updated_at
),

dids AS (
    SELECT unnest(%(member_dids)s::text[]) AS did
    UNION
    SELECT %(creator_did)s::text AS did
),

joined AS (
    INSERT INTO members (convo_id, member_did, role)
    SELECT
        convo.id,
        dids.did,
        CASE WHEN dids.did = convo.creator_did THEN 'admin' ELSE 'member' END AS role
    FROM convo
    CROSS JOIN dids
)

SELECT
    id,
    creator_did,
    cipher_suite,
    epoch,
    last_seq,
    title,
    created_at,
    updated_at
FROM convo;

-- name: get_conversation
-- A conversation, seen by one of its active members.
SELECT
    c.id,
    c.creator_did,
    c.cipher_suite,
    c.epoch,
    c.last_seq,
    c.title,
    c.created_at,
    c.updated_at
FROM conversations AS c
WHERE
    c.id = %(convo_id)s
    AND EXISTS (
        SELECT 1
        FROM members AS m
        WHERE m.convo_id = c.id AND m.member_did = %(actor_did)s AND m.left_at IS NULL
    );

-- name: list_conversations
-- The actor's active conversations, newest activity first, after a keyset position
-- (the first page passes 9999-12-31 and the greatest uuid). Unread counts are derived
-- from each read marker: unexpired app messages from others after it.
-- not null: unread_count (a count)
SELECT
    c.id,
    c.creator_did,
    c.cipher_suite,
    c.epoch,
    c.last_seq,
    c.title,
    c.created_at,
    c.updated_at,
    m.role,
    m.last_read_seq,
    (
        SELECT count(*)
        FROM messages AS msg
        WHERE
            msg.convo_id = c.id
            AND msg.seq > m.last_read_seq
            AND msg.message_type = 'app'
            AND msg.sender_did <> m.member_did
            AND (msg.expires_at IS NULL OR msg.expires_at > now())
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
-- The epoch, for an active member.
SELECT c.epoch
FROM conversations AS c
WHERE
    c.id = %(convo_id)s
    AND EXISTS (
        SELECT 1
        FROM members AS m
        WHERE m.convo_id = c.id AND m.member_did = %(actor_did)s AND m.left_at IS NULL
    );

-- name: delete_conversation
-- Deletes the conversation and, by cascade, its members, messages, welcomes and blobs;
-- only an active admin may. Every members row of the conversation is locked first, in
-- DID order, as the cascade would delete it: the admin check is made on the newest
-- version of the actor's row, and a sender (which holds its own row, then waits for the
-- conversation's) is waited for instead of deadlocked with. The aggregate reads all of
-- the locked rows before the conversation row is touched.
WITH locked AS (
    SELECT
        l.member_did,
        l.role,
        l.left_at
    FROM members AS l
    WHERE l.convo_id = %(convo_id)s
    ORDER BY l.member_did
    FOR UPDATE
),

allowed AS (
    SELECT
        coalesce(
            bool_or(
                locked.member_did = %(actor_did)s
                AND locked.role = 'admin'
                AND locked.left_at IS NULL
            ),
            FALSE
        ) AS ok
    FROM locked
)

DELETE FROM conversations AS c
USING allowed
WHERE c.id = %(convo_id)s AND allowed.ok;
