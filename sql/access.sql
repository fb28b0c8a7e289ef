-- name: access_of
-- Why a read (or delete_message, or a blob write) was refused: does the conversation
-- exist, is the actor an active member, an admin, and what is the epoch now. Read only
-- after a guarded statement matched no row.
-- Returns: always one row: convo_exists, is_member, is_admin and the epoch (NULL when
-- the conversation does not exist).
-- Locks: none.
-- Index: conversations_pkey, members_pkey.
-- not null: convo_exists, is_member, is_admin (IS NOT NULL and coalesce(..., FALSE))
SELECT
    c.id IS NOT NULL AS convo_exists,
    m.member_did IS NOT NULL AS is_member,
    coalesce(m.role = 'admin', FALSE) AS is_admin,
    c.epoch
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN conversations AS c ON wanted.id = c.id
LEFT JOIN members AS m
    ON
        c.id = m.convo_id
        AND m.member_did = %(actor_did)s
        AND m.left_at IS NULL;
