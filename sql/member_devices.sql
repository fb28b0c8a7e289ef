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

-- name: join_by_external_commit
-- The second statement of an external join, in the transaction whose sequence_message
-- stored the joining device's commit (the actor's members row and the conversation row
-- are locked already): the device of the actor's enters the group at that commit,
-- where the conversation's policy lets new devices of members join by themselves.
-- Returns: one row: the outcome, decided in this order: 'not_allowed' (the policy is
-- not 'own_devices'), 'unknown_device' (the actor has no such device), 'revoked',
-- 'in_group' (the device is in the group already), 'left' (it was in the group and
-- was removed: an add commit brings it back) or 'joined', the member device stored and
-- what the commit changed recorded; the caller rolls back on any other.
-- Locks: the member device it inserts. The conversation row is read under the lock its
-- commit holds, so the policy cannot change meanwhile; the device row is read, not
-- locked (a revocation does not wait for the join: one committed later finds the
-- device in the group, a pending removal).
-- Index: conversations_pkey; devices_pkey (the device); member_devices_pkey (its
-- earlier membership).
-- not null: outcome (a CASE whose every branch is a literal)
WITH named AS (
    -- The actor's device of that id.
    SELECT d.revoked_at IS NOT NULL AS revoked
    FROM devices AS d
    WHERE d.owner_did = %(actor_did)s AND d.id = %(device_id)s
),

earlier AS (
    -- The device's row in the group, when it was ever in it.
    SELECT md.left_at IS NULL AS in_group
    FROM member_devices AS md
    WHERE
        md.convo_id = %(convo_id)s
        AND md.member_did = %(actor_did)s
        AND md.device_id = %(device_id)s
),

verdict AS (
    -- The outcome, in the order the header gives.
    SELECT
        CASE
            WHEN
                NOT EXISTS (
                    SELECT 1
                    FROM conversations AS c
                    WHERE c.id = %(convo_id)s AND c.external_joins = 'own_devices'
                )
                THEN 'not_allowed'
            WHEN NOT EXISTS (SELECT 1 FROM named) THEN 'unknown_device'
            WHEN (SELECT named.revoked FROM named) THEN 'revoked'
            WHEN (SELECT earlier.in_group FROM earlier) THEN 'in_group'
            WHEN EXISTS (SELECT 1 FROM earlier) THEN 'left'
            ELSE 'joined'
        END AS outcome
),

joined AS (
    -- The device, in the group from this commit on.
    INSERT INTO member_devices (convo_id, member_did, device_id, joined_seq)
    SELECT
        %(convo_id)s::uuid AS convo_id,
        %(actor_did)s::text AS member_did,
        %(device_id)s::uuid AS device_id,
        %(seq)s::bigint AS joined_seq
    FROM verdict
    WHERE verdict.outcome = 'joined'
    RETURNING device_id
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
        1 AS devices_joined,
        0 AS members_left,
        0 AS devices_left
    FROM joined
)

SELECT verdict.outcome
FROM verdict;
