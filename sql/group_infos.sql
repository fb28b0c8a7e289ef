-- name: store_group_info
-- Keeps the GroupInfo a commit carried as the conversation's latest, unless the one
-- kept already describes this epoch or a later one: it never goes back.
-- Returns: nothing.
-- Locks: the conversation's group_infos row (inserted, or FOR UPDATE by the conflict),
-- after the conversation row the commit holds: every writer of the row holds it first.
-- Index: group_infos_pkey.
INSERT INTO group_infos (convo_id, epoch, group_info)
VALUES (%(convo_id)s, %(epoch)s, %(group_info)s)
ON CONFLICT (convo_id) DO UPDATE
    SET
        epoch = excluded.epoch,
        group_info = excluded.group_info,
        updated_at = now()
    WHERE group_infos.epoch < excluded.epoch;

-- name: get_group_info
-- The conversation's latest GroupInfo, for an active member.
-- Returns: the GroupInfo, its epoch and when it was stored; no row when none was
-- stored, the conversation does not exist or the actor is not an active member.
-- Locks: none.
-- Index: group_infos_pkey; members_pkey or members_active_by_member (the membership).
SELECT
    g.convo_id,
    g.epoch,
    g.group_info,
    g.updated_at
FROM group_infos AS g
WHERE
    g.convo_id = %(convo_id)s
    AND EXISTS (
        SELECT 1
        FROM members AS m
        WHERE m.convo_id = g.convo_id AND m.member_did = %(actor_did)s AND m.left_at IS NULL
    );
