-- name: access_of
-- Why a write was refused: does the conversation exist, is the actor an active member,
-- an admin, and what is the epoch now. Read only after a guarded statement matched no row.
SELECT
    c.id IS NOT NULL AS convo_exists,
    m.member_did IS NOT NULL AS is_member,
    coalesce(m.role = 'admin', false) AS is_admin,
    c.epoch
FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
LEFT JOIN conversations AS c ON c.id = wanted.id
LEFT JOIN members AS m
    ON
        m.convo_id = c.id
        AND m.member_did = %(actor_did)s
        AND m.left_at IS NULL;
