-- name: access_of
-- Why a read (or delete_message, or a blob write) was refused: does the conversation
-- exist, is the actor an active member, an admin, may the actor (its device, when
-- device_id is given) read any of it (read_range: a reader removed by a commit still
-- reads up to it), and what is the epoch now. Read only after a guarded statement
-- matched no row.
-- Returns: always one row: convo_exists, is_member, is_admin, the epoch (NULL when the
-- conversation does not exist) and is_reader.
-- Locks: none.
-- Index: conversations_pkey, members_pkey (the membership and the read range; a device
-- named adds one probe of its member device's primary key).
-- not null: convo_exists, is_member, is_admin, is_reader (IS NOT NULL, coalesce, EXISTS)
SELECT
    c.id IS NOT NULL AS convo_exists,
    m.member_did IS NOT NULL AS is_member,
    coalesce(m.role = 'admin', FALSE) AS is_admin,
    c.epoch,
    c.id IS NOT NULL
    AND EXISTS (
        SELECT 1
        FROM read_range(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid)
    ) AS is_reader
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN conversations AS c ON wanted.id = c.id
LEFT JOIN members AS m
    ON
        c.id = m.convo_id
        AND m.member_did = %(actor_did)s
        AND m.left_at IS NULL;
