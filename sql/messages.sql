-- name: sequence_message
-- The one statement that gives a conversation its next message: create_message,
-- submit_commit, request_leave and the roster commits (add_members_with_commit,
-- remove_members_with_commit) run it. sent_at is left to its default, the
-- clock at insert: after the lock, so in seq order. No other member's row is touched.
-- Returns: exactly one row: the outcome and, when it is 'sequenced' or 'replayed', the
-- message's seq and times; `locked_targets`, the `targets` whose rows it locked (for an
-- add: the only rows add_members may re-add or add devices to, so no members row is
-- locked after the conversation's). Outcomes, in the order they are decided: sequenced
-- (last_seq + 1, and epoch + 1 for a commit, the message stored at its own epoch, the
-- actor's read marker moved to it, the notification queued), else not_found,
-- not_a_member, not_in_group (`device_id` names a device of the actor's that is not in
-- the group), leaving (the actor asked to leave, and sends nothing more: unless this is
-- a replay, or another proposal: a request to leave is one proposal per device),
-- not_an_admin (when admin_only, unless every target is an active member: an add of
-- new devices of members is any member's), replayed (this id was sent before by
-- the actor, with the same type, epoch and ciphertext: the stored message, nothing
-- written), id_taken, and epoch_conflict (the conversation's epoch minus `epoch` is not
-- within 0..epoch_window; commits pass 0): the caller then reads the epoch as it is now
-- (epoch_after_conflict).
-- Locks: in the layer's order: the judged members rows, FOR NO KEY UPDATE in DID order
-- (the actor's; the existing rows of `targets`, active or not, the members a roster
-- commit adds devices to or removes, so the statement after this one finds them as
-- judged here; with lock_admins, the active admins', so the rule that the group keeps
-- an admin is decided on locked rows), read through an aggregate so every one is locked
-- before the conversation row; then the actor's member device when `device_id` is
-- given, FOR SHARE (its newest version: a removal that held the actor's row and ended
-- the device is seen); then the conversation row, by the UPDATE that tests the epoch on
-- the row's newest version (a commit or send in flight is waited for and decided on).
-- The read marker is moved on the actor's row, locked already.
-- Index: members_pkey, messages_convo_id_id_key, conversations_pkey (and, when a device
-- is named, one probe of its member device's primary key).
-- Notifies: `channel`, payload 'convo_id:seq:message_type', queued by the insert
-- itself, once per stored row, and delivered only on commit.
-- not null: outcome, locked_targets (an array_agg, coalesced)
WITH locked AS (
    -- The judged members rows, locked in DID order.
    SELECT
        l.member_did,
        l.role,
        l.left_at,
        l.leave_requested_seq
    FROM members AS l
    WHERE
        l.convo_id = %(convo_id)s
        AND (
            l.member_did = %(actor_did)s
            OR l.member_did = any(%(targets)s::text[])
            OR (%(lock_admins)s::boolean AND l.role = 'admin' AND l.left_at IS NULL)
        )
    ORDER BY l.member_did
    FOR NO KEY UPDATE
),

device AS (
    -- The actor's device, when the call names one, in the group; read by judged after
    -- its aggregate of the members rows, so locked after them.
    SELECT d.device_id
    FROM member_devices AS d
    WHERE
        d.convo_id = %(convo_id)s
        AND d.member_did = %(actor_did)s
        AND d.device_id = %(device_id)s::uuid
        AND d.left_at IS NULL
    FOR SHARE
),

judged AS (
    -- The actor's rights: an aggregate reads every locked row, so all are locked before
    -- the conversation row is (an EXISTS could stop at the first).
    SELECT
        coalesce(bool_or(a.member_did = %(actor_did)s AND a.left_at IS NULL), FALSE)
            AS is_member,
        coalesce(
            bool_or(a.member_did = %(actor_did)s AND a.left_at IS NULL AND a.role = 'admin'),
            FALSE
        ) AS is_admin,
        -- A member who asked to leave sends nothing more but further requests (one
        -- remove proposal per device of theirs).
        %(message_type)s::text <> 'proposal'
        AND coalesce(
            bool_or(a.member_did = %(actor_did)s AND a.leave_requested_seq IS NOT NULL),
            FALSE
        ) AS is_leaving,
        %(device_id)s::uuid IS NULL OR EXISTS (SELECT 1 FROM device) AS in_group,
        cardinality(%(targets)s::text[]) > 0
        AND count(*) FILTER (WHERE a.member_did = any(%(targets)s::text[]) AND a.left_at IS NULL)
        = cardinality(%(targets)s::text[]) AS targets_active
    FROM locked AS a
),

earlier AS (
    -- A message stored before with this id, by whoever.
    SELECT
        e.convo_id,
        e.seq,
        e.id,
        e.sender_did,
        e.message_type,
        e.epoch,
        e.ciphertext,
        e.sent_at,
        e.expires_at
    FROM messages AS e
    WHERE e.convo_id = %(convo_id)s AND e.id = %(id)s
),

replay AS (
    -- Whether that message is this one sent again by its sender.
    SELECT
        coalesce(bool_or(
            r.sender_did = %(actor_did)s
            AND r.message_type = %(message_type)s::text
            AND r.epoch = %(epoch)s
            AND r.ciphertext = %(ciphertext)s
        ), FALSE) AS matches
    FROM earlier AS r
),

bump AS (
    -- The next seq, and for a commit the next epoch. The UPDATE locks the conversation
    -- row after the members rows (it joins the aggregate) and tests the epoch on the
    -- row's newest version, so of concurrent commits for one epoch exactly one matches.
    UPDATE conversations AS c
    SET
        last_seq = c.last_seq + 1,
        epoch = c.epoch + (%(message_type)s::text = 'commit')::int,
        updated_at = now()
    FROM judged
    WHERE
        c.id = %(convo_id)s
        AND judged.is_member
        AND judged.in_group
        AND NOT judged.is_leaving
        AND (judged.is_admin OR NOT %(admin_only)s::boolean OR judged.targets_active)
        AND NOT EXISTS (SELECT 1 FROM earlier)
        AND c.epoch - %(epoch)s BETWEEN 0 AND %(epoch_window)s
    RETURNING c.id, c.last_seq
),

verdict AS (
    -- Why nothing was sequenced, when nothing was: the refusals in their order. The
    -- membership is the locked rows'; the epoch the snapshot's, and only a refusal on
    -- the epoch is left when the rest passed.
    SELECT
        CASE
            WHEN EXISTS (SELECT 1 FROM bump) THEN 'sequenced'
            WHEN convo.id IS NULL THEN 'not_found'
            WHEN NOT judged.is_member THEN 'not_a_member'
            WHEN NOT judged.in_group THEN 'not_in_group'
            WHEN judged.is_leaving AND NOT replay.matches THEN 'leaving'
            WHEN
                %(admin_only)s::boolean AND NOT judged.is_admin AND NOT judged.targets_active
                THEN 'not_an_admin'
            WHEN replay.matches THEN 'replayed'
            WHEN EXISTS (SELECT 1 FROM earlier) THEN 'id_taken'
            ELSE 'epoch_conflict'
        END AS outcome
    FROM judged
    CROSS JOIN replay
    LEFT JOIN conversations AS convo ON convo.id = %(convo_id)s
),

sent AS (
    -- The message, stored at its own epoch; the notification is queued by the insert
    -- itself, once per stored row.
    INSERT INTO messages (
        convo_id, seq, id, sender_did, message_type, epoch, ciphertext, expires_at
    )
    SELECT
        bump.id AS convo_id,
        bump.last_seq AS seq,
        %(id)s::uuid AS id,
        %(actor_did)s::text AS sender_did,
        %(message_type)s::text AS message_type,
        %(epoch)s::bigint AS epoch,
        %(ciphertext)s::bytea AS ciphertext,
        %(expires_at)s::timestamptz AS expires_at
    FROM bump
    RETURNING
        convo_id,
        seq,
        id,
        sender_did,
        message_type,
        epoch,
        ciphertext,
        sent_at,
        expires_at,
        pg_notify(%(channel)s, convo_id::text || ':' || seq || ':' || message_type) AS notified
),

marked AS (
    -- The actor has read what they sent.
    UPDATE members AS r
    SET last_read_seq = greatest(r.last_read_seq, sent.seq)
    FROM sent
    WHERE r.convo_id = sent.convo_id AND r.member_did = sent.sender_did
)

SELECT
    verdict.outcome,
    coalesce(sent.seq, earlier.seq) AS seq,
    coalesce(sent.sent_at, earlier.sent_at) AS sent_at,
    coalesce(sent.expires_at, earlier.expires_at) AS expires_at,
    (
        SELECT coalesce(array_agg(l.member_did::text ORDER BY l.member_did), '{}')
        FROM locked AS l
        WHERE l.member_did = any(%(targets)s::text[])
    ) AS locked_targets
FROM verdict
LEFT JOIN sent ON TRUE
LEFT JOIN earlier ON verdict.outcome = 'replayed';

-- name: epoch_after_conflict
-- The conversation's epoch as it is now, read by create_message, submit_commit and
-- add_members_with_commit after sequence_message refused on the epoch (its snapshot may
-- predate the commit that moved it).
-- Returns: the epoch; no row if the conversation was deleted since.
-- Locks: none.
-- Index: conversations_pkey.
SELECT c.epoch
FROM conversations AS c
WHERE c.id = %(convo_id)s;

-- name: get_roster_commit
-- What a roster commit changed, read by add_members_with_commit and
-- remove_members_with_commit when sequence_message found the same commit stored
-- before (a retry after a lost acknowledgement).
-- Returns: the row; none for a commit that changed no roster.
-- Locks: none.
-- Index: roster_commits_pkey.
SELECT
    r.members_joined,
    r.devices_joined,
    r.members_left,
    r.devices_left
FROM roster_commits AS r
WHERE r.convo_id = %(convo_id)s AND r.seq = %(seq)s;

-- name: get_message
-- One message by its id, when the actor (its device, when device_id is given) may read
-- it (readable_messages: within its read range, unexpired).
-- Returns: the message; no row for an unknown id, for a reader it is out of range of
-- (sent before the join, or after the commit that removed the reader), or when it has
-- expired: an expired message is gone even before maintenance deletes it.
-- Locks: none.
-- Index: messages_convo_id_id_key; members_pkey (the read range; a device named adds
-- one probe of its member device's primary key).
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
-- (NOT NULL columns of messages, read through readable_messages)
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM readable_messages(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid) AS m
WHERE m.id = %(id)s;

-- name: list_messages_forward
-- The messages the actor (its device, when device_id is given) may read
-- (readable_messages: within its read range, unexpired) after a seq, oldest first: a
-- keyset range on the primary key.
-- Returns: up to limit messages; none for a DID with no read range (its bound is NULL).
-- Locks: none.
-- Index: messages_pkey (the keyset range); members_pkey (the read range; a device
-- named adds one probe of its member device's primary key).
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
-- (NOT NULL columns of messages, read through readable_messages)
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM readable_messages(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid) AS m
WHERE m.seq > %(after_seq)s
ORDER BY m.seq
LIMIT %(limit)s;

-- name: list_messages_backward
-- The messages the actor (its device, when device_id is given) may read before a seq,
-- newest first.
-- Returns: up to limit messages; none for a DID with no read range.
-- Locks: none.
-- Index: messages_pkey (the keyset range); members_pkey (the read range; a device
-- named adds one probe of its member device's primary key).
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
-- (NOT NULL columns of messages, read through readable_messages)
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM readable_messages(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid) AS m
WHERE m.seq < %(before_seq)s
ORDER BY m.seq DESC
LIMIT %(limit)s;

-- name: list_messages_since
-- The messages the actor (its device, when device_id is given) may read from the first
-- one sent at or after a timestamp, oldest first, paged by seq (after_seq) so messages
-- with equal sent_at are neither lost nor repeated. sent_at never decreases as seq
-- grows, so the first seq at or after the timestamp starts the range.
-- Returns: up to limit messages; none for a DID with no read range, or when nothing was
-- sent at or after the timestamp.
-- Locks: none.
-- Index: messages_by_sent_at (the first seq at or after the timestamp), messages_pkey
-- (the range); members_pkey (the read range; a device named adds one probe of its
-- member device's primary key).
-- not null: convo_id, seq, id, sender_did, message_type, epoch, ciphertext, sent_at
-- (NOT NULL columns of messages, read through readable_messages)
SELECT
    m.convo_id,
    m.seq,
    m.id,
    m.sender_did,
    m.message_type,
    m.epoch,
    m.ciphertext,
    m.sent_at,
    m.expires_at
FROM readable_messages(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid) AS m
WHERE
    m.seq > %(after_seq)s
    AND m.seq >= (
        SELECT s.seq
        FROM messages AS s
        WHERE s.convo_id = %(convo_id)s AND s.sent_at >= %(since)s
        ORDER BY s.sent_at, s.seq
        LIMIT 1
    )
ORDER BY m.seq
LIMIT %(limit)s;

-- name: get_message_count
-- How many messages the actor (its device, when device_id is given) may read
-- (readable_messages).
-- Returns: one row, message_count, for a reader with a read range; no row for anyone
-- else.
-- Locks: none.
-- Index: members_pkey (the read range; a device named adds one probe of its member
-- device's primary key); messages_pkey (the count).
SELECT (
    SELECT count(*)
    FROM readable_messages(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid)
) AS message_count
FROM read_range(%(convo_id)s, %(actor_did)s, %(device_id)s::uuid);

-- name: delete_message
-- Deletes an application message, by its sender only, while an active member who can
-- still read it. Commits stay: they are the group's history.
-- Returns: no rows: the row count says whether a message went (access_of says why not).
-- Locks: the actor's members row first, FOR NO KEY UPDATE, as by every guarded write: a
-- removal either precedes the delete (refused) or waits for it; then the message row it
-- deletes.
-- Index: messages_convo_id_id_key; members_pkey or members_active_by_member (the
-- membership look-up).
WITH locked AS (
    -- The actor's members row, when active, locked.
    SELECT a.joined_seq
    FROM members AS a
    WHERE
        a.convo_id = %(convo_id)s
        AND a.member_did = %(actor_did)s
        AND a.left_at IS NULL
    FOR NO KEY UPDATE
)

DELETE FROM messages AS m
WHERE
    m.convo_id = %(convo_id)s
    AND m.id = %(id)s
    AND m.sender_did = %(actor_did)s
    AND m.message_type = 'app'
    AND m.seq > (SELECT locked.joined_seq FROM locked);

-- name: delete_expired_messages
-- One batch of messages past their expiry. Each batch is its own short statement, so
-- maintenance never holds many locks for long.
-- Returns: no rows: the row count is the batch's.
-- Locks: up to batch_size expired messages, FOR UPDATE SKIP LOCKED: rows another
-- transaction holds are skipped, not waited for.
-- Index: messages_expiring (the batch is found on it), messages_pkey (the delete).
WITH doomed AS (
    -- One batch of expired messages, soonest expiry first, unless held.
    SELECT
        x.convo_id,
        x.seq
    FROM messages AS x
    WHERE x.expires_at <= now()
    ORDER BY x.expires_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
)

DELETE FROM messages AS m
USING doomed
WHERE m.convo_id = doomed.convo_id AND m.seq = doomed.seq;

-- name: listen_messages
-- Subscribes a dedicated connection to the notifications every sequenced write queues
-- (sequence_message): payload 'convo_id:seq:message_type'. LISTEN takes no bind
-- parameters, so the channel is fixed here.
-- Returns: nothing.
-- Locks: none.
-- Index: none (not planned).
LISTEN catbird_messages;
