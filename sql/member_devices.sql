-- name: list_member_devices
-- A conversation's member devices (the devices of its active members that are in its
-- group), in (DID, device id) order after a keyset position (the first page passes ''
-- and the nil uuid), for an actor who is an active member; with pending_only, only the
-- pending removals: devices a commit should remove, revoked by their owner or of a
-- member who asked to leave, while their leaf is still in the group. A device is listed
-- either way with its revocation time and its member's request to leave.
-- Returns: up to limit member devices; none when the actor is not an active member.
-- Locks: none.
-- Index: member_devices_pkey (the keyset range), members_pkey (each device's member),
-- devices_pkey (each device's revocation); the actor's look-up takes members_pkey or
-- members_active_by_member.
SELECT
    md.convo_id,
    md.member_did,
    md.device_id,
    md.joined_seq,
    md.joined_at,
    d.revoked_at,
    m.leave_requested_seq
FROM member_devices AS md
INNER JOIN members AS m ON md.convo_id = m.convo_id AND md.member_did = m.member_did
INNER JOIN devices AS d ON md.member_did = d.owner_did AND md.device_id = d.id
WHERE
    md.convo_id = %(convo_id)s
    AND md.left_at IS NULL
    AND (
        NOT %(pending_only)s::boolean
        OR d.revoked_at IS NOT NULL
        OR m.leave_requested_seq IS NOT NULL
    )
    AND (md.member_did, md.device_id) > (%(after_did)s::text, %(after_device_id)s::uuid)
    AND EXISTS (
        SELECT 1
        FROM members AS a
        WHERE a.convo_id = md.convo_id AND a.member_did = %(actor_did)s AND a.left_at IS NULL
    )
ORDER BY md.member_did, md.device_id
LIMIT %(limit)s;
